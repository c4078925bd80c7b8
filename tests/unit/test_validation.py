"""Validating a request against a pipeline's signature: every problem at once, each at its path."""

from __future__ import annotations

from typing import Any

import pytest
from zenml import pipeline, step

from pipelines.training import training_pipeline
from worker.errors import InvalidParameters
from worker.signature import PipelineSignature, inspect_pipeline
from worker.validation import RunPlan, plan_run


@step
def first_step(x: int, k: int = 1) -> int:
    return x + k


@step
def second_step(x: int, y: int = 3) -> int:
    return x * y


@step
def label_step(label: str) -> str:
    return label


@pipeline(enable_cache=False)
def shared_pipeline(x: int = 5, name: str = "demo") -> None:
    """`x` feeds two steps; `k` is a constant in the code; `label` is computed from `name`."""
    first_step(x, k=7)
    second_step(x)
    label_step(label=f"run-{name}")


@pipeline(enable_cache=False)
def required_pipeline(path: str) -> None:
    label_step(label=path)


@pytest.fixture(scope="module")
def training() -> PipelineSignature:
    return inspect_pipeline(training_pipeline)


@pytest.fixture(scope="module")
def shared() -> PipelineSignature:
    return inspect_pipeline(shared_pipeline)


def problems(signature: PipelineSignature, parameters: dict[str, Any], steps: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(InvalidParameters) as info:
        plan_run(signature, parameters, steps)
    found = {problem.path: problem.problem for problem in info.value.details}
    assert len(found) == len(info.value.details), "one problem per path"
    return found


class TestTrainingPipeline:
    def test_empty_request_runs_with_defaults(self, training: PipelineSignature) -> None:
        assert plan_run(training, {}, {}) == RunPlan("training_pipeline", {}, {})

    def test_step_override_goes_to_step_configuration(self, training: PipelineSignature) -> None:
        plan = plan_run(training, {}, {"train_model": {"n_estimators": 10}})
        assert plan.steps == {"train_model": {"n_estimators": 10}}
        assert plan.parameters == {}
        assert plan.step_configuration() == {"train_model": {"parameters": {"n_estimators": 10}}}

    def test_step_parameter_fed_by_pipeline_argument_maps_onto_it(self, training: PipelineSignature) -> None:
        plan = plan_run(training, {}, {"train_model": {"model_type": "gradient_boosting"}})
        assert plan.parameters == {"model_type": "gradient_boosting"}
        assert "train_model" not in plan.steps
        assert plan.step_configuration() == {}

    def test_load_data_url_maps_onto_pipeline_data_url(self, training: PipelineSignature) -> None:
        plan = plan_run(training, {}, {"load_data": {"data_url": "file:///tmp/x.csv", "n_samples": 50}})
        assert plan.parameters == {"data_url": "file:///tmp/x.csv"}
        assert plan.steps == {"load_data": {"n_samples": 50}}

    def test_same_value_at_both_levels_is_fine(self, training: PipelineSignature) -> None:
        plan = plan_run(
            training, {"model_type": "gradient_boosting"}, {"train_model": {"model_type": "gradient_boosting"}}
        )
        assert plan.parameters == {"model_type": "gradient_boosting"}

    def test_conflicting_levels_are_rejected(self, training: PipelineSignature) -> None:
        found = problems(
            training, {"model_type": "random_forest"}, {"train_model": {"model_type": "gradient_boosting"}}
        )
        assert list(found) == ["steps.train_model.parameters.model_type"]
        conflict = found["steps.train_model.parameters.model_type"]
        assert "conflicts with parameters.model_type='random_forest'" in conflict

    def test_every_problem_at_once_with_its_path(self, training: PipelineSignature) -> None:
        found = problems(
            training,
            {"nope": 1, "model_type": "xgboost"},
            {
                "ghost": {"a": 1},
                "train_model": {"datasets": {}, "n_estimators": "10", "max_depth": 3},
            },
        )
        assert set(found) == {
            "parameters.nope",
            "parameters.model_type",
            "steps.ghost",
            "steps.train_model.parameters.datasets",
            "steps.train_model.parameters.n_estimators",
            "steps.train_model.parameters.max_depth",
        }
        assert "unknown pipeline parameter 'nope'; expected one of: data_url, model_type" == found["parameters.nope"]
        assert "'random_forest'" in found["parameters.model_type"]
        assert "'gradient_boosting'" in found["parameters.model_type"]
        assert "unknown step 'ghost'" in found["steps.ghost"]
        assert "train_model" in found["steps.ghost"]
        assert "artifact input (produced by preprocess)" in found["steps.train_model.parameters.datasets"]
        assert "expected int" in found["steps.train_model.parameters.n_estimators"]
        assert "n_estimators" in found["steps.train_model.parameters.max_depth"]

    def test_error_message_lists_every_path(self, training: PipelineSignature) -> None:
        with pytest.raises(InvalidParameters) as info:
            plan_run(training, {"nope": 1}, {"train_model": {"n_estimators": "10"}})
        message = str(info.value)
        assert "parameters.nope" in message
        assert "steps.train_model.parameters.n_estimators" in message
        assert info.value.as_dict()["details"][0]["path"] == "parameters.nope"

    @pytest.mark.parametrize("value", ["10", 10.5, True, None, [10]])
    def test_strict_json_typing_rejects(self, training: PipelineSignature, value: Any) -> None:
        found = problems(training, {}, {"train_model": {"n_estimators": value}})
        assert list(found) == ["steps.train_model.parameters.n_estimators"]

    def test_strict_json_typing_accepts_an_int(self, training: PipelineSignature) -> None:
        assert plan_run(training, {}, {"train_model": {"n_estimators": 10}}).steps["train_model"] == {
            "n_estimators": 10
        }

    def test_float_parameter_accepts_an_int(self, training: PipelineSignature) -> None:
        assert plan_run(training, {}, {"preprocess": {"test_size": 1}}).steps == {"preprocess": {"test_size": 1}}

    def test_bad_literal_at_step_level(self, training: PipelineSignature) -> None:
        found = problems(training, {}, {"train_model": {"model_type": "xgboost"}})
        assert list(found) == ["steps.train_model.parameters.model_type"]
        assert "Literal['random_forest', 'gradient_boosting']" in found["steps.train_model.parameters.model_type"]


class TestWiring:
    def test_shared_pipeline_is_read_as_written(self, shared: PipelineSignature) -> None:
        assert sorted(shared.feeders("x")) == ["first_step.x", "second_step.x"]
        assert shared.steps["first_step"].fixed == frozenset({"k"})
        assert shared.steps["label_step"].derived == frozenset({"label"})

    def test_override_of_a_parameter_feeding_two_steps_is_ambiguous(self, shared: PipelineSignature) -> None:
        found = problems(shared, {}, {"first_step": {"x": 3}})
        assert list(found) == ["steps.first_step.parameters.x"]
        assert "also feeds second_step.x" in found["steps.first_step.parameters.x"]
        assert "set parameters.x instead" in found["steps.first_step.parameters.x"]

    def test_the_pipeline_parameter_itself_is_fine(self, shared: PipelineSignature) -> None:
        assert plan_run(shared, {"x": 3}, {"second_step": {"y": 4}}) == RunPlan(
            "shared_pipeline", {"x": 3}, {"second_step": {"y": 4}}
        )

    def test_constant_in_pipeline_code_is_fixed(self, shared: PipelineSignature) -> None:
        found = problems(shared, {}, {"first_step": {"k": 3}})
        assert "fixed value in the pipeline code" in found["steps.first_step.parameters.k"]

    def test_value_computed_from_a_pipeline_parameter_is_derived(self, shared: PipelineSignature) -> None:
        found = problems(shared, {}, {"label_step": {"label": "mine"}})
        assert "set those pipeline parameters instead" in found["steps.label_step.parameters.label"]

    def test_required_pipeline_parameter(self) -> None:
        signature = inspect_pipeline(required_pipeline)
        found = problems(signature, {}, {})
        assert list(found) == ["parameters.path"]
        assert "is required (str)" in found["parameters.path"]
        assert plan_run(signature, {"path": "/data"}, {}).parameters == {"path": "/data"}
