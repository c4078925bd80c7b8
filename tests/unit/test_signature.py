"""Reading the training pipeline's real signature: parameters, steps, and which argument feeds which step."""

from __future__ import annotations

import typing
from typing import Annotated, Any

import annotated_types
import pytest
from pydantic import AfterValidator, Field

from pipelines.data import check_data_url
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
    assert typing.get_origin(n_estimators.annotation) is Annotated
    assert typing.get_args(n_estimators.annotation)[0] is int
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


def test_annotated_metadata_is_kept_so_validation_sees_the_bounds(signature: PipelineSignature) -> None:
    annotation = signature.steps["load_data"].parameters["n_samples"].annotation
    metadata = [item for entry in typing.get_args(annotation)[1:] for item in entry.metadata]
    assert metadata == [annotated_types.Ge(100), annotated_types.Le(10_000)]
    data_url = signature.parameters["data_url"].annotation
    assert AfterValidator(check_data_url) in typing.get_args(data_url)


@pytest.mark.parametrize(
    ("annotation", "name"),
    [
        (Annotated[int, Field(ge=1, le=1000)], "int in [1, 1000]"),
        (Annotated[float, Field(gt=0, lt=1)], "float in (0, 1)"),
        (Annotated[int, Field(ge=0)], "int >= 0"),
        (Annotated[float, annotated_types.Lt(5)], "float < 5"),
        (Annotated[int, annotated_types.Interval(gt=0, le=9)], "int in (0, 9]"),
        (Annotated[str, AfterValidator(check_data_url)], "str checked by check_data_url"),
        (Annotated[typing.Literal["a", "b"], Field(description="no bounds")], "Literal['a', 'b']"),
    ],
)
def test_annotated_names_show_bounds_and_validators(annotation: Any, name: str) -> None:
    assert annotation_name(annotation) == name


def test_pipelines_listing_shows_the_bounds(signature: PipelineSignature) -> None:
    train = next(step for step in signature.describe()["steps"] if step["name"] == "train_model")
    by_name = {param["name"]: param for param in train["parameters"]}
    assert by_name["n_estimators"]["type"] == "int in [1, 1000]"
    assert by_name["random_state"]["type"] == f"int in [0, {2**32 - 1}]"
