"""The demo's embedded Redis behaves like Redis where redis-py relies on it."""

from __future__ import annotations

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from producers import TriggerClient
from producers.settings import ProducerSettings
from worker.demo import embedded_redis


def test_an_error_reply_keeps_the_connection_so_scripts_load_on_first_use() -> None:
    with embedded_redis() as url:
        client = redis.Redis.from_url(url, retry=Retry(NoBackoff(), 0))  # no silent reconnect, as the producer
        script = client.register_script("return ARGV[1]")

        assert script(args=["first use: NOSCRIPT, then loaded on the same connection"]).startswith(b"first use")
        assert TriggerClient.from_settings(ProducerSettings(redis_url=url)).trigger("training_pipeline")
