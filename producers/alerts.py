"""Publishing drift alerts: a drifted report becomes one coalesced trigger request.

Light on purpose (no pandas import): a monitor that computes drift elsewhere can publish
any object with `drifted` and `summary()`. Every alert for a model carries the coalescing
key `drift:<model>`, so a monitor can fire freely: a burst runs once, on the newest data,
and drift seen during a retrain runs once more after it, never beside it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from producers.client import TriggerClient

SOURCE = "drift-monitor"


class Report(Protocol):
    """What the publisher needs of a drift report (`producers.drift.DriftReport` is one)."""

    @property
    def drifted(self) -> bool:
        """Whether any feature drifted."""
        ...

    def summary(self) -> dict[str, Any]:
        """A compact, JSON-able account of the drift, small enough for a request's metadata."""
        ...


def coalesce_key(model: str) -> str:
    """The coalescing key every alert for `model` shares."""
    return f"drift:{model}"


class DriftPublisher:
    """Enqueues a retrain when, and only when, a report says drift."""

    def __init__(self, client: TriggerClient) -> None:
        self.client = client

    def publish(
        self,
        report: Report,
        *,
        model: str,
        pipeline: str | None = None,
        template: str | None = None,
        parameters: Mapping[str, Any] | None = None,
        steps: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> str | None:
        """The request id of the alert, or None when the report shows no drift."""
        if not report.drifted:
            return None
        return self.client.trigger(
            pipeline,
            template=template,
            parameters=parameters,
            steps=steps,
            idempotency_key=idempotency_key,
            coalesce_key=coalesce_key(model),
            source=SOURCE,
            metadata={"model": model, "drift": report.summary()},
        )
