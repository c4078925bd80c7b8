"""Pipelines used only by the integration tests: slow, failing and flaky runs."""

from __future__ import annotations

import time

from zenml import pipeline, step


@step
def wait_a_while(seconds: float = 1.0) -> dict[str, float]:
    """Sleep, so a test can kill the worker mid-run."""
    time.sleep(seconds)
    return {"slept": seconds}


@pipeline(enable_cache=False)
def slow_pipeline(seconds: float = 1.0) -> None:
    """One step that takes `seconds`."""
    wait_a_while(seconds)


@step
def explode(reason: str = "boom") -> None:
    """Fail the way a buggy step fails."""
    raise ValueError(reason)


@pipeline(enable_cache=False)
def failing_pipeline(reason: str = "boom") -> None:
    """A pipeline whose only step always raises."""
    explode(reason)


@step
def call_unreachable_service() -> None:
    """Fail the way a step fails when a service is down."""
    raise ConnectionError("feature store at 127.0.0.1:1 refused the connection")


@pipeline(enable_cache=False)
def flaky_pipeline() -> None:
    """A pipeline whose step always hits a transient error."""
    call_unreachable_service()


TEST_PIPELINES = ",".join(
    [
        "pipelines.training:training_pipeline",
        "tests.support.pipelines:slow_pipeline",
        "tests.support.pipelines:failing_pipeline",
        "tests.support.pipelines:flaky_pipeline",
    ]
)
