"""The producer's hand-built Celery envelope, and the worker transport that never drops a popped item."""

from __future__ import annotations

import base64
import json
import pickle
from typing import Any

import celery
import pytest
from kombu import Connection

from producers import keys
from producers.contract import TriggerRequest, encode_request
from producers.envelope import EMBED, task_envelope
from worker.transport import envelope_problem, quarantine, safe_loads

QUEUE = "zenml-triggers"


def unwrap(message: dict[str, Any]) -> tuple[list[Any], dict[str, Any], dict[str, Any]]:
    """The [args, kwargs, embed] triple inside a task envelope."""
    assert message["properties"]["body_encoding"] == "base64"
    args, kwargs, embed = json.loads(base64.b64decode(message["body"]))
    return args, kwargs, embed


def envelope(request_id: str = "req-1", args: list[Any] | None = None, **kwargs: Any) -> dict[str, Any]:
    payload = encode_request(TriggerRequest(request_id=request_id, pipeline_name="training_pipeline"))
    return json.loads(task_envelope(keys.TASK_NAME, request_id, args or [payload], QUEUE, kwargs or None))


@pytest.fixture(scope="module")
def celery_app() -> celery.Celery:
    app = celery.Celery("unit", broker="memory://", set_as_current=False)

    @app.task(name=keys.TASK_NAME, bind=True, shared=False)
    def run(self: Any, raw: str, attempt: int | None = None) -> str:
        return raw

    return app


class TestProducerEnvelope:
    def test_passes_the_worker_check(self) -> None:
        assert envelope_problem(envelope()) is None

    def test_body_is_base64_of_args_kwargs_embed(self) -> None:
        message = envelope("req-2", attempt=3)
        args, kwargs, embed = unwrap(message)
        assert json.loads(args[0])["request_id"] == "req-2"
        assert kwargs == {"attempt": 3}
        assert embed == EMBED
        assert message["content-type"] == "application/json"
        assert message["properties"]["delivery_info"]["routing_key"] == QUEUE
        assert message["properties"]["correlation_id"] == "req-2"

    def test_has_the_headers_celery_requires(self) -> None:
        headers = envelope("req-3")["headers"]
        for name in ("task", "id", "lang", "root_id", "retries", "timelimit"):
            assert name in headers
        assert headers["task"] == keys.TASK_NAME
        assert headers["id"] == headers["root_id"] == "req-3"
        assert headers["lang"] == "py"
        assert headers["retries"] == 0

    def test_matches_what_celery_itself_produces(self, celery_app: celery.Celery) -> None:
        theirs = celery_app.amqp.as_task_v2("req-4", keys.TASK_NAME, args=["x"], kwargs={})
        ours = envelope("req-4")
        stamping = {"stamped_headers", "stamps", "replaced_task_nesting"}
        assert set(theirs.headers) - stamping <= set(ours["headers"])
        their_args, their_kwargs, their_embed = theirs.body
        assert (their_args, their_kwargs) == (["x"], {})
        assert set(their_embed) == set(unwrap(ours)[2])
        assert theirs.properties["correlation_id"] == ours["properties"]["correlation_id"]

    def test_kombu_and_the_celery_worker_read_it(self, celery_app: celery.Celery) -> None:
        from celery.worker.request import Request

        channel = Connection("memory://").default_channel
        message = channel.Message(envelope("req-5", attempt=2), channel=channel)
        args, kwargs, embed = message.decode()
        assert (json.loads(args[0])["request_id"], kwargs, embed) == ("req-5", {"attempt": 2}, EMBED)
        request = Request(message, app=celery_app, task=celery_app.tasks[keys.TASK_NAME])
        assert request.id == "req-5"
        assert request.task_name == keys.TASK_NAME
        assert json.loads(request.args[0])["pipeline_name"] == "training_pipeline"
        assert request.kwargs == {"attempt": 2}
        assert request.delivery_info["routing_key"] == QUEUE

    def test_each_envelope_gets_a_fresh_delivery_tag(self) -> None:
        assert envelope()["properties"]["delivery_tag"] != envelope()["properties"]["delivery_tag"]


def assert_quarantined(message: dict[str, Any], raw: bytes, reason_part: str) -> None:
    assert envelope_problem(message) is None, "a quarantine envelope must itself be runnable"
    assert message["headers"]["id"].startswith("quarantine-")
    assert message["properties"]["delivery_info"]["routing_key"] == QUEUE
    args, kwargs, _ = unwrap(message)
    assert reason_part in kwargs["quarantine"]
    carried = base64.b64decode(args[0]) if kwargs["raw_encoding"] == "base64" else args[0].encode()
    assert carried == raw


