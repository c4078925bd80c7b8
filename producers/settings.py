"""Producer settings: one object, built at the edge from `TRIGGER_*` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from producers import keys
from producers.sentinel import SentinelAddress, is_sentinel_url, parse_sentinel_url
from producers.signing import KEY_ID_PATTERN


class ProducerSettings(BaseSettings):
    """What a producer needs: where Redis is, which queue, and how long it may wait."""

    model_config = SettingsConfigDict(env_prefix="TRIGGER_", extra="ignore", hide_input_in_errors=True)
    """Inputs stay out of error messages: one of them is a secret."""

    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        description="Redis used as broker and state store; `sentinel://h1:26379;sentinel://h2:26379` for Sentinel.",
    )
    redis_master_name: str | None = Field(
        default=None, min_length=1, description="With a sentinel:// URL: the name the sentinels monitor the primary by."
    )
    enqueue_min_replicas: int = Field(
        default=0, ge=0, description="Replicas that must acknowledge an enqueue (Redis WAIT) before it returns."
    )
    queue: str = Field(default=keys.DEFAULT_QUEUE, description="Celery queue the requests go onto.")
    enqueue_timeout: float = Field(default=0.5, gt=0, description="Seconds an enqueue may take before it fails.")
    connect_timeout: float = Field(default=0.5, gt=0, description="Seconds to wait for a TCP connection to Redis.")
    state_ttl: int = Field(
        default=7 * 24 * 3600, gt=0, description="Seconds a request's state is kept after its last change."
    )
    max_payload_bytes: int = Field(default=64 * 1024, gt=0, description="Largest encoded request accepted.")
    key_id: str | None = Field(
        default=None, pattern=rf"^{KEY_ID_PATTERN}$", description="The key requests are signed with (keys file id)."
    )
    key_secret: SecretStr | None = Field(default=None, description="That key's secret; never logged.")
    log_format: Literal["auto", "json", "console"] = Field(
        default="auto", description="json: one JSON object a line; console: readable; auto: json unless a terminal."
    )
    log_level: str = Field(default="INFO", description="Lowest level logged, ours and every library's.")
    schedules_file: Path | None = Field(
        default=None, description="YAML schedules file that `trigger beat` enqueues from (see producers.schedules)."
    )

    @model_validator(mode="after")
    def _key_whole(self) -> ProducerSettings:
        if (self.key_id is None) != (self.key_secret is None):
            raise ValueError("key_id and key_secret are set together (TRIGGER_KEY_ID, TRIGGER_KEY_SECRET), or neither")
        return self

    @model_validator(mode="after")
    def _redis_address_readable(self) -> ProducerSettings:
        self.sentinel()  # a malformed sentinel URL fails here, at the edge, not at the first connection
        return self

    def sentinel(self) -> SentinelAddress | None:
        """The sentinels and master to connect through, or None when the URL names one Redis server."""
        if not is_sentinel_url(self.redis_url):
            return None
        return parse_sentinel_url(self.redis_url, self.redis_master_name)

    def signing_key(self) -> tuple[str, bytes] | None:
        """(key id, secret) to sign requests with, or None when this producer does not sign."""
        if self.key_id is None or self.key_secret is None:
            return None
        return self.key_id, self.key_secret.get_secret_value().encode()


def redacted_url(url: str) -> str:
    """`url` with any password replaced, safe for logs and error messages (each part of a sentinel URL too)."""
    return ";".join(_redacted(part) for part in url.split(";"))


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))
