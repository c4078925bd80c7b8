"""The error taxonomy: one root, split into permanent and transient.

Retry decisions dispatch on these types only, never on message text. The light
producer side defines the root so both sides share it without importing ZenML.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a request, at a dotted path such as `steps.train_model.parameters.n_estimators`."""

    path: str
    problem: str

    def as_dict(self) -> dict[str, str]:
        """JSON form used in request state and dead letters."""
        return {"path": self.path, "problem": self.problem}

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}" if self.path else self.problem


class TriggerError(Exception):
    """A trigger request could not be handled."""

    def __init__(self, message: str | None = None, *, details: list[Problem] | None = None) -> None:
        self.details: list[Problem] = list(details or [])
        super().__init__(message or self._default_message())

    def _default_message(self) -> str:
        doc = (type(self).__doc__ or "").strip().splitlines()
        head = doc[0] if doc else type(self).__name__
        if self.details:
            return head.rstrip(".") + ": " + "; ".join(str(d) for d in self.details)
        return head

    @property
    def message(self) -> str:
        """The human-readable message."""
        return str(self)

    def as_dict(self) -> dict[str, Any]:
        """`{"type", "message", "details"}` as stored in request state."""
        return {
            "type": type(self).__name__,
            "message": self.message,
            "details": [d.as_dict() for d in self.details],
        }


class PermanentError(TriggerError):
    """The request cannot succeed as it is; retrying would not help."""


class TransientError(TriggerError):
    """A dependency was unavailable; the same request may succeed later."""


class InvalidRequest(PermanentError):
    """The request is invalid and was not run."""


class MalformedRequest(InvalidRequest):
    """The message is not a valid trigger request."""

    def __init__(
        self,
        message: str | None = None,
        *,
        raw: bytes | str = b"",
        details: list[Problem] | None = None,
    ) -> None:
        self.raw = raw
        super().__init__(message, details=details)


class PayloadTooLarge(InvalidRequest):
    """The request is larger than the configured maximum payload size."""


class Unauthorized(InvalidRequest):
    """The request's signature does not let it run."""


class Forbidden(InvalidRequest):
    """The request's key may not trigger this."""


class ProducerError(TriggerError):
    """A producer could not hand the request over."""


class EnqueueError(ProducerError, TransientError):
    """The request could not be enqueued: the broker did not answer in time."""


class EnqueueNotReplicated(EnqueueError):
    """The request reached the primary, but fewer replicas than required acknowledged it in time."""


class UnknownRequest(ProducerError):
    """No state is recorded under that request id (never sent, or expired)."""


class NotCancellable(ProducerError):
    """The request cannot be cancelled: it ended already, or its run cannot be stopped from here."""