class TestSafeLoads:
    def test_a_good_envelope_keeps_its_task_id_arguments_and_kwargs(self) -> None:
        message = envelope("req-6")
        raw = json.dumps(message).encode()
        for loaded in (safe_loads(raw, QUEUE), safe_loads(raw.decode(), QUEUE)):
            assert loaded["headers"]["id"] == "req-6"
            assert unwrap(loaded)[:2] == unwrap(message)[:2]
            assert envelope_problem(loaded) is None

    def test_garbage_text(self) -> None:
        raw = b"hello, worker"
        message = safe_loads(raw, QUEUE)
        assert_quarantined(message, raw, "not JSON")
        assert unwrap(message)[1]["raw_encoding"] == "utf-8"

    def test_non_utf8_bytes_are_carried_as_base64(self) -> None:
        raw = b"\xff\xfe\x00garbage\x80"
        message = safe_loads(raw, QUEUE)
        assert unwrap(message)[1]["raw_encoding"] == "base64"
        assert_quarantined(message, raw, "JSON")

    @pytest.mark.parametrize(
        ("raw", "reason"),
        [
            (b'{"pipeline_name": "training_pipeline"}', "not a Celery task envelope"),
            (b"[1, 2, 3]", "JSON list"),
            (b'"just a string"', "JSON str"),
            (b"null", "JSON NoneType"),
        ],
    )
    def test_json_that_is_not_an_envelope(self, raw: bytes, reason: str) -> None:
        assert_quarantined(safe_loads(raw, QUEUE), raw, reason)

    def test_pickle_content_type_is_refused(self) -> None:
        message = envelope()
        message["content-type"] = "application/x-python-serialize"
        message["body"] = base64.b64encode(pickle.dumps((["x"], {}, EMBED))).decode()
        raw = json.dumps(message).encode()
        assert_quarantined(safe_loads(raw, QUEUE), raw, "JSON only")

    def test_unknown_task_name_is_refused(self) -> None:
        message = envelope()
        message["headers"]["task"] = "os.system"
        raw = json.dumps(message).encode()
        assert_quarantined(safe_loads(raw, QUEUE), raw, "unknown task 'os.system'")

    @pytest.mark.parametrize(
        "triple",
        [[[], {}, EMBED], [["a", "b"], {}, EMBED], [[42], {}, EMBED]],
        ids=["no-args", "two-args", "not-a-string"],
    )
    def test_task_arguments_must_be_one_string(self, triple: list[Any]) -> None:
        raw = json.dumps(_with_body(envelope(), triple)).encode()
        assert_quarantined(safe_loads(raw, QUEUE), raw, "exactly one request string")

    def test_task_kwargs_must_be_an_object(self) -> None:
        raw = json.dumps(_with_body(envelope(), [["a"], ["kw"], EMBED])).encode()
        assert_quarantined(safe_loads(raw, QUEUE), raw, "must be JSON objects")

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"raw_sha256": "\ud800zz"},
            {"raw_sha256": "not hex"},
            {"raw_sha256": 7},
            {"raw_size": -1},
            {"raw_size": 2**70},
            {"raw_size": True},
            {"task_id_of_someone": "x"},
        ],
    )
    def test_transport_keywords_are_checked_before_they_reach_a_letter(self, kwargs: dict[str, Any]) -> None:
        raw = json.dumps(envelope(**kwargs)).encode()
        message = safe_loads(raw, QUEUE)
        assert_quarantined(message, raw, "task keyword")

    def test_body_that_is_not_base64_json(self) -> None:
        message = envelope()
        message["body"] = "!!! not base64 !!!"
        raw = json.dumps(message).encode()
        assert_quarantined(safe_loads(raw, QUEUE), raw, "not a JSON [args, kwargs, embed] triple")

    @pytest.mark.parametrize(
        ("where", "key", "value"),
        [
            ("properties", "delivery_tag", None),
            ("properties", "delivery_tag", {"x": 1}),
            ("headers", "timelimit", "x"),
            ("headers", "eta", "not-a-date"),
            ("headers", "expires", "2000-01-01T00:00:00+00:00"),
            ("headers", "retries", "many"),
        ],
    )
    def test_headers_celery_would_choke_on_are_rebuilt(self, where: str, key: str, value: Any) -> None:
        message = envelope("req-7")
        message[where][key] = value
        loaded = safe_loads(json.dumps(message).encode(), QUEUE)
        assert loaded["headers"]["id"] == "req-7" and "quarantine" not in unwrap(loaded)[1]
        assert loaded["headers"]["eta"] is None and loaded["headers"]["expires"] is None
        assert loaded["headers"]["timelimit"] == [None, None] and loaded["headers"]["retries"] == 0
        assert isinstance(loaded["properties"]["delivery_tag"], str) and loaded["properties"]["delivery_tag"]

    def test_missing_delivery_tag_gets_one(self) -> None:
        message = envelope()
        del message["properties"]["delivery_tag"]
        loaded = safe_loads(json.dumps(message).encode(), QUEUE)
        assert isinstance(loaded["properties"]["delivery_tag"], str)

    @pytest.mark.parametrize("kwargs", [{"attempt": "x"}, {"attempt": 0}, {"raw_encoding": "rot13"}, {"quarantine": 5}])
    def test_ill_typed_task_kwargs_are_quarantined(self, kwargs: dict[str, Any]) -> None:
        raw = json.dumps(_with_body(envelope(), [["{}"], kwargs, EMBED])).encode()
        assert_quarantined(safe_loads(raw, QUEUE), raw, "task keyword")

    def test_quarantine_keeps_the_reason_and_text(self) -> None:
        args, kwargs, _ = unwrap(quarantine(b"abc", QUEUE, "why not"))
        assert args == ["abc"]
        assert kwargs == {"quarantine": "why not", "raw_encoding": "utf-8"}

    def test_deeply_nested_json_is_quarantined_not_raised(self) -> None:
        raw = b"[" * 5000 + b"]" * 5000
        assert_quarantined(safe_loads(raw, QUEUE), raw, "JSON")

    def test_envelope_without_task_id_is_quarantined(self) -> None:
        message = envelope()
        del message["headers"]["id"]
        raw = json.dumps(message).encode()
        assert_quarantined(safe_loads(raw, QUEUE), raw, "id")

    def test_envelope_with_unknown_task_kwargs_is_quarantined(self) -> None:
        message = envelope(unexpected="boom")
        raw = json.dumps(message).encode()
        assert_quarantined(safe_loads(raw, QUEUE), raw, "unexpected")


