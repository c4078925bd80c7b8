"""Signatures: HMAC-SHA256 over the exact text enqueued, bound to the key id and the time, carried as a task keyword."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import fakeredis
import fakeredis.aioredis
import pytest
from pydantic import ValidationError

from producers import AsyncTriggerClient, TriggerClient
from producers.settings import ProducerSettings
from producers.signing import Signature, SignatureFormatError, parse_signature, sign, verify
from worker.transport import load_item

OLD = b"old-secret-0123456789abcdef0123456789"
NEW = b"new-secret-0123456789abcdef0123456789"
PAYLOAD = '{"request_id":"r1","pipeline_name":"training_pipeline","parameters":{"data_url":"s3://b/new.csv"}}'
QUEUE = "sign-q"


def signed(payload: str = PAYLOAD, key_id: str = "drift", secret: bytes = OLD, timestamp: int = 1_800_000_000) -> str:
    return sign(payload, key_id, secret, timestamp=timestamp)


def test_a_signature_verifies_with_its_secret_and_names_its_key_and_time() -> None:
    signature = parse_signature(signed())

    assert signature.key_id == "drift" and signature.timestamp == 1_800_000_000 and len(signature.digest) == 64
    assert verify(PAYLOAD, signature, [OLD])
    assert verify(PAYLOAD.encode(), signature, [OLD]), "bytes and their text verify alike"


def test_a_wrong_secret_or_an_altered_body_does_not_verify() -> None:
    signature = parse_signature(signed())
    altered = PAYLOAD.replace("new.csv", "evil.csv")

    assert not verify(PAYLOAD, signature, [NEW])
    assert not verify(altered, signature, [OLD])
    assert not verify(PAYLOAD + " ", signature, [OLD]), "nothing is canonicalized: a byte more is another body"
    assert not verify(PAYLOAD, signature, [])


def test_the_key_id_and_the_timestamp_are_signed_too() -> None:
    signature = parse_signature(signed())

    assert not verify(PAYLOAD, Signature("other-key", signature.timestamp, signature.digest), [OLD])
    assert not verify(PAYLOAD, Signature("drift", signature.timestamp + 1, signature.digest), [OLD])


def test_during_a_rotation_either_listed_secret_verifies() -> None:
    by_old, by_new = parse_signature(signed(secret=OLD)), parse_signature(signed(secret=NEW))

    assert verify(PAYLOAD, by_old, [NEW, OLD]) and verify(PAYLOAD, by_new, [NEW, OLD])
    assert not verify(PAYLOAD, by_old, [NEW]), "once the old secret is dropped, its signatures stop verifying"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "k=drift,t=1800000000",
        "k=drift,t=1800000000,v1=" + "A" * 64,  # upper-case hex
        "k=drift,t=-5,v1=" + "0" * 64,
        "k=dr ift,t=1,v1=" + "0" * 64,
        "t=1,k=drift,v1=" + "0" * 64,
        "k=drift,t=1,v1=" + "0" * 64 + ",v2=00",
    ],
)
def test_only_the_one_shape_parses(text: str) -> None:
    with pytest.raises(SignatureFormatError):
        parse_signature(text)


def test_a_parsed_signature_prints_as_it_was_written() -> None:
    assert str(parse_signature(signed())) == signed()


def message_parts(envelope: bytes | str) -> tuple[str, dict[str, Any]]:
    """(request text, task kwargs) of a queued envelope."""
    args, kwargs, _ = json.loads(base64.b64decode(json.loads(envelope)["body"]))
    return args[0], kwargs


def producer_settings(**fields: Any) -> ProducerSettings:
    return ProducerSettings(queue=QUEUE, **fields)


def test_a_client_with_a_key_signs_the_exact_text_it_enqueues(fake_redis: fakeredis.FakeRedis) -> None:
    settings = producer_settings(key_id="drift", key_secret=OLD.decode())
    TriggerClient(fake_redis, settings).trigger("training_pipeline", parameters={"data_url": "s3://b/x.csv"})

    text, kwargs = message_parts(fake_redis.lindex(QUEUE, 0))

    signature = parse_signature(kwargs["signature"])
    assert signature.key_id == "drift" and verify(text, signature, [OLD])
    assert set(kwargs) == {"signature"}


def test_a_client_without_a_key_sends_no_signature(fake_redis: fakeredis.FakeRedis) -> None:
    TriggerClient(fake_redis, producer_settings()).trigger("training_pipeline")

    assert message_parts(fake_redis.lindex(QUEUE, 0))[1] == {}


def test_the_async_client_signs_the_same_way() -> None:
    server = fakeredis.FakeServer()
    settings = producer_settings(key_id="webapp", key_secret=NEW.decode())

    async def send() -> None:
        async with AsyncTriggerClient(fakeredis.aioredis.FakeRedis(server=server), settings) as client:
            await client.trigger("training_pipeline", request_id="async-1")

    asyncio.run(send())
    TriggerClient(fakeredis.FakeRedis(server=server), settings).trigger("training_pipeline", request_id="sync-1")

    queued = fakeredis.FakeRedis(server=server).lrange(QUEUE, 0, -1)
    for text, kwargs in map(message_parts, queued):
        signature = parse_signature(kwargs["signature"])
        assert signature.key_id == "webapp" and verify(text, signature, [NEW])
    assert len(queued) == 2


def test_the_transport_lets_a_well_shaped_signature_through_and_quarantines_a_bad_one(
    fake_redis: fakeredis.FakeRedis,
) -> None:
    settings = producer_settings(key_id="drift", key_secret=OLD.decode())
    TriggerClient(fake_redis, settings).trigger("training_pipeline")
    envelope = json.loads(fake_redis.rpop(QUEUE))

    _, checked = load_item(json.dumps(envelope).encode(), QUEUE)
    assert checked is not None and checked[2]["signature"].startswith("k=drift,t=")

    text, kwargs = message_parts(json.dumps(envelope))
    kwargs["signature"] = "k=drift,t=now,v1=abc"
    envelope["body"] = base64.b64encode(json.dumps([[text], kwargs, {}]).encode()).decode()
    message, checked = load_item(json.dumps(envelope).encode(), QUEUE)
    assert checked is None
    assert "signature" in message_parts(json.dumps(message))[1]["quarantine"]


def test_a_key_id_needs_its_secret_and_the_error_never_shows_the_secret() -> None:
    with pytest.raises(ValidationError) as caught:
        ProducerSettings(key_secret="a-secret-nobody-may-read-0123456789")
    assert "key_id and key_secret" in str(caught.value)
    assert "nobody-may-read" not in str(caught.value)
    assert "nobody-may-read" not in repr(ProducerSettings(key_id="k", key_secret="a-secret-nobody-may-read-0123456789"))
