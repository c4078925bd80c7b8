"""The drift publisher: an alert only on drift, coalesced per model, with the summary as metadata."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import fakeredis

from producers import TriggerClient, keys
from producers.alerts import DriftPublisher
from producers.contract import decode_request


@dataclass
class Report:
    drifted: bool
    facts: dict[str, Any] = field(default_factory=lambda: {"drifted": ["mean radius"], "share": 0.1})

    def summary(self) -> dict[str, Any]:
        return self.facts


def queued(fake: fakeredis.FakeRedis) -> list[Any]:
    import base64

    bodies = [json.loads(base64.b64decode(json.loads(e)["body"])) for e in fake.lrange("zenml-triggers", 0, -1)]
    return [decode_request(args[0]) for args, _, _ in bodies]


def test_no_drift_publishes_nothing(fake_redis: fakeredis.FakeRedis) -> None:
    assert DriftPublisher(TriggerClient(fake_redis)).publish(Report(False), model="churn", pipeline="p") is None
    assert fake_redis.llen("zenml-triggers") == 0


def test_drift_publishes_one_coalesced_alert_carrying_the_summary(fake_redis: fakeredis.FakeRedis) -> None:
    publisher = DriftPublisher(TriggerClient(fake_redis))
    request_id = publisher.publish(
        Report(True), model="churn", pipeline="training_pipeline", parameters={"data_url": "s3://b/new.csv"}
    )

    (request,) = queued(fake_redis)
    assert request.request_id == request_id and request.source == "drift-monitor"
    assert request.coalesce_key == "drift:churn" and request.parameters == {"data_url": "s3://b/new.csv"}
    assert request.metadata == {"model": "churn", "drift": {"drifted": ["mean radius"], "share": 0.1}}
    assert fake_redis.get(keys.coalesce_latest_key("drift:churn")) == request_id.encode()


def test_the_latest_alert_is_the_keys_latest(fake_redis: fakeredis.FakeRedis) -> None:
    publisher = DriftPublisher(TriggerClient(fake_redis))
    ids = [publisher.publish(Report(True), model="churn", template="nightly") for _ in range(3)]
    assert fake_redis.get(keys.coalesce_latest_key("drift:churn")) == ids[-1].encode()  # type: ignore[union-attr]
