"""Bounded parameters and the data root, end to end: refused before a run exists, and the worker never hangs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from producers.state import RequestState, Status
from tests.integration.conftest import Stack, zenml_runs


def write_csv(path: Path, rows: int = 300) -> Path:
    """A CSV whose `target` is learnable from `a`."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=rows), "b": rng.normal(size=rows)})
    frame["target"] = (frame["a"] > 0).astype(int)
    frame.to_csv(path, index=False)
    return path


def problems(state: RequestState) -> dict[str, str]:
    assert state.status is Status.REJECTED, state
    assert state.error is not None and state.error.type == "InvalidParameters", state.error
    return {detail["path"]: detail["problem"] for detail in state.error.details}


def test_out_of_bound_values_are_rejected_naming_the_bound_and_never_run(stack: Stack) -> None:
    stack.start_worker()
    client = stack.client
    huge = client.trigger("training_pipeline", steps={"train_model": {"n_estimators": 10**400}})
    several = client.trigger(
        "training_pipeline",
        steps={"load_data": {"n_samples": 10**12, "seed": -1}, "preprocess": {"test_size": 0.99}},
    )

    assert problems(stack.wait(huge, 60)) == {
        "steps.train_model.parameters.n_estimators": "Input should be less than or equal to 1000 "
        "(expected int in [1, 1000])"
    }
    found = problems(stack.wait(several, 60))
    assert found["steps.load_data.parameters.n_samples"].startswith("Input should be less than or equal to 10000")
    assert found["steps.load_data.parameters.seed"].startswith("Input should be greater than or equal to 0")
    assert found["steps.preprocess.parameters.test_size"].startswith("Input should be less than or equal to 0.5")
    assert zenml_runs() == []


def test_without_a_data_root_local_paths_are_rejected(stack: Stack, tmp_path: Path) -> None:
    stack.start_worker()  # no TRIGGER_DATA_ROOT
    csv = write_csv(tmp_path / "x.csv")
    request_id = stack.client.trigger("training_pipeline", parameters={"data_url": str(csv)})

    found = problems(stack.wait(request_id, 60))
    assert found == {"parameters.data_url": "local paths are refused: the worker has no data root (TRIGGER_DATA_ROOT)"}
    assert zenml_runs() == []


def test_a_fifo_or_an_escape_is_rejected_at_once_and_the_worker_goes_on(stack: Stack, tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    os.mkfifo(root / "pipe.csv")
    (root / "escape.csv").symlink_to(write_csv(tmp_path / "outside.csv"))
    stack.start_worker(TRIGGER_DATA_ROOT=str(root))
    client = stack.client
    refused = {
        "is not a regular file": client.trigger("training_pipeline", parameters={"data_url": str(root / "pipe.csv")}),
        "resolves outside the data root": client.trigger(
            "training_pipeline", steps={"load_data": {"data_url": f"file://{root / 'escape.csv'}"}}
        ),
        "scheme 'http' is not supported": client.trigger(
            "training_pipeline", parameters={"data_url": "http://169.254.169.254/latest"}
        ),
    }
    after = client.trigger("training_pipeline", steps={"train_model": {"n_estimators": 5}})

    for problem, request_id in refused.items():
        state = stack.wait(request_id, 30)
        [(path, message)] = problems(state).items()
        assert path.endswith("data_url") and problem in message, (path, message)
    state = stack.wait(after, 180)
    assert state.status is Status.SUCCEEDED, stack.logs()
    assert [str(run.id) for run in zenml_runs()] == [state.run_id]


def test_a_csv_under_the_data_root_runs(stack: Stack, tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    csv = write_csv(root / "churn.csv")
    stack.start_worker(TRIGGER_DATA_ROOT=str(root))

    request_id = stack.client.trigger(
        "training_pipeline",
        parameters={"data_url": f"file://{csv}"},
        steps={"train_model": {"n_estimators": 1000, "model_type": "gradient_boosting"}},
    )
    state = stack.wait(request_id, 240)

    assert state.status is Status.SUCCEEDED, stack.logs()
    assert state.metrics is not None and state.metrics["accuracy"] > 0.9  # the CSV was read, not simulated
    from zenml.client import Client

    run = Client().get_pipeline_run(state.run_id)
    assert run.steps["load_data"].config.parameters["data_url"] == f"file://{csv}"
    assert run.steps["train_model"].config.parameters["n_estimators"] == 1000
