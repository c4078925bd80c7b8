"""A published catalog as small as the format allows: one pipeline `p` with one integer parameter `n`."""

MINIMAL_CATALOG = {
    "catalog_version": 1,
    "content_hash": "sha256:x",
    "published_at": "2026-01-01T00:00:00Z",
    "stale_after": 1e12,
    "refresh_interval": 60,
    "queue": "zenml-triggers",
    "publisher": "host:1",
    "pipelines": [
        {"name": "p", "source": "m:p", "parameters": [{"name": "n", "type": "int", "json_schema": {"type": "integer"}}]}
    ],
}
