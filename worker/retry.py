"""Retry policy as a small pure object: (error, attempt) -> delay in seconds, or give up."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from producers.errors import TransientError
from worker.settings import WorkerSettings


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with equal jitter, capped, for transient errors only."""

    max_attempts: int = 5
    base_delay: float = 2.0
    max_delay: float = 300.0
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    @classmethod
    def for_pipeline(cls, settings: WorkerSettings, pipeline: str | None) -> RetryPolicy:
        """The global policy with any per-pipeline override applied."""
        override = settings.retry_overrides.get(pipeline or "")
        pick = lambda mine, default: default if mine is None else mine  # noqa: E731
        return cls(
            max_attempts=pick(override and override.max_attempts, settings.max_attempts),
            base_delay=pick(override and override.base_delay, settings.retry_base_delay),
            max_delay=pick(override and override.max_delay, settings.retry_max_delay),
        )

    def delay(self, error: BaseException, attempt: int) -> float | None:
        """Seconds to wait before attempt `attempt + 1`, or None to give up."""
        if not isinstance(error, TransientError) or attempt >= self.max_attempts:
            return None
        ceiling = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return ceiling / 2 + self.rng.uniform(0, ceiling / 2)