def _with_body(message: dict[str, Any], triple: list[Any]) -> dict[str, Any]:
    message["body"] = base64.b64encode(json.dumps(triple).encode()).decode()
    return message


class FakeDelivery:
    def __init__(self) -> None:
        self.delivered: list[tuple[dict[str, Any], str]] = []

    def _deliver(self, message: dict[str, Any], queue: str) -> None:
        self.delivered.append((message, queue))


class FakeBrpop:
    """The parts of a redis-py client `Channel._brpop_read` uses: one BRPOP reply."""

    def __init__(self, queue: str, item: bytes) -> None:
        self.connection = None
        self.reply = (queue.encode(), item)

    def parse_response(self, connection: Any, command: str, **options: Any) -> tuple[bytes, bytes]:
        return self.reply


class FakeCycle:
    def rotate(self, queue: str) -> None:
        pass


def popped_by_channel(queue: str, item: bytes, guarded: tuple[str, ...] | None) -> dict[str, Any]:
    """What a worker channel guarding `guarded` delivers for `item` popped from `queue`."""
    from worker.transport import Channel

    channel = Channel.__new__(Channel)
    channel.guarded_queues = guarded
    channel.connection, channel._queue_cycle = FakeDelivery(), FakeCycle()  # type: ignore[assignment]
    channel.__dict__["client"] = FakeBrpop(queue, item)
    channel._in_poll = None
    channel._brpop_read()
    [(message, _)] = channel.connection.delivered  # type: ignore[attr-defined]
    return message


class TestGuardedQueues:
    REPLY = json.dumps({"body": "eyJvayI6IHRydWV9", "headers": {}, "content-type": "application/json"}).encode()
    """A remote-control reply as kombu's pidbox writes it to `<id>.reply.celery.pidbox`."""

    def test_a_remote_control_reply_reaches_celery_as_kombu_wrote_it(self) -> None:
        message = popped_by_channel("abc.reply.celery.pidbox", self.REPLY, guarded=(QUEUE,))
        assert message == json.loads(self.REPLY)

    def test_the_trigger_queue_is_still_guarded(self) -> None:
        message = popped_by_channel(QUEUE, self.REPLY, guarded=(QUEUE,))
        _, kwargs, _ = unwrap(message)
        assert message["headers"]["task"] == keys.TASK_NAME and "not a Celery task envelope" in kwargs["quarantine"]

    def test_without_a_list_every_queue_is_guarded(self) -> None:
        message = popped_by_channel("abc.reply.celery.pidbox", self.REPLY, guarded=None)
        assert message["headers"]["task"] == keys.TASK_NAME
