"""Idempotency claims: the first request with a key owns it, atomically."""

from __future__ import annotations

import fakeredis
import pytest

from producers import keys
from worker.idempotency import IdempotencyClaims


@pytest.fixture
def claims(fake_redis: fakeredis.FakeRedis) -> IdempotencyClaims:
    return IdempotencyClaims(fake_redis, window=3600)


def test_first_claim_wins(claims: IdempotencyClaims) -> None:
    assert claims.claim("drift:churn", "req-1") == "req-1"
    assert claims.claim("drift:churn", "req-2") == "req-1"


def test_the_owner_reclaiming_gets_itself(claims: IdempotencyClaims) -> None:
    claims.claim("k", "req-1")
    assert claims.claim("k", "req-1") == "req-1"


def test_keys_are_independent(claims: IdempotencyClaims) -> None:
    claims.claim("k1", "req-1")
    assert claims.claim("k2", "req-2") == "req-2"


def test_claim_expires_with_the_window(claims: IdempotencyClaims) -> None:
    claims.claim("k", "req-1")
    assert 0 < claims.client.ttl(keys.idempotency_key("k")) <= 3600


def test_release_only_by_the_owner(claims: IdempotencyClaims) -> None:
    claims.claim("k", "req-1")
    claims.release("k", "req-2")
    assert claims.claim("k", "req-3") == "req-1"
    claims.release("k", "req-1")
    assert claims.claim("k", "req-3") == "req-3"


def test_release_of_an_unclaimed_key_is_harmless(claims: IdempotencyClaims) -> None:
    claims.release("never", "req-1")
    assert claims.claim("never", "req-1") == "req-1"
