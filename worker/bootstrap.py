"""`python -m worker.bootstrap`: the local stack's `init` service, run once per `docker compose up`.

It waits for the ZenML server, signs in as the admin (`ZENML_STORE_USERNAME` / `ZENML_STORE_PASSWORD`,
the server's auto-activated default user), makes sure a service account for the workers exists,
and writes an API key of it to a file on a volume the workers mount read-only. Workers then talk to
the server with that key (`ZENML_STORE_API_KEY`), never with the admin password, and no secret is
written into the repository.

Running it again changes nothing while the key file and the key on the server are both there.
ZenML shows a key's value only once, so a lost file means the key is rotated (the old value stops
working) and the new value written; a key missing on the server (a fresh database) is created.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class BootstrapSettings(BaseSettings):
    """Where the server is, what to call the workers' account, and where their key goes."""

    model_config = SettingsConfigDict(env_prefix="TRIGGER_BOOTSTRAP_", extra="ignore")

    server_url: str = Field(
        default="http://zenml:8080",
        validation_alias="ZENML_STORE_URL",
        description="The ZenML server; the same variable ZenML's client reads.",
    )
    api_key_file: Path = Field(
        default=Path("/var/lib/trigger/credentials/zenml-api-key"),
        description="Where the workers' API key is written (mode 0600, on a volume they mount).",
    )
    service_account: str = Field(default="trigger-workers", description="The workers' service account.")
    api_key_name: str = Field(default="trigger-workers", description="The name of its API key.")
    wait_timeout: float = Field(default=300.0, gt=0, description="Seconds to wait for the server's /health.")


class Action(str, Enum):
    """What the bootstrap does about the workers' API key."""

    KEEP = "keep"
    CREATE = "create"
    ROTATE = "rotate"


def plan(key_file_present: bool, key_on_server: bool) -> Action:
    """Keep a key both sides know; rotate one whose value is lost (shown only once); create a missing one."""
    if not key_on_server:
        return Action.CREATE
    return Action.KEEP if key_file_present else Action.ROTATE


def key_file_present(path: Path) -> bool:
    """True when the file holds a key (an empty file from an interrupted write does not count)."""
    try:
        return bool(path.read_text().strip())
    except OSError:
        return False


def write_key_file(path: Path, key: str) -> None:
    """Write `key` readable by its owner only, atomically: a reader sees the old key or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(key + "\n")
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def server_healthy(url: str, timeout: float = 5.0) -> bool:
    """True when `url`/health answers 200; a server still starting (refused, 5xx) is False, not an error."""
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def wait_until(
    probe: Callable[[], bool],
    timeout: float,
    interval: float = 2.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Call `probe` until it is True or `timeout` seconds passed; the result of the last call."""
    deadline = clock() + timeout
    while not probe():
        if clock() >= deadline:
            return False
        sleep(interval)
    return True


def ensure_service_account(client: Any, name: str) -> None:
    """The workers' service account, created on the first run."""
    try:
        client.get_service_account(name, allow_name_prefix_match=False)
    except KeyError:
        client.create_service_account(name=name, description="Celery workers of zenml-queue-trigger")


def key_on_server(client: Any, account: str, key_name: str) -> bool:
    """True when the service account already has an API key of that name."""
    return bool(client.list_api_keys(account, name=key_name).items)


def issue_key(client: Any, action: Action, account: str, key_name: str) -> str:
    """A fresh key value: created, or rotated with no grace period (the old value is lost anyway)."""
    if action is Action.CREATE:
        return client.create_api_key(account, name=key_name, description="written by worker/bootstrap.py").key
    return client.rotate_api_key(account, key_name, retain_period_minutes=0).key


def bootstrap(client: Any, settings: BootstrapSettings) -> Action:
    """Make the account and key exist and the key file hold a working value; what was done."""
    ensure_service_account(client, settings.service_account)
    action = plan(
        key_file_present(settings.api_key_file),
        key_on_server(client, settings.service_account, settings.api_key_name),
    )
    if action is not Action.KEEP:
        write_key_file(
            settings.api_key_file, issue_key(client, action, settings.service_account, settings.api_key_name)
        )
    return action


def main() -> int:
    """Wait for the server, then bootstrap it; 0 on success, 1 when the server never answered."""
    settings = BootstrapSettings()
    if not wait_until(lambda: server_healthy(settings.server_url), settings.wait_timeout):
        print(
            f"init: no healthy ZenML server at {settings.server_url} after {settings.wait_timeout:g}s", file=sys.stderr
        )
        return 1
    from zenml.client import Client

    action = bootstrap(Client(), settings)
    print(f"init: service account {settings.service_account!r}, API key {action.value} ({settings.api_key_file})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
