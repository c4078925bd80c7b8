"""One guard in `Processor.handle`: whatever raises, the delivery ends recorded with its raw bytes kept."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
import redis

from producers.state import RequestState, Status
from worker.processing import Delivery, Processor
from worker.transport import safe_loads

VALID = json.dumps({"request_id": "req-1", "pipeline_name": "training_pipeline"})


def letter_bytes(processor: Processor, request_id: str) -> bytes:
    letter = processor.s.dead_letters.get(request_id)
    assert letter is not None, f"no dead letter for {request_id}"
    return letter.raw_bytes()


@pytest.mark.parametrize("where", ["_resolve", "_claim", "_start", "_decode"])
def test_a_bug_anywhere_dead_letters_the_delivery_with_its_raw_bytes(
    processor: Processor, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise KeyError(f"a bug in {where}")

    monkeypatch.setattr(processor, where, broken)
    state = processor.handle(Delivery(raw=VALID, task_id="req-1"))

    assert state.status is Status.DEAD_LETTERED
    assert state.error is not None and state.error.type == "InternalError" and where in state.error.message
    assert processor.s.states.get("req-1").status is Status.DEAD_LETTERED  # type: ignore[union-attr]
    assert letter_bytes(processor, "req-1") == VALID.encode()


def test_a_redis_error_still_escapes_so_the_task_requeues(
    processor: Processor, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(*args: Any) -> Any:
        raise redis.ConnectionError("gone")

    monkeypatch.setattr(processor.s.states, "get", down)
    with pytest.raises(redis.ConnectionError):
        processor.handle(Delivery(raw=VALID, task_id="req-1"))


def test_text_declared_base64_that_is_not_is_rejected_as_it_came(processor: Processor) -> None:
    state = processor.handle(Delivery(raw="%%% not base64 %%%", task_id="b64-1", raw_encoding="base64"))

    assert state.status is Status.REJECTED
    assert state.error is not None and "not valid base64" in state.error.message
    assert letter_bytes(processor, "b64-1") == b"%%% not base64 %%%"


@pytest.mark.parametrize(
    ("fragment", "path"),
    [
        ('"source": "\\ud800"', "source"),
        ('"parameters": {"data_url": "x\\udc00"}', "parameters.data_url"),
        ('"metadata": {"a": {"b": ["\\ud800"]}}', "metadata.a.b.0"),
        ('"idempotency_key": "\\udfff"', "idempotency_key"),
        ('"parameters": {"\\ud800": 1}', "parameters.\\ud800"),
    ],
)
def test_lone_surrogates_are_rejected_with_their_path_and_the_exact_bytes_kept(
    processor: Processor, fragment: str, path: str
) -> None:
    raw = f'{{"request_id": "s-1", "pipeline_name": "training_pipeline", {fragment}}}'
    state = processor.handle(Delivery(raw=raw, task_id="s-1"))

    assert state.status is Status.REJECTED
    assert state.error is not None and [d["path"] for d in state.error.details] == [path]
    assert letter_bytes(processor, "s-1") == raw.encode()
    assert processor.s.states.get("s-1") is not None  # the stored state reads back


def test_garbage_claiming_a_finished_request_gets_an_id_of_its_own(processor: Processor) -> None:
    processor.s.states.put(RequestState(request_id="done-1", status=Status.SUCCEEDED))
    raw = json.dumps({"request_id": "done-1"}).encode()
    message = safe_loads(raw, processor.s.settings.queue)

    from tests.unit.test_properties import delivery_of

    state = processor.handle(delivery_of(message))

    assert state.status is Status.REJECTED and state.request_id != "done-1"
    assert state.claimed_id == "done-1"
    assert letter_bytes(processor, state.request_id) == raw
    assert processor.s.states.get("done-1").status is Status.SUCCEEDED  # type: ignore[union-attr]


def test_an_envelope_reusing_a_finished_id_over_other_bytes_is_not_skipped(processor: Processor) -> None:
    processor.handle(Delivery(raw=b"junk one", task_id="t-1"))
    state = processor.handle(Delivery(raw=b"junk two", task_id="t-1"))

    assert state.request_id != "t-1" and state.claimed_id == "t-1"
    assert letter_bytes(processor, state.request_id) == b"junk two"
    assert processor.s.dead_letters.count() == 2


def test_an_item_the_transport_cut_down_keeps_its_size_and_digest(processor: Processor) -> None:
    item = b"x" * 1_000_000
    message = safe_loads(item, processor.s.settings.queue, max_bytes=100_000)

    from tests.unit.test_properties import delivery_of

    state = processor.handle(delivery_of(message))

    letter = processor.s.dead_letters.get(state.request_id)
    assert state.status is Status.REJECTED and letter is not None
    assert letter.payload_truncated and letter.payload_size == len(item)
    assert letter.payload_sha256 == hashlib.sha256(item).hexdigest()
    assert len(letter.raw_payload) <= 4096


@pytest.mark.parametrize("status", [Status.QUEUED, Status.RETRYING, Status.RUNNING])
def test_garbage_under_a_live_requests_id_never_takes_it_over(processor: Processor, status: Status) -> None:
    live = RequestState(request_id="live-1", status=status, pipeline_name="training_pipeline", idempotency_key="k")
    processor.s.states.put(live)
    processor.s.claims.claim("k", "live-1")

    state = processor.handle(Delivery(raw=b"\x00garbage", task_id="live-1"))

    assert state.request_id != "live-1" and state.claimed_id == "live-1" and state.status is Status.REJECTED
    assert processor.s.states.get("live-1").status is status  # type: ignore[union-attr]
    assert processor.s.dead_letters.get("live-1") is None
    assert processor.s.claims.claim("k", "other") == "live-1", "its idempotency key is still held"


def test_the_queued_record_of_a_raw_replay_is_where_its_rejection_goes(processor: Processor) -> None:
    replay = RequestState(request_id="replay-1", status=Status.QUEUED, replay_of="old-1")
    processor.s.states.put(replay)

    state = processor.handle(Delivery(raw=b"junk again", task_id="replay-1"))

    assert state.request_id == "replay-1" and state.status is Status.REJECTED and state.replay_of == "old-1"


def test_text_that_is_only_partly_base64_is_not_decoded_leniently(processor: Processor) -> None:
    state = processor.handle(Delivery(raw='{"aa":"bb"}', task_id="b64-2", raw_encoding="base64"))

    assert state.error is not None and "not valid base64" in state.error.message
    assert letter_bytes(processor, "b64-2") == b'{"aa":"bb"}'
