"""`trigger requests list` against the real Redis and a real worker: what the producer enqueued and what the
worker recorded under ids of its own, newest first, filtered; `trigger stats` counts the idle queue's depth."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from producers import TriggerClient, keys
from producers.cli import cli
from producers.envelope import task_envelope
from producers.state import Status
from tests.integration.conftest import Stack
from tests.support.waiting import wait_for


def test_requests_are_listed_newest_first_with_filters(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    stack.start_worker()
    probe = stack.probes[0]
    rejected = stack.client.trigger("no_such_pipeline", source="it-sender")
    stack.redis.lpush(stack.queue, task_envelope(keys.TASK_NAME, "raw-1", ["not json"], stack.queue))
    stack.redis.lpush(stack.queue, task_envelope(keys.TASK_NAME, probe, ["garbage"], stack.queue))  # not its record
    idle = TriggerClient.from_settings(stack.settings.model_copy(update={"queue": f"{stack.queue}-idle"}))
    waiting = [idle.trigger("training_pipeline", source="it-sender") for _ in range(2)]
    assert stack.wait(rejected).status is Status.REJECTED
    assert wait_for(lambda: len(stack.client.requests(source="unknown", status=["rejected"])) == 2), stack.logs()
    own, raw = stack.client.requests(source="unknown", status=["rejected"])  # the garbage was taken after raw-1
    assert own.request_id.startswith("malformed-") and own.claimed_id == probe and raw.request_id == "raw-1"

    listed = [s.request_id for s in stack.client.requests()]
    assert sorted(listed) == sorted([probe, rejected, "raw-1", own.request_id, *waiting])  # each once
    assert listed[-2:] == [rejected, probe] and listed.index(waiting[1]) < listed.index(waiting[0])
    assert [s.request_id for s in stack.client.requests(source="it-sender", status=["queued"])] == waiting[::-1]
    assert [s.request_id for s in stack.client.requests(pipeline="training_pipeline", limit=1)] == [waiting[1]]

    monkeypatch.setenv("TRIGGER_REDIS_URL", stack.redis_url)
    result = CliRunner().invoke(cli, ["requests", "list", "--status", "rejected", "--since", "10m", "--json"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert {s["request_id"] for s in printed} == {probe, rejected, "raw-1", own.request_id}
    assert printed[0] == stack.client.status(printed[0]["request_id"]).public_dict()

    monkeypatch.setenv("TRIGGER_QUEUE", f"{stack.queue}-idle")
    stats = json.loads(CliRunner().invoke(cli, ["stats", "--json"]).stdout)
    assert stats["queue_depth"] == 2 and stats["depth_by_priority"] == {"0": 2}
