"""Producer settings: one object, built at the edge from `TRIGGER_*` environment variables."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from producers import keys


class ProducerSettings(BaseSettings):
    """What a producer needs: where Redis is, which queue, and how long it may wait."""

    model_config = SettingsConfigDict(env_prefix="TRIGGER_", extra="ignore")

    redis_url: str = Field(default="redis://127.0.0.1:6379/0", description="Redis used as broker and state store.")
    queue: str = Field(default=keys.DEFAULT_QUEUE, description="Celery queue the requests go onto.")
    enqueue_timeout: float = Field(default=0.5, gt=0, description="Seconds an enqueue may take before it fails.")
    connect_timeout: float = Field(default=0.5, gt=0, description="Seconds to wait for a TCP connection to Redis.")
    state_ttl: int = Field(
        default=7 * 24 * 3600, gt=0, description="Seconds a request's state is kept after its last change."
    )
    max_payload_bytes: int = Field(default=64 * 1024, gt=0, description="Largest encoded request accepted.")


def redacted_url(url: str) -> str:
    """`url` with any password replaced, safe for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))
