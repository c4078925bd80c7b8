"""Property-based: nothing pushed onto the queue makes the transport or the processor raise or lose it."""

from __future__ import annotations

import base64
import json
from typing import Any

import fakeredis
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from producers.contract import decode_request, peek_request_id
from producers.errors import MalformedRequest
from producers.state import RequestState, StateStore, Status
from worker.dead_letters import DeadLetterStore
from worker.idempotency import IdempotencyClaims
from worker.lease import Leases
from worker.processing import Delivery, Processor, Services
from worker.runner import RunOutcome
from worker.schedule import RetrySchedule
from worker.settings import WorkerSettings
from worker.transport import envelope_problem, safe_loads

QUEUE = "zenml-triggers"
FAST = settings(max_examples=75, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=15,
)
payloads = st.binary(max_size=300) | json_values.map(lambda value: json.dumps(value).encode())


from tests.unit.conftest import FakeServer, FakeTemplates  # noqa: E402


class AlwaysSucceeds:
    def __init__(self) -> None:
        self.calls = 0

    def run(self, entry: Any, plan: Any, run_name: str, run_config: Any = None, provenance: Any = None) -> RunOutcome:
        self.calls += 1
        return RunOutcome("zen-1", run_name, "completed", {"accuracy": 1.0})

    def find(self, run_name: str, entry: Any) -> None:
        return None

    def abandon(self, run_name: str, reason: str) -> None:
        return None

    def running_step(self, run_name: str) -> None:
        return None


def fresh_processor(registry: Any) -> Processor:
    client = fakeredis.FakeRedis()
    worker_settings = WorkerSettings(max_payload_bytes=4096)
    return Processor(
        Services(
            settings=worker_settings,
            registry=registry,
            states=StateStore(client, 3600),
            dead_letters=DeadLetterStore(client, 100, 3600),
            claims=IdempotencyClaims(client, 3600),
            leases=Leases(client, 60, 10.0),
            schedule=RetrySchedule(client, QUEUE),
            runner=AlwaysSucceeds(),  # type: ignore[arg-type]
            templates=FakeTemplates(),  # type: ignore[arg-type]
            server=FakeServer(),  # type: ignore[arg-type]
        )
    )


def carried(message: dict[str, Any]) -> bytes:
    args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
    return base64.b64decode(args[0]) if kwargs.get("raw_encoding") == "base64" else args[0].encode()


@FAST
@given(raw=payloads)
def test_safe_loads_never_raises_and_never_drops(raw: bytes) -> None:
    message = safe_loads(raw, QUEUE)
    assert envelope_problem(message) is None
    _, kwargs, _ = json.loads(base64.b64decode(message["body"]))
    assert "quarantine" in kwargs
    assert kwargs["quarantine"]
    assert carried(message) == raw


@FAST
@given(raw=payloads)
def test_decode_request_only_ever_raises_malformed_request(raw: bytes) -> None:
    with pytest.raises(MalformedRequest) as info:
        decode_request(raw)
    assert info.value.raw == raw
    assert info.value.details
    peek_request_id(raw)


@FAST
@given(raw=payloads)
def test_processor_rejects_any_non_request_with_a_reason(registry: Any, raw: bytes) -> None:
    processor = fresh_processor(registry)
    state = processor.handle(Delivery(raw=raw, task_id="task-1"))
    assert state.status is Status.REJECTED
    assert state.status.terminal
    assert state.error is not None
    assert state.error.message
    assert processor.s.states.get(state.request_id) == state
    letter = processor.s.dead_letters.get(state.request_id)
    assert letter is not None
    assert letter.raw_bytes() == raw
    assert processor.s.runner.calls == 0  # type: ignore[attr-defined]


@FAST
@given(raw=payloads)
def test_processor_rejects_quarantined_items_from_the_transport(registry: Any, raw: bytes) -> None:
    processor = fresh_processor(registry)
    message = safe_loads(raw, QUEUE)
    args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
    state = processor.handle(Delivery(raw=args[0], task_id=message["headers"]["id"], **kwargs))
    assert state.status is Status.REJECTED
    letter = processor.s.dead_letters.get(state.request_id)
    assert letter is not None
    assert letter.raw_bytes() == raw


names = st.sampled_from(["data_url", "model_type", "n_estimators", "seed", "datasets", "test_size", "x"])
steps = st.sampled_from(["load_data", "preprocess", "train_model", "evaluate", "ghost"])


