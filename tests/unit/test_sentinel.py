"""One sentinel URL for every side: parsed once, refused clearly when malformed, and used the same way by the
producers' clients, the state store and the worker's broker."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import ValidationError
from redis.asyncio.sentinel import SentinelConnectionPool as AsyncSentinelPool
from redis.sentinel import SentinelConnectionPool

from producers.async_client import connect_async
from producers.client import connect
from producers.sentinel import SentinelAddress, is_sentinel_url, parse_sentinel_url
from producers.settings import ProducerSettings, redacted_url
from worker import transport
from worker.app import celery_config, create_app
from worker.settings import WorkerSettings

THREE = "sentinel://:s3cret@h1:26379/2;sentinel://h2:26380;sentinel://h3"


def test_the_kombu_form_names_every_sentinel_with_the_db_and_the_password_given_once() -> None:
    address = parse_sentinel_url(THREE, "mymaster")

    assert address == SentinelAddress(
        sentinels=(("h1", 26379), ("h2", 26380), ("h3", 26379)), master_name="mymaster", db=2, password="s3cret"
    )


def test_the_master_name_may_come_from_the_url_and_must_agree_with_the_setting() -> None:
    assert parse_sentinel_url("sentinel://h1?master_name=primary").master_name == "primary"
    assert parse_sentinel_url("sentinel://h1?master_name=primary", "primary").master_name == "primary"
    with pytest.raises(ValueError, match="TRIGGER_REDIS_MASTER_NAME is 'other' but the sentinel URL's master_name"):
        parse_sentinel_url("sentinel://h1?master_name=primary", "other")


def test_percent_encoded_credentials_are_read_and_written_back_encoded_on_every_sentinel() -> None:
    address = parse_sentinel_url("sentinel://worker:p%40ss%3Bword@h1;sentinel://h2", "m")

    assert (address.username, address.password) == ("worker", "p@ss;word")
    assert (
        address.kombu_url() == "sentinel://worker:p%40ss%3Bword@h1:26379/0;sentinel://worker:p%40ss%3Bword@h2:26379/0"
    )


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("sentinel://h1", "needs the master's name: set TRIGGER_REDIS_MASTER_NAME or add \\?master_name=NAME"),
        ("sentinel://h1;redis://h2", "part 2 of the sentinel URL is not a sentinel:// URL"),
        ("sentinel://h1:port", r"part 1 \(h1\) of the sentinel URL has a port that is not a number"),
        ("sentinel://h1:99999", r"part 1 \(h1\) of the sentinel URL has a port that is not a number"),
        ("sentinel://h1/zero", r"part 1 \(h1\) of the sentinel URL has db 'zero'"),
        ("sentinel://h1/1;sentinel://h2/2", "give different db"),
        ("sentinel://:a@h1;sentinel://:b@h2", "give different credentials"),
        ("sentinel://h1?master_name=a;sentinel://h2?master_name=b", "give different master_name"),
        ("sentinel://h1?ssl=true", r"has options \['ssl'\]; the only one read is master_name"),
        ("sentinel://h1?master_name=", "must give master_name once, not empty"),
        ("sentinel://:pw@/0", "part 1 of the sentinel URL names no host"),
        (" ; ", "names no sentinel"),
    ],
)
def test_a_malformed_sentinel_url_is_refused_with_what_is_wrong(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_sentinel_url(url)


def test_settings_refuse_a_malformed_sentinel_url_at_the_edge_without_its_password() -> None:
    with pytest.raises(ValidationError, match="give different db") as caught:
        ProducerSettings(redis_url="sentinel://:hunter2hunter2@h1/1;sentinel://h2/2?master_name=m")

    assert "hunter2hunter2" not in str(caught.value)


def test_settings_read_the_master_name_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIGGER_REDIS_URL", THREE)
    monkeypatch.setenv("TRIGGER_REDIS_MASTER_NAME", "mymaster")

    address = ProducerSettings().sentinel()

    assert address is not None and address.master_name == "mymaster"
    assert ProducerSettings(redis_url="redis://127.0.0.1:6379/0").sentinel() is None


def test_every_password_of_a_sentinel_url_is_redacted() -> None:
    url = "sentinel://:one@h1:26379/0;sentinel://u:two@h2:26379/0"

    assert redacted_url(url) == "sentinel://:***@h1:26379/0;sentinel://u:***@h2:26379/0"
    assert is_sentinel_url(" SENTINEL://h1") and not is_sentinel_url("redis://h1")


def test_the_sync_client_finds_the_primary_through_the_sentinels_with_bounded_timeouts() -> None:
    client = connect(ProducerSettings(redis_url=THREE, redis_master_name="mymaster", enqueue_timeout=0.3))

    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool) and pool.service_name == "mymaster"
    assert (pool.connection_kwargs["db"], pool.connection_kwargs["password"]) == (2, "s3cret")
    assert pool.connection_kwargs["socket_timeout"] == 0.3
    sentinels = pool.sentinel_manager.sentinels
    assert [s.connection_pool.connection_kwargs["port"] for s in sentinels] == [26379, 26380, 26379]
    assert all(s.connection_pool.connection_kwargs["socket_connect_timeout"] == 0.5 for s in sentinels)
    assert all(s.connection_pool.connection_kwargs.get("password") is None for s in sentinels)


def test_the_async_client_finds_the_primary_through_the_sentinels_with_bounded_timeouts() -> None:
    async def pool() -> AsyncSentinelPool:
        client = connect_async(ProducerSettings(redis_url=THREE, redis_master_name="mymaster", enqueue_timeout=0.3))
        return client.connection_pool

    found = asyncio.run(pool())
    assert isinstance(found, AsyncSentinelPool) and found.service_name == "mymaster"
    assert (found.connection_kwargs["db"], found.connection_kwargs["socket_timeout"]) == (2, 0.3)


def test_the_worker_broker_is_the_safe_transport_over_sentinel_with_the_master_name() -> None:
    config = celery_config(WorkerSettings(redis_url=THREE, redis_master_name="mymaster"))

    assert config["broker_transport"] == "worker.transport:SentinelTransport"
    assert config["broker_transport_options"]["master_name"] == "mymaster"
    assert config["broker_url"].count("sentinel://:s3cret@") == 3 and config["broker_use_ssl"] is None
    assert config["broker_transport_options"]["visibility_timeout"] == WorkerSettings().lease_timeout


def test_a_plain_url_keeps_the_plain_safe_transport() -> None:
    config = celery_config(WorkerSettings(redis_url="redis://127.0.0.1:6379/0"))

    assert config["broker_transport"] == "worker.transport:Transport"
    assert "master_name" not in config["broker_transport_options"]


def test_the_sentinel_channel_reads_safely_and_takes_both_sets_of_options() -> None:
    channel = transport.SentinelChannel

    assert channel._brpop_read is transport.Channel._brpop_read and channel._get is transport.Channel._get
    assert channel._get_pool is transport.kombu_redis.SentinelChannel._get_pool
    assert {"master_name", "max_message_bytes", "on_arrival", "visibility_timeout"} <= set(
        channel.from_transport_options
    )
    assert len(channel.from_transport_options) == len(set(channel.from_transport_options))


def test_the_worker_app_connects_through_every_sentinel_with_its_credentials() -> None:
    app = create_app(WorkerSettings(redis_url=THREE, redis_master_name="mymaster"))

    with app.connection_for_write() as connection:
        assert connection.get_transport_cls() is transport.SentinelTransport
        assert [url.split("@")[0] for url in connection.alt] == ["sentinel://:s3cret"] * 3
        assert (connection.password, connection.virtual_host) == ("s3cret", "2")
