"""Worker settings: one object, built once at the edge (`create_app(settings)`), passed down."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import NoDecode

from pipelines.registry import BUNDLED_PIPELINES
from producers.settings import ProducerSettings
from worker.limits import checked_limits


class RetryOverride(BaseModel):
    """Per-pipeline retry limits; unset fields fall back to the global ones."""

    max_attempts: int | None = Field(default=None, ge=1)
    base_delay: float | None = Field(default=None, ge=0)
    max_delay: float | None = Field(default=None, ge=0)


class WorkerSettings(ProducerSettings):
    """Everything the worker reads from `TRIGGER_*` variables."""

    pipelines: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(BUNDLED_PIPELINES),
        description="Registered pipelines as `module:attribute`, comma-separated.",
    )
    concurrency: int = Field(default=1, ge=1, description="Pipeline runs in parallel per worker.")
    concurrency_limits: dict[str, int] = Field(
        default_factory=dict, description='JSON: per pipeline or "template:NAME", runs at once across all workers.'
    )

    max_attempts: int = Field(default=5, ge=1, description="Attempts before a transient failure is dead-lettered.")
    retry_base_delay: float = Field(
        default=2.0, ge=0, description="First retry delay in seconds; doubles each attempt."
    )
    retry_max_delay: float = Field(default=300.0, ge=0, description="Cap on one retry delay in seconds.")
    retry_overrides: dict[str, RetryOverride] = Field(
        default_factory=dict, description="JSON: {pipeline: {max_attempts, base_delay, max_delay}}."
    )

    dedup_window: int = Field(default=24 * 3600, gt=0, description="Seconds an idempotency key stays claimed.")
    dead_letter_max_size: int = Field(default=10_000, gt=0)
    dead_letter_max_age: int = Field(default=14 * 24 * 3600, gt=0, description="Seconds a dead letter is kept.")
    dead_letter_max_bytes: int = Field(
        default=256 * 1024 * 1024, gt=0, description="Total bytes of dead letters kept; the oldest go first."
    )
    dead_letter_payload_prefix: int = Field(
        default=4096,
        ge=0,
        description="Bytes kept of a payload over max_payload_bytes (plus its size and SHA-256).",
    )

    run_timeout: float = Field(default=3600.0, gt=0, description="Seconds a run may take before it is stopped.")
    run_timeouts: dict[str, float] = Field(
        default_factory=dict, description='JSON: per pipeline or "template:NAME", seconds.'
    )
    run_timeout_grace: float = Field(
        default=30.0, gt=0, description="Seconds past the largest run limit before the pool kills the child."
    )
    memory_limit_mb: int = Field(
        default=4096, ge=0, description="Address-space ceiling per pool child in MiB (0: none)."
    )
    data_root: Path | None = Field(
        default=None, description="Local data_url paths must resolve to regular files under this directory."
    )

    soft_shutdown_timeout: float = Field(
        default=10.0,
        ge=0,
        description="Seconds a cold shutdown (SIGQUIT; SIGTERM in the image) lets running requests go on "
        "before they are stopped and their messages put back on the queue (0: stop them at once).",
    )
    remote_control: bool = Field(
        default=True, description="Answer `celery -A worker status`, `inspect` and `control` (and Flower)."
    )
    task_events: bool = Field(default=False, description="Send Celery's task events (Flower's task pages need them).")

    lease_timeout: int = Field(
        default=60, ge=5, description="Seconds without a heartbeat before a running request is recovered."
    )
    heartbeat_interval: float = Field(
        default=10.0, gt=0, description="Seconds between lease heartbeats; keep well under lease_timeout."
    )

    step_interval: float = Field(
        default=5.0, ge=0, description="Seconds between looks at the ZenML step a running request is in (0: none)."
    )

    lost_after: float = Field(
        default=300.0,
        gt=0,
        description="Seconds a queued request's message may be neither in the queue nor unacked before it is resent.",
    )
    sweep_interval: float = Field(default=30.0, gt=0, description="Seconds between sweeps for messages lost in flight.")

    catalog_interval: float = Field(
        default=60.0,
        gt=0,
        description="Seconds between publications of the catalog producers check against; stale after ten.",
    )

    wait_for_server_runs: bool = Field(default=True, description="Follow template runs on a ZenML server to their end.")
    server_poll_interval: float = Field(default=5.0, gt=0, description="Seconds between status polls of a server run.")

    require_signed: bool = Field(
        default=False, description="Run only requests signed by a key of keys_file, within that key's scopes."
    )
    keys_file: Path | None = Field(
        default=None, description="YAML keys file: ids, secrets, scopes (see producers.credentials)."
    )
    signature_max_age: int = Field(
        default=24 * 3600, gt=0, description="Seconds a signature stays valid; at most state_ttl (replay protection)."
    )

    metrics_port: int = Field(
        default=9808, ge=0, le=65535, description="Port the main process serves Prometheus metrics on (0: off)."
    )
    metrics_host: str = Field(default="0.0.0.0", description="Interface the metrics port listens on.")

    redact_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: [
            "password",
            "passwd",
            "secret",
            "token",
            "api_key",
            "apikey",
            "credential",
            "private_key",
            "authorization",
        ],
        description="Parameter names containing any of these are logged as '***'.",
    )

    @model_validator(mode="after")
    def _state_outlives_claims(self) -> WorkerSettings:
        if self.state_ttl < self.dedup_window:
            raise ValueError(
                f"state_ttl ({self.state_ttl}s) must be at least dedup_window ({self.dedup_window}s), "
                "or a duplicate's duplicate_of would point at a request whose state has expired"
            )
        return self

    @model_validator(mode="after")
    def _heartbeat_under_lease(self) -> WorkerSettings:
        if self.heartbeat_interval * 2 > self.lease_timeout:
            raise ValueError(
                f"heartbeat_interval ({self.heartbeat_interval:g}s) must be at most half of "
                f"lease_timeout ({self.lease_timeout}s), or live runs would lose their lease"
            )
        return self

    @model_validator(mode="after")
    def _signatures_checkable(self) -> WorkerSettings:
        if self.require_signed and self.keys_file is None:
            raise ValueError("require_signed needs keys_file (TRIGGER_KEYS_FILE): the keys to verify signatures with")
        if self.keys_file is not None and self.signature_max_age > self.state_ttl:
            raise ValueError(
                f"signature_max_age ({self.signature_max_age}s) must be at most state_ttl ({self.state_ttl}s), "
                "or a copy of a request whose state expired would still verify and run again"
            )
        if self.keys_file is not None and self.signature_max_age < self.hard_time_limit():
            raise ValueError(
                f"signature_max_age ({self.signature_max_age}s) must be at least the hard run limit "
                f"({self.hard_time_limit():g}s), or a request waiting behind one run would be refused as too old"
            )
        return self

    def hard_time_limit(self) -> float:
        """The pool kills a child this long after its task started: the largest run limit plus the grace."""
        return max([self.run_timeout, *self.run_timeouts.values()]) + self.run_timeout_grace

    @field_validator("concurrency_limits", mode="before")
    @classmethod
    def _check_concurrency_limits(cls, value: Any) -> dict[str, int]:
        return checked_limits(value)

    @field_validator("pipelines", "redact_keys", mode="before")
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value
