"""Who is calling the gateway, and may they trigger this: keys from the keys file, three ways to show one.

- `Authorization: Bearer <secret>` for services, and `X-API-Key: <secret>` for the tutorial's callers;
- `X-Trigger-Signature: k=<key id>,t=<unix time>,v1=<hex>` for webhooks: HMAC-SHA256 over the key id,
  the time and the exact body (`producers.signing`), within five minutes, the scheme Stripe and
  ZenML Pro's webhooks use; the secret never travels.

A missing or bad credential is `Unauthorized` (401), a valid key outside its scope `Forbidden` (403).
Secrets are compared in constant time and never logged. Without a keys file (`TRIGGER_KEYS_FILE`) the
gateway is open, and says so at start.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from producers.contract import TriggerRequest
from producers.credentials import Key, Keyring, load_keyring, paths_set
from producers.errors import Forbidden, Problem, Unauthorized
from producers.settings import ProducerSettings
from producers.signing import SignatureFormatError, parse_signature, verify
from producers.state import RequestState

SIGNATURE_HEADER = "x-trigger-signature"
TOLERANCE_S = 300
"""How far a webhook signature's time may be from the gateway's clock, either way."""


class GatewaySettings(ProducerSettings):
    """The producer settings plus the keys file the gateway authenticates callers with."""

    model_config = SettingsConfigDict(env_prefix="TRIGGER_", extra="ignore", hide_input_in_errors=True)
    keys_file: Path | None = Field(default=None, description="Keys that may call the gateway (open without one).")


@dataclass(frozen=True)
class Caller:
    """Who is calling: a key of the keys file, or nobody in particular on an open gateway."""

    key: Key | None = None
    signature: str | None = None
    """The webhook signature that proved it, which may be used once (the gateway remembers it)."""

    @property
    def id(self) -> str:
        return self.key.id if self.key is not None else "anonymous"

    def signing_key(self) -> tuple[str, bytes] | None:
        """What the gateway signs the caller's requests with, so the worker checks the same scope again."""
        return (self.key.id, self.key.secret_bytes()[0]) if self.key is not None else None


class GatewayAuth:
    """Authenticates a call from its headers and body, and checks a request against the caller's scope."""

    def __init__(self, keyring: Keyring | None, clock: Callable[[], float] = time.time) -> None:
        self.keyring, self.clock = keyring, clock

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> GatewayAuth:
        """Keys from `settings.keys_file` (`KeysFileError` for a bad file), or an open gateway."""
        return cls(load_keyring(settings.keys_file) if settings.keys_file is not None else None)

    @property
    def open(self) -> bool:
        return self.keyring is None

    def authenticate(self, headers: Mapping[str, str], body: bytes) -> Caller:
        """The caller the headers prove, or `Unauthorized` saying what is missing or wrong (never a secret)."""
        if self.keyring is None:
            return Caller()
        if SIGNATURE_HEADER in headers:
            return Caller(self._signed(headers[SIGNATURE_HEADER], body), headers[SIGNATURE_HEADER])
        secret = bearer(headers.get("authorization")) or headers.get("x-api-key")
        if not secret:
            raise Unauthorized(details=[Problem("headers", "send Authorization: Bearer <key>, or sign the body")])
        return Caller(self._usable(self._holder(secret)))

    def authorize(self, caller: Caller, request: TriggerRequest) -> None:
        """`Forbidden` unless the caller's key may trigger this pipeline or template with these parameters."""
        key = caller.key
        if key is None:
            return
        problem = key.target_problem(request)
        refused = key.refused_paths(paths_set(request))
        problems = [Problem("template" if request.template else "pipeline_name", problem)] if problem else []
        problems += [Problem(path, f"key {key.id!r} may not set it") for path in refused]
        if problems:
            raise Forbidden(details=problems)

    def may_read(self, caller: Caller, state: RequestState) -> bool:
        """Whether the caller's key may trigger what `state` is about (so it may see it); any caller on an open
        gateway. A state naming neither pipeline nor template (garbage recorded) is for wildcard keys only."""
        key = caller.key
        if key is None:
            return True
        if state.template is None and state.pipeline_name is None:
            return "*" in key.pipelines
        probe = TriggerRequest(
            pipeline_name=state.pipeline_name if state.template is None else None, template=state.template
        )
        return key.target_problem(probe) is None

    def _holder(self, secret: str) -> Key | None:
        """The key one of whose secrets is `secret`; every secret is compared, in constant time."""
        offered, found = secret.encode("utf-8", "surrogatepass"), None
        for key in self.keyring.keys.values() if self.keyring else ():
            for known in key.secret_bytes():
                if hmac.compare_digest(offered, known):
                    found = key
        return found

    def _signed(self, header: str, body: bytes) -> Key | None:
        try:
            signature = parse_signature(header)
        except SignatureFormatError:
            raise Unauthorized(
                details=[Problem(SIGNATURE_HEADER, "expected k=<key id>,t=<unix time>,v1=<hex>")]
            ) from None
        if abs(self.clock() - signature.timestamp) > TOLERANCE_S:
            raise Unauthorized(details=[Problem(SIGNATURE_HEADER, f"its time is over {TOLERANCE_S}s from now")])
        key = self.keyring.get(signature.key_id) if self.keyring else None
        if key is None or not verify(body, signature, key.secret_bytes()):
            raise Unauthorized(details=[Problem(SIGNATURE_HEADER, "does not match the body for any known key")])
        return self._usable(key)

    def _usable(self, key: Key | None) -> Key:
        if key is None:
            raise Unauthorized(details=[Problem("headers", "the key is not known")])
        if key.expired(datetime.fromtimestamp(self.clock(), timezone.utc)):
            raise Unauthorized(details=[Problem("headers", f"key {key.id!r} has expired")])
        return key


def bearer(value: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header."""
    scheme, _, token = (value or "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None
