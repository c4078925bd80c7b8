"""The retry policy: a pure (error, attempt) -> delay-or-give-up object."""

from __future__ import annotations

import random

import pytest

from producers.errors import InvalidRequest, TransientError
from worker.errors import InvalidParameters, PipelineRunFailed, RunSubmissionFailed, StoreUnavailable
from worker.retry import RetryPolicy
from worker.settings import RetryOverride, WorkerSettings


class EdgeRandom(random.Random):
    """Jitter pinned to one end of its range."""

    def __init__(self, high: bool) -> None:
        super().__init__(0)
        self.high = high

    def uniform(self, a: float, b: float) -> float:
        return b if self.high else a


def policy(high: bool | None = None, **kwargs: float) -> RetryPolicy:
    rng = random.Random(1234) if high is None else EdgeRandom(high)
    return RetryPolicy(**{"max_attempts": 10, "base_delay": 2.0, "max_delay": 30.0, **kwargs}, rng=rng)


@pytest.mark.parametrize(
    "error",
    [InvalidRequest(), InvalidParameters(), PipelineRunFailed("boom"), ValueError("bug"), ConnectionError("down")],
)
def test_permanent_or_untyped_errors_are_never_retried(error: BaseException) -> None:
    assert policy().delay(error, 1) is None


@pytest.mark.parametrize("error", [StoreUnavailable(), RunSubmissionFailed(), TransientError()])
def test_transient_errors_are_retried(error: TransientError) -> None:
    assert policy().delay(error, 1) is not None


@pytest.mark.parametrize(("attempt", "ceiling"), [(1, 2.0), (2, 4.0), (3, 8.0), (4, 16.0), (5, 30.0), (9, 30.0)])
def test_exponential_ceiling_capped_at_max_delay(attempt: int, ceiling: float) -> None:
    assert policy(high=True).delay(StoreUnavailable(), attempt) == ceiling
    assert policy(high=False).delay(StoreUnavailable(), attempt) == ceiling / 2


def test_jittered_delays_stay_within_half_to_full_ceiling() -> None:
    retry = policy()
    for attempt in range(1, 10):
        ceiling = min(30.0, 2.0 * 2 ** (attempt - 1))
        delays = {retry.delay(StoreUnavailable(), attempt) for _ in range(50)}
        assert all(ceiling / 2 <= delay <= ceiling for delay in delays if delay is not None)
        assert len(delays) > 1, "jitter spreads retries"


def test_gives_up_at_max_attempts() -> None:
    retry = policy(max_attempts=3)
    assert retry.delay(StoreUnavailable(), 2) is not None
    assert retry.delay(StoreUnavailable(), 3) is None
    assert retry.delay(StoreUnavailable(), 4) is None


def test_single_attempt_never_retries() -> None:
    assert policy(max_attempts=1).delay(StoreUnavailable(), 1) is None


class TestForPipeline:
    def test_global_settings(self) -> None:
        settings = WorkerSettings(max_attempts=4, retry_base_delay=1.5, retry_max_delay=20)
        retry = RetryPolicy.for_pipeline(settings, "training_pipeline")
        assert (retry.max_attempts, retry.base_delay, retry.max_delay) == (4, 1.5, 20)
        assert RetryPolicy.for_pipeline(settings, None).max_attempts == 4

    def test_override_applies_to_its_pipeline_only(self) -> None:
        settings = WorkerSettings(
            max_attempts=4,
            retry_base_delay=1.5,
            retry_max_delay=20,
            retry_overrides={"training_pipeline": RetryOverride(max_attempts=2, base_delay=0)},
        )
        retry = RetryPolicy.for_pipeline(settings, "training_pipeline")
        assert (retry.max_attempts, retry.base_delay, retry.max_delay) == (2, 0, 20)
        assert RetryPolicy.for_pipeline(settings, "other").max_attempts == 4

    def test_override_from_environment_json(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("TRIGGER_MAX_ATTEMPTS", "6")
        monkeypatch.setenv("TRIGGER_RETRY_OVERRIDES", '{"training_pipeline": {"max_delay": 5}}')
        retry = RetryPolicy.for_pipeline(WorkerSettings(), "training_pipeline")
        assert (retry.max_attempts, retry.max_delay) == (6, 5)
        assert policy(high=True, max_delay=retry.max_delay).delay(StoreUnavailable(), 8) == 5
