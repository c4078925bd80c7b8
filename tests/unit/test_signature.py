"""Reading the training pipeline's real signature: parameters, steps, and which argument feeds which step."""

from __future__ import annotations

from typing import Any

import pytest

from pipelines.training import training_pipeline
from worker.signature import PipelineSignature, annotation_name, inspect_pipeline


@pytest.fixture(scope="module")
def signature() -> PipelineSignature:
    return inspect_pipeline(training_pipeline)


def test_pipeline_parameters(signature: PipelineSignature) -> None:
    assert signature.name == "training_pipeline"
    assert set(signature.parameters) == {"data_url", "model_type"}
    assert signature.parameters["model_type"].default == "random_forest"
    assert not signature.parameters["data_url"].required


def test_steps_in_the_pipeline(signature: PipelineSignature) -> None:
    assert set(signature.steps) == {"load_data", "preprocess", "train_model", "evaluate"}


def test_pipeline_arguments_feed_step_parameters(signature: PipelineSignature) -> None:
    assert signature.steps["train_model"].fed_by == {"model_type": "model_type"}
    assert signature.steps["load_data"].fed_by == {"data_url": "data_url"}
    assert signature.feeders("model_type") == ["train_model.model_type"]
    assert signature.feeders("data_url") == ["load_data.data_url"]


def test_artifact_inputs_name_their_producer(signature: PipelineSignature) -> None:
    train = signature.steps["train_model"]
    assert train.artifact_inputs == {"datasets": "preprocess"}
    assert "datasets" not in train.parameters
    assert signature.steps["evaluate"].artifact_inputs == {"datasets": "preprocess", "model": "train_model"}
    assert signature.steps["preprocess"].artifact_inputs == {"data": "load_data"}


def test_step_parameters_and_defaults(signature: PipelineSignature) -> None:
    train = signature.steps["train_model"]
    assert set(train.configurable) == {"model_type", "n_estimators", "random_state"}
    n_estimators = train.parameters["n_estimators"]
    assert n_estimators.annotation is int
    assert n_estimators.default == 100
    assert not n_estimators.required
    assert not train.fixed and not train.derived


def test_literal_type_name_mentions_both_choices(signature: PipelineSignature) -> None:
    type_name = signature.steps["train_model"].parameters["model_type"].type_name
    assert "random_forest" in type_name
    assert "gradient_boosting" in type_name
    assert "typing." not in type_name


def test_describe_shows_feeding_and_artifacts(signature: PipelineSignature) -> None:
    described = signature.describe()
    train = next(step for step in described["steps"] if step["name"] == "train_model")
    by_name = {param["name"]: param for param in train["parameters"]}
    assert by_name["model_type"]["from_pipeline_parameter"] == "model_type"
    assert "from_pipeline_parameter" not in by_name["n_estimators"]
    assert by_name["n_estimators"]["default"] == 100
    assert train["artifact_inputs"] == {"datasets": "preprocess"}


@pytest.mark.parametrize(("annotation", "name"), [(int, "int"), (Any, "any"), (dict[str, int], "dict[str, int]")])
def test_annotation_name(annotation: Any, name: str) -> None:
    assert annotation_name(annotation) == name
