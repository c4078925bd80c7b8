"""Authorization: who sent a request, and may that key trigger it? Asked right after decoding, before anything else.

With `TRIGGER_REQUIRE_SIGNED=true`, a request runs only when its `signature` keyword is an
HMAC by a key of the keys file over the exact text that arrived, made within
`TRIGGER_SIGNATURE_MAX_AGE` by a key that has not expired, for a pipeline or template and
parameter paths within that key's scopes; write access to Redis alone then runs nothing.
Without it, a signed request is still checked when a keys file is configured (so a rollout
can sign first and require later), and an unsigned one goes on.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

from producers.contract import TriggerRequest
from producers.credentials import Key, Keyring, KeysFileError, load_keyring, paths_set
from producers.errors import Forbidden, InvalidRequest, Problem, Unauthorized
from producers.signing import Signature, SignatureFormatError, parse_signature, verify
from worker.logs import get_logger
from worker.settings import WorkerSettings

MAX_CLOCK_SKEW = 300
"""Seconds a signature may be dated ahead of the worker's clock (producers' clocks drift)."""

Stamp = tuple[int, int, int] | None


class KeysFile:
    """The keys file, read again when it changes (one `stat` a second at most): a rotation or a revocation
    takes effect without restarting workers. A change that does not load keeps the keys in force, and says so."""

    def __init__(self, path: Path, interval: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.path, self.interval, self.clock = path, interval, clock
        self.stamp = _stamp(path)
        self.keyring = load_keyring(path)
        self.checked = clock()

    def current(self) -> Keyring:
        """The keys in force now."""
        if self.clock() - self.checked >= self.interval:
            self.checked = self.clock()
            stamp = _stamp(self.path)
            if stamp != self.stamp:
                self.stamp = stamp
                self._reload()
        return self.keyring

    def _reload(self) -> None:
        try:
            self.keyring = load_keyring(self.path)
        except KeysFileError as exc:
            get_logger().error("trigger.keys_reload_failed", error=str(exc), keys=len(self.keyring))
            return
        get_logger().info("trigger.keys_reloaded", path=str(self.path), keys=len(self.keyring))


@lru_cache(maxsize=8)
def shared_keys_file(path: Path) -> KeysFile:
    """One `KeysFile` per path and process tree: prefork children inherit the main process's, with its last
    good keys, so a child started after a bad edit still verifies (a load error is not cached)."""
    return KeysFile(path)


class Authorization:
    """Refuses what a request's signature and its key's scopes do not allow (`Unauthorized`, `Forbidden`)."""

    def __init__(
        self,
        keys: KeysFile | None = None,
        required: bool = False,
        max_age: float = 24 * 3600,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.keys, self.required, self.max_age, self.clock = keys, required, max_age, clock

    @classmethod
    def from_settings(cls, settings: WorkerSettings) -> Authorization:
        """Read the keys file now, so a bad one stops the worker at start (`KeysFileError`)."""
        keys = shared_keys_file(settings.keys_file) if settings.keys_file is not None else None
        return cls(keys, settings.require_signed, settings.signature_max_age)

    def check(self, request: TriggerRequest, raw: bytes | str, signature: str | None) -> None:
        """Raise `Unauthorized` or `Forbidden` unless `signature` over `raw` lets `request` go on."""
        if signature is None:
            if self.required:
                raise _unauthorized("the request is not signed, and this worker requires signed requests")
            return
        if self.keys is None:
            return  # signing is optional here and there are no keys to verify with
        key = self._verified(self.keys.current(), raw, _parsed(signature))
        _check_scope(key, request)

    def permits(self, request: TriggerRequest, raw: bytes | str, signature: str | None) -> bool:
        """`check` as a yes/no, for the early end on arrival (which leaves any refusal to the task)."""
        try:
            self.check(request, raw, signature)
        except InvalidRequest:
            return False
        return True

    def _verified(self, keyring: Keyring, raw: bytes | str, signature: Signature) -> Key:
        """The key that made `signature` over `raw`, valid now; `Unauthorized` naming the key otherwise."""
        key = keyring.get(signature.key_id)
        if key is None:
            raise _unauthorized(f"key {signature.key_id!r} is not in the keys file")
        if not verify(raw, signature, key.secret_bytes()):
            raise _unauthorized(f"the signature by key {key.id!r} does not match the request (wrong secret or altered)")
        now = self.clock()
        if key.expired(datetime.fromtimestamp(now, timezone.utc)) and key.expires_at is not None:
            raise _unauthorized(f"key {key.id!r} expired at {key.expires_at.isoformat()}")
        self._check_age(key, signature.timestamp, now)
        return key

    def _check_age(self, key: Key, timestamp: int, now: float) -> None:
        age = now - timestamp
        if age > self.max_age:
            raise _unauthorized(
                f"the signature by key {key.id!r} is {age:.0f}s old, over the {self.max_age:g}s limit "
                "(TRIGGER_SIGNATURE_MAX_AGE)"
            )
        if -age > MAX_CLOCK_SKEW:
            raise _unauthorized(f"the signature by key {key.id!r} is dated {-age:.0f}s ahead of the worker's clock")


def _parsed(signature: str) -> Signature:
    try:
        return parse_signature(signature)
    except SignatureFormatError as exc:
        raise _unauthorized(str(exc)) from None


def _check_scope(key: Key, request: TriggerRequest) -> None:
    """`Forbidden` with a problem per refused target or parameter path, each naming the key."""
    problems = []
    target = key.target_problem(request)
    if target is not None:
        problems.append(Problem("template" if request.template is not None else "pipeline_name", target))
    problems += [Problem(path, f"key {key.id!r} may not set it") for path in key.refused_paths(paths_set(request))]
    if problems:
        raise Forbidden(details=problems)


def _unauthorized(problem: str) -> Unauthorized:
    return Unauthorized(details=[Problem("signature", problem)])


def _stamp(path: Path) -> Stamp:
    """What changes when the file is edited or swapped (a Kubernetes secret mount swaps a symlink)."""
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_mtime_ns, found.st_size, found.st_ino
