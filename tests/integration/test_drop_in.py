"""The callers people already have, against a real gateway and a real worker: the tutorial's curl bodies
verbatim, ZenML's run-template REST body against a template made with `trigger templates create`, and
ZenML's `trigger_pipeline` keywords through `producers.zenml_compat`."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from producers.signing import sign
from producers.state import Status
from producers.zenml_compat import trigger_pipeline
from tests.integration.conftest import REPO, Stack, zenml_runs
from tests.support.gateway import start_gateway, stop
from tests.support.tutorial import TUTORIAL_TEMPLATE, TUTORIAL_TRIGGER, ZENML_REST

API_KEY = "your-secure-api-key-here-0123456789abcdef"  # the tutorial's X-API-Key, as a key of the keys file
NARROW_KEY = "a-webhook-key-that-may-only-run-training-0123456789"
JSON = {"accept": "application/json", "Content-Type": "application/json"}


@pytest.fixture
def gateway(stack: Stack, tmp_path: Path) -> Iterator[str]:
    keys = tmp_path / "keys.yaml"
    keys.write_text(
        f'keys:\n  - id: tutorial\n    secrets: ["{API_KEY}"]\n    pipelines: ["*"]\n    templates: ["*"]\n'
        f'  - id: narrow\n    secrets: ["{NARROW_KEY}"]\n    pipelines: [training_pipeline]\n'
    )
    process, base = start_gateway(stack.env(TRIGGER_KEYS_FILE=str(keys)), REPO, stack.log_dir / "gateway.log")
    try:
        yield base
    finally:
        stop(process)


def create_template(stack: Stack) -> dict[str, str]:
    args = ["templates", "create", "tutorial", "--pipeline", "training_pipeline", "--json"]
    args += ["--allow", "steps.load_data.parameters.data_url", "--allow", "steps.train_model.parameters.model_type"]
    out = subprocess.run(
        [sys.executable, "-m", "producers.cli", *args], cwd=REPO, env=stack.env(), capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_every_existing_caller_runs_unchanged_through_the_queue(stack: Stack, gateway: str) -> None:
    template = create_template(stack)
    stack.start_worker()
    template_body = TUTORIAL_TEMPLATE.replace("YOUR_TEMPLATE_ID", template["snapshot_id"])
    with httpx.Client(base_url=gateway, timeout=10) as http:
        tutorial = http.post("/trigger", content=TUTORIAL_TRIGGER, headers={**JSON, "X-API-Key": API_KEY})
        from_template = http.post("/trigger-template", content=template_body, headers={**JSON, "X-API-Key": API_KEY})
        rest = http.post(
            "/api/v1/run_templates/tutorial/runs",
            content=ZENML_REST,
            headers={**JSON, "Authorization": f"Bearer {API_KEY}"},
        )
        broken = http.post(
            "/trigger",
            content=TUTORIAL_TRIGGER.replace('"model_type"', '"model_kind"'),
            headers={**JSON, "X-API-Key": API_KEY},
        )
        no_key = http.post("/trigger", content=TUTORIAL_TRIGGER, headers=JSON)
        narrow = {"Authorization": f"Bearer {NARROW_KEY}"}
        out_of_scope = http.post("/v1/triggers", json={"pipeline_name": "failing_pipeline"}, headers=narrow)
        body = json.dumps({"pipeline_name": "training_pipeline", "source": "webhook"}).encode()
        webhook = http.post("/v1/triggers", content=body, headers={**JSON, "X-Trigger-Signature": webhook_sig(body)})
        tampered = http.post(
            "/v1/triggers",
            content=body.replace(b"webhook", b"hook"),
            headers={**JSON, "X-Trigger-Signature": webhook_sig(body)},
        )
    python = trigger_pipeline(
        template_id=template["snapshot_id"], run_configuration=json.loads(ZENML_REST), client=stack.client
    )

    answers = [tutorial, from_template, rest]
    assert [a.status_code for a in answers] == [202, 202, 202], [a.text for a in answers]
    assert all(a.json()["status"] == "success" and a.json()["queued"] for a in answers)
    ids = [a.json()["request_id"] for a in answers] + [python.request_id]
    states = stack.wait_all(ids, 300)
    assert [states[i].status for i in ids] == [Status.SUCCEEDED] * 4, stack.logs()
    assert [states[i].source for i in ids] == ["tutorial-api", "tutorial-api", "zenml-rest", "zenml-compat"]
    runs = {str(run.id): run for run in zenml_runs("training_pipeline")}
    trained = runs[states[ids[2]].run_id].steps["train_model"].config.parameters
    assert trained["model_type"] == "gradient_boosting"
    assert broken.status_code == 422
    assert [p["path"] for p in broken.json()["problems"]] == ["steps.train_model.parameters.model_kind"]
    assert no_key.status_code == 401 and tampered.status_code == 401
    assert out_of_scope.status_code == 403 and out_of_scope.json()["error"] == "forbidden"
    assert webhook.status_code == 202, webhook.text
    assert stack.wait(webhook.json()["request_id"], 180).status is Status.SUCCEEDED


def webhook_sig(body: bytes) -> str:
    """What a webhook sender computes: HMAC over its key id, the time and the exact body."""
    return sign(body, "narrow", NARROW_KEY.encode())
