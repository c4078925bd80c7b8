"""Issue 8, part 2: a real worker publishes its catalog at start; `trigger send --check` refuses early, with paths."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from producers import keys
from producers.catalog import CATALOG_VERSION, Catalog
from producers.state import Status
from tests.integration.conftest import REPO, Stack
from tests.support.pipelines import TEST_PIPELINES

BAD_REQUEST = ("-p", "model_type=linear", "-s", "train_model.n_estimators=5000", "-s", "tune_model.depth=3")
BAD_PATHS = ["parameters.model_type", "steps.train_model.parameters.n_estimators", "steps.tune_model"]


def _cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    """`trigger ARGS` as a user runs it, against the stack's Redis and queue."""
    command = [sys.executable, "-m", "producers.cli", *args]
    return subprocess.run(command, cwd=REPO, env=stack.env(), capture_output=True, text=True, check=False)


def _catalog(stack: Stack) -> Catalog:
    raw = stack.redis.get(keys.catalog_key(stack.queue))
    assert raw is not None, f"no catalog published:\n{stack.logs()}"
    return Catalog.model_validate_json(raw)


def _catalog_with_templates(stack: Stack, timeout: float = 120) -> Catalog:
    """The catalog once the worker's main process has listed the templates (or the last one at the timeout)."""
    deadline = time.monotonic() + timeout
    catalog = _catalog(stack)
    while not catalog.templates.known and time.monotonic() < deadline:
        time.sleep(0.2)
        catalog = _catalog(stack)
    return catalog


def _problem_paths(stderr: str) -> list[str]:
    return sorted(line.strip().split(": ")[0] for line in stderr.splitlines() if line.startswith("  "))


def _requests(stack: Stack) -> int:
    return len(stack.redis.keys(keys.state_key("*")))


def test_the_worker_publishes_at_start_and_send_check_refuses_a_bad_request(stack: Stack) -> None:
    stack.start_worker()
    catalog = _catalog(stack)
    assert catalog.catalog_version == CATALOG_VERSION and catalog.queue == stack.queue
    assert catalog.names() == sorted(path.split(":")[1] for path in TEST_PIPELINES.split(","))
    assert stack.redis.ttl(keys.catalog_key(stack.queue)) > 0

    known = _requests(stack)
    refused = _cli(stack, "send", "training_pipeline", *BAD_REQUEST, "--check")
    assert refused.returncode == 1, refused.stderr
    assert "nothing was enqueued" in refused.stderr and "Traceback" not in refused.stderr
    assert _problem_paths(refused.stderr) == BAD_PATHS
    assert _requests(stack) == known and stack.redis.llen(stack.queue) == 0

    sent = _cli(stack, "send", "training_pipeline", "-s", "train_model.n_estimators=10", "--check", "--json")
    assert sent.returncode == 0, sent.stderr
    printed = json.loads(sent.stdout)
    assert printed["check"] == "passed"
    assert stack.wait(printed["request_id"]).status is Status.SUCCEEDED, stack.logs()

    unchecked = _cli(stack, "send", "training_pipeline", *BAD_REQUEST)  # the worker is the authority
    assert unchecked.returncode == 0, unchecked.stderr
    state = stack.wait(unchecked.stdout.strip())
    assert state.status is Status.REJECTED and state.error is not None
    assert sorted(detail["path"] for detail in state.error.details) == BAD_PATHS


def test_templates_reach_the_catalog_and_a_locked_override_is_refused_early(stack: Stack) -> None:
    created = _cli(
        stack,
        "templates",
        "create",
        "nightly",
        "--pipeline",
        "training_pipeline",
        "-s",
        "train_model.n_estimators=30",
        "--allow",
        "steps.load_data.parameters.data_url",
    )
    assert created.returncode == 0, created.stderr
    assert stack.redis.get(keys.CATALOG_TEMPLATE_CHANGES_KEY) == b"1"
    stack.start_worker(pool="prefork", TRIGGER_PIPELINES="pipelines.training:training_pipeline")

    catalog = _catalog_with_templates(stack)
    assert catalog.templates.known, catalog.templates.reason
    [nightly] = catalog.templates.items
    assert (nightly.ref, nightly.allow) == ("nightly@1", ["steps.load_data.parameters.data_url"])
    assert "steps.train_model.parameters.n_estimators" in nightly.locked

    locked = _cli(stack, "send", "--template", "nightly", "-s", "train_model.n_estimators=99", "--check")
    assert locked.returncode == 1, locked.stderr
    assert _problem_paths(locked.stderr) == ["steps.train_model.parameters.n_estimators"]
    assert "is locked by template nightly@1" in locked.stderr

    allowed = _cli(
        stack, "send", "--template", "nightly", "-s", "load_data.data_url=s3://b/new.csv", "--check", "--json"
    )
    assert allowed.returncode == 0, allowed.stderr
    printed = json.loads(allowed.stdout)
    assert printed["check"] == "passed"
    state = stack.wait(printed["request_id"])
    assert state.status is Status.SUCCEEDED and state.template_ref == "nightly@1", stack.logs()
