"""Request signatures: HMAC-SHA256 over the exact request text a producer enqueues, its key id and a timestamp.

The signature travels beside the payload, as the task keyword `signature`
(`k=<key id>,t=<unix seconds>,v1=<64 hex digits>`), and covers the payload's exact bytes:
nothing is canonicalized, so what the worker verifies is byte for byte what was signed.
Standard library only (`hmac`), so a producer needs no extra dependency.
"""

from __future__ import annotations

import hmac
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass

SCHEME = "v1"
KEY_ID_PATTERN = r"[A-Za-z0-9_.:-]{1,128}"
"""A key id: the request id's character set, so it never needs quoting in a signature or a log line."""

SIGNATURE_SHAPE = re.compile(rf"k=({KEY_ID_PATTERN}),t=([0-9]{{1,12}}),{SCHEME}=([0-9a-f]{{64}})")
"""`k=<key id>,t=<unix seconds>,v1=<hex>`: what the transport lets through as the `signature` keyword."""


class SignatureFormatError(ValueError):
    """The text is not a signature of the shape `k=<key id>,t=<unix seconds>,v1=<64 hex digits>`."""


@dataclass(frozen=True)
class Signature:
    """A parsed signature: who signed, when (unix seconds, the signer's clock), and the MAC."""

    key_id: str
    timestamp: int
    digest: str

    def __str__(self) -> str:
        return f"k={self.key_id},t={self.timestamp},{SCHEME}={self.digest}"


def parse_signature(text: str) -> Signature:
    """The parts of a signature keyword; `SignatureFormatError` for anything else."""
    match = SIGNATURE_SHAPE.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise SignatureFormatError(SignatureFormatError.__doc__)
    return Signature(match.group(1), int(match.group(2)), match.group(3))


def sign(payload: str | bytes, key_id: str, secret: bytes, timestamp: int | None = None) -> str:
    """The signature keyword for `payload` (the exact text enqueued) by key `key_id`, dated `timestamp`."""
    when = int(time.time()) if timestamp is None else timestamp
    return str(Signature(key_id, when, _mac(secret, key_id, when, payload)))


def verify(payload: str | bytes, signature: Signature, secrets: Iterable[bytes]) -> bool:
    """Whether one of `secrets` (two during a rotation) made `signature` over `payload`, compared in constant time."""
    found = False
    for secret in secrets:  # every secret is tried, so the time taken says nothing about which one matched
        expected = _mac(secret, signature.key_id, signature.timestamp, payload)
        found |= hmac.compare_digest(expected, signature.digest)
    return found


def _mac(secret: bytes, key_id: str, timestamp: int, payload: str | bytes) -> str:
    """HMAC-SHA256 of `v1\\n<key id>\\n<timestamp>\\n<payload>`: the id and time are bound to the body."""
    body = payload.encode("utf-8", "surrogatepass") if isinstance(payload, str) else payload
    message = f"{SCHEME}\n{key_id}\n{timestamp}\n".encode() + body
    return hmac.digest(secret, message, "sha256").hex()
