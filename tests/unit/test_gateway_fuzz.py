"""Fuzz the gateway from its own OpenAPI spec with schemathesis: whatever the input, never a 500."""

from __future__ import annotations

import fakeredis
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from producers import AsyncTriggerClient, ProducerSettings
from producers.gateway import create_app

app = create_app(client=AsyncTriggerClient(fakeredis.FakeAsyncRedis(), ProducerSettings(queue="gw-fuzz")))
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@schema.parametrize()
@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_makes_the_gateway_answer_500(case: schemathesis.Case) -> None:
    response = case.call()
    case.validate_response(response, checks=[not_a_server_error])
    assert response.status_code < 500 or response.status_code == 503