@FAST
@given(
    parameters=st.dictionaries(names, json_values, max_size=3),
    step_overrides=st.dictionaries(steps, st.dictionaries(names, json_values, max_size=3), max_size=3),
)
def test_any_parameters_end_succeeded_or_rejected_with_paths(
    registry: Any, parameters: dict[str, Any], step_overrides: dict[str, Any]
) -> None:
    processor = fresh_processor(registry)
    raw = json.dumps(
        {
            "pipeline_name": "training_pipeline",
            "parameters": parameters,
            "steps": {name: {"parameters": values} for name, values in step_overrides.items()},
        }
    )
    state = processor.handle(Delivery(raw=raw))
    assert state.status in (Status.SUCCEEDED, Status.REJECTED)
    if state.status is Status.REJECTED:
        assert state.error is not None
        assert state.error.details
        assert all(d["path"].startswith(("parameters.", "steps.")) for d in state.error.details)
        assert processor.s.runner.calls == 0  # type: ignore[attr-defined]
    else:
        assert processor.s.runner.calls == 1  # type: ignore[attr-defined]


def delivery_of(message: dict[str, Any]) -> Delivery:
    """The `Delivery` the task builds from a message the transport let through (as `run_trigger` does)."""
    args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
    return Delivery(raw=args[0], task_id=message["headers"]["id"], **kwargs)


any_text = st.text(alphabet=st.characters(codec=None, categories=["L", "N", "P", "Cs", "Cc"]), max_size=12)
field_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | any_text,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(any_text, children, max_size=3),
    max_leaves=8,
)
request_texts = (
    st.fixed_dictionaries(
        {"pipeline_name": st.sampled_from(["training_pipeline", "ghost", 5])},
        optional={
            "request_id": st.sampled_from(["r-1", "done-1", "", "x" * 200]) | any_text,
            "parameters": st.dictionaries(any_text | names, field_values, max_size=3),
            "steps": st.dictionaries(
                steps, st.fixed_dictionaries({"parameters": st.dictionaries(names, field_values)})
            ),
            "source": any_text,
            "metadata": st.dictionaries(any_text, field_values, max_size=3),
            "idempotency_key": any_text,
        },
    ).map(json.dumps)
    | any_text
)
task_kwargs = st.fixed_dictionaries(
    {},
    optional={
        "attempt": st.none() | st.booleans() | st.integers(-3, 10**20) | st.floats(allow_nan=False),
        "raw_encoding": st.sampled_from(["utf-8", "base64", "rot13", 7]),
        "quarantine": st.none() | any_text | st.integers(),
        "raw_size": st.integers(-1, 10**30) | any_text,
        "raw_sha256": st.just("ab" * 32) | any_text | st.integers(),
        "eta": st.just("not a date"),
        "signature": st.none() | any_text | st.integers() | st.just("k=ops,t=1800000000,v1=" + "0" * 64),
    },
)
envelopes = st.builds(
    lambda task_id, text, kwargs, encoding, task: {
        "body": base64.b64encode(json.dumps([[text], kwargs, {}]).encode()).decode()
        if encoding == "base64"
        else json.dumps([[text], kwargs, {}]),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {"id": task_id, "task": task, "timelimit": [1, "x"]},
        "properties": {"body_encoding": encoding, "delivery_tag": "tag"},
    },
    task_id=st.sampled_from(["r-1", "done-1", "quarantine-1"]) | any_text,
    text=request_texts,
    kwargs=task_kwargs,
    encoding=st.sampled_from(["base64", "plain", None]),
    task=st.sampled_from(["zenml_trigger.run", "os.system"]),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(envelope=envelopes)
def test_any_task_envelope_ends_recorded_with_its_bytes_kept(registry: Any, envelope: dict[str, Any]) -> None:
    """Whole envelopes (kwargs, encodings, escapes, ids of finished requests): exactly the invariant of issue 11."""
    processor = fresh_processor(registry)
    processor.s.states.put(RequestState(request_id="done-1", status=Status.SUCCEEDED))
    item = json.dumps(envelope).encode()
    message = safe_loads(item, QUEUE)
    delivery = delivery_of(message)

    state = processor.handle(delivery)

    recorded = processor.s.states.get(state.request_id)
    assert recorded is not None and recorded.status.terminal
    assert processor.s.states.get("done-1").status is Status.SUCCEEDED  # type: ignore[union-attr]
    if recorded.status is not Status.SUCCEEDED:
        letter = processor.s.dead_letters.get(recorded.request_id)
        assert letter is not None
        kept = letter.raw_bytes()
        original = delivery.payload()
        assert kept == (original if isinstance(original, bytes) else original.encode("utf-8", "surrogatepass"))
