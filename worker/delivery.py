"""One message as the task received it: the raw bytes, exactly as they came, and what the transport said.

A dead letter keeps these bytes, never a re-serialization, so everything here is careful
never to raise on them: text that claims to be base64 and is not stays text.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from producers.envelope import raw_from_text
from worker.dead_letters import BoundedPayload, DeadLetter, DeadLetterStore, bounded_payload, cut_payload


@dataclass(frozen=True)
class Delivery:
    """One message as the task received it."""

    raw: bytes | str
    task_id: str | None = None
    delivery_tag: str | None = None
    attempt: int | None = None
    quarantine: str | None = None
    raw_encoding: str = "utf-8"
    raw_size: int = 0
    raw_sha256: str = ""
    """Set by the transport when it kept only a prefix of an oversized item: the whole item's size and digest."""
    signature: str | None = None
    """The producer's `k=<key id>,t=<unix seconds>,v1=<hex>` over `raw`, the exact text it enqueued."""

    def text(self) -> str:
        """The request text as it travelled (what a signature covers), to send again exactly as it came."""
        return self.raw if isinstance(self.raw, str) else self.raw.decode("utf-8", "surrogateescape")

    def payload(self) -> bytes | str:
        """The original bytes (undoing the transport's base64); text that is not valid base64 stays as it came."""
        if not isinstance(self.raw, str):
            return self.raw
        try:
            return raw_from_text(self.raw, self.raw_encoding)
        except ValueError:
            return self.raw

    def kept(self, store: DeadLetterStore) -> BoundedPayload:
        """What a dead letter keeps of the payload: whole within the store's bounds, else prefix, size, digest."""
        if self.cut:  # the transport already cut an oversized item down
            return cut_payload(self.payload(), self.raw_size, self.raw_sha256, store.payload_prefix)
        return bounded_payload(self.payload(), store.max_payload_bytes, store.payload_prefix)

    @property
    def cut(self) -> bool:
        """Whether the transport kept only a prefix of the item (a size and digest the payload does not match)."""
        return bool(self.quarantine and self.raw_sha256 and self.raw_size > len(self.payload()))

    def digest(self) -> str:
        """SHA-256 of the whole item as it arrived (the transport's, for an item it cut down)."""
        if self.cut:
            return self.raw_sha256
        payload = self.payload()
        data = payload.encode("utf-8", "surrogatepass") if isinstance(payload, str) else payload
        return hashlib.sha256(data).hexdigest()

    def problem(self) -> str | None:
        """Why the delivery cannot hold a request before it is even parsed, if it cannot."""
        if self.quarantine:
            return self.quarantine
        if self.raw_encoding == "base64" and isinstance(self.raw, str) and self.payload() is self.raw:
            return "task keyword raw_encoding says base64, but the request text is not valid base64"
        return None


def letter_holds(letter: DeadLetter, delivery: Delivery) -> bool:
    """Whether `letter` already keeps exactly what `delivery` carries (a redelivery of a recorded message)."""
    if letter.payload_sha256:
        return letter.payload_sha256 == delivery.digest()
    payload = delivery.payload()  # a letter written before digests were kept
    return letter.raw_bytes() == (payload.encode("utf-8", "surrogatepass") if isinstance(payload, str) else payload)
