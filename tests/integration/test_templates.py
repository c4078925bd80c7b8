"""Issue 4: run templates as named ZenML snapshots, triggered from the queue with controlled overrides."""

from __future__ import annotations

import json
import subprocess
import sys

from producers.state import Status
from tests.integration.conftest import REPO, Stack


def _cli(stack: Stack, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "producers.cli", *args],
        cwd=REPO,
        env=stack.env(),
        capture_output=True,
        text=True,
        check=check,
    )


def _create(stack: Stack, *args: str) -> dict:  # type: ignore[type-arg]
    return json.loads(_cli(stack, "templates", "create", *args, "--json").stdout.strip().splitlines()[-1])


def test_templates_from_the_cli_to_a_zenml_run(stack: Stack) -> None:
    first = _create(
        stack,
        "nightly",
        "--pipeline",
        "training_pipeline",
        "-s",
        "train_model.n_estimators=30",
        "-p",
        "model_type=gradient_boosting",
        "--allow",
        "steps.load_data.parameters.data_url",
        "--description",
        "nightly retrain",
    )
    second = _create(
        stack,
        "nightly",
        "--pipeline",
        "training_pipeline",
        "-s",
        "train_model.n_estimators=12",
        "--allow",
        "model_type",
    )
    _create(stack, "slow", "--pipeline", "slow_pipeline", "-p", "seconds=0.1")
    listed = json.loads(_cli(stack, "templates", "list", "--json").stdout)
    assert {t["ref"] for t in listed} == {"nightly@1", "nightly@2", "slow@1"}
    from zenml.client import Client

    assert Client().get_snapshot("nightly@1").id.hex == first["snapshot_id"].replace("-", "")  # ZenML sees it too

    stack.start_worker(TRIGGER_PIPELINES="pipelines.training:training_pipeline")  # slow_pipeline not registered
    client = stack.client
    allowed = client.trigger(template="nightly@1", parameters={}, steps={"load_data": {"data_url": "s3://b/new.csv"}})
    latest = client.trigger(template="nightly", steps={"train_model": {"model_type": "random_forest"}})
    locked = client.trigger(
        template="nightly@1", steps={"train_model": {"model_type": "random_forest", "n_estimators": 99}}
    )
    unregistered = client.trigger(template="slow")
    unknown = client.trigger(template="no-such-template")
    by_id = client.trigger(template=second["snapshot_id"])
    states = stack.wait_all([allowed, latest, locked, unregistered, unknown, by_id])

    assert states[allowed].status is Status.SUCCEEDED, stack.logs()
    assert states[allowed].template_ref == "nightly@1"
    run = Client().get_pipeline_run(states[allowed].run_id)
    assert run.steps["load_data"].config.parameters["data_url"] == "s3://b/new.csv"
    assert run.steps["train_model"].config.parameters["model_type"] == "gradient_boosting"
    assert run.steps["train_model"].config.parameters["n_estimators"] == 30
    assert run.run_metadata["trigger_template"] == "nightly@1"

    assert states[latest].status is Status.SUCCEEDED and states[latest].template_ref == "nightly@2"
    latest_run = Client().get_pipeline_run(states[latest].run_id)
    assert latest_run.steps["train_model"].config.parameters["n_estimators"] == 12
    assert latest_run.steps["train_model"].config.parameters["model_type"] == "random_forest"
    assert states[by_id].status is Status.SUCCEEDED and states[by_id].template_ref == "nightly@2"

    assert states[locked].status is Status.REJECTED and states[locked].error.type == "LockedOverride"
    paths = {d["path"] for d in states[locked].error.details}
    assert paths == {"steps.train_model.parameters.model_type", "steps.train_model.parameters.n_estimators"}
    assert states[unregistered].status is Status.REJECTED and "does not register" in states[unregistered].error.message
    assert states[unknown].status is Status.REJECTED and states[unknown].error.type == "UnknownTemplate"

    deleted = _cli(stack, "templates", "delete", "nightly@1").stdout
    assert "nightly@1" in deleted
    assert {t["ref"] for t in json.loads(_cli(stack, "templates", "list", "--json").stdout)} == {"nightly@2", "slow@1"}
    bad = _cli(
        stack,
        "templates",
        "create",
        "x",
        "--pipeline",
        "training_pipeline",
        "--allow",
        "steps.nope.parameters.a",
        "-s",
        "train_model.n_estimators=many",
        check=False,
    )
    assert bad.returncode != 0 and "--allow steps.nope.parameters.a" in bad.stderr and "n_estimators" in bad.stderr
