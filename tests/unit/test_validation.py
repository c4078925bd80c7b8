"""Validating a request against a pipeline's signature: every problem at once, each at its path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from zenml import pipeline, step

from pipelines.training import training_pipeline
from worker.errors import InvalidParameters
from worker.settings import WorkerSettings
from worker.signature import ParameterSpec, PipelineSignature, inspect_pipeline
from worker.template_cli import templates
from worker.validation import RunPlan, check_value, plan_run, worker_context


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
        plan = plan_run(training, {}, {"load_data": {"data_url": "file:///tmp/x.csv", "n_samples": 500}})
        assert plan.parameters == {"data_url": "file:///tmp/x.csv"}
        assert plan.steps == {"load_data": {"n_samples": 500}}

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

    def test_float_parameter_accepts_an_int(self) -> None:
        assert check_value(ParameterSpec("ratio", float), 1, "ratio") == []

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


BOUNDS = [
    ("train_model", "n_estimators", 1, 1000),
    ("train_model", "random_state", 0, 2**32 - 1),
    ("load_data", "n_samples", 100, 10_000),
    ("load_data", "seed", 0, 2**32 - 1),
    ("preprocess", "test_size", 0.05, 0.5),
]


class TestBounds:
    def test_a_huge_n_estimators_is_rejected_naming_the_bound(self, training: PipelineSignature) -> None:
        found = problems(training, {}, {"train_model": {"n_estimators": 10**400}})
        problem = found["steps.train_model.parameters.n_estimators"]
        assert problem.startswith("Input should be less than or equal to 1000")
        assert "int in [1, 1000]" in problem

    @pytest.mark.parametrize(("step_name", "name", "low", "high"), BOUNDS)
    def test_values_past_either_bound_are_rejected(
        self, training: PipelineSignature, step_name: str, name: str, low: float, high: float
    ) -> None:
        step_gap = 1 if isinstance(low, int) else 0.01
        too_low = problems(training, {}, {step_name: {name: low - step_gap}})
        too_high = problems(training, {}, {step_name: {name: high + step_gap}})
        path = f"steps.{step_name}.parameters.{name}"
        assert f"greater than or equal to {low}" in too_low[path]
        assert f"less than or equal to {high}" in too_high[path]

    @pytest.mark.parametrize(("step_name", "name", "low", "high"), BOUNDS)
    def test_the_bounds_themselves_are_accepted(
        self, training: PipelineSignature, step_name: str, name: str, low: float, high: float
    ) -> None:
        for value in (low, high):
            assert plan_run(training, {}, {step_name: {name: value}}).steps == {step_name: {name: value}}

    def test_every_bound_is_reported_at_once(self, training: PipelineSignature) -> None:
        steps: dict[str, dict[str, Any]] = {}
        for step_name, name, _low, high in BOUNDS:
            steps.setdefault(step_name, {})[name] = high * 10
        assert len(problems(training, {}, steps)) == len(BOUNDS)

    def test_the_signature_keeps_the_bounds(self, training: PipelineSignature) -> None:
        assert training.steps["train_model"].parameters["n_estimators"].type_name == "int in [1, 1000]"
        assert training.steps["preprocess"].parameters["test_size"].type_name == "float in [0.05, 0.5]"


class TestDataUrlContext:
    """The worker's context (`{"data_root": ...}`) reaches `DataUrl` through `plan_run`, at both levels."""

    @pytest.fixture
    def csv(self, tmp_path: Path) -> Path:
        path = tmp_path / "root" / "data.csv"
        path.parent.mkdir()
        path.write_text("a,target\n1,0\n")
        return path

    def test_a_file_under_the_root_is_accepted(self, training: PipelineSignature, csv: Path) -> None:
        plan = plan_run(training, {"data_url": str(csv)}, {}, {"data_root": csv.parent})
        assert plan.parameters == {"data_url": str(csv)}

    def test_the_step_level_parameter_is_checked_too(self, training: PipelineSignature, csv: Path) -> None:
        with pytest.raises(InvalidParameters) as info:
            plan_run(training, {}, {"load_data": {"data_url": "/etc/hostname"}}, {"data_root": csv.parent})
        [problem] = info.value.details
        assert problem.path == "steps.load_data.parameters.data_url"
        assert problem.problem == f"/etc/hostname resolves outside the data root {csv.parent}"

    def test_without_a_data_root_local_paths_are_refused(self, training: PipelineSignature, csv: Path) -> None:
        settings = WorkerSettings()
        assert worker_context(settings) == {"data_root": None}
        with pytest.raises(InvalidParameters, match="the worker has no data root"):
            plan_run(training, {"data_url": str(csv)}, {}, worker_context(settings))

    def test_worker_context_carries_the_configured_root(self, tmp_path: Path) -> None:
        assert worker_context(WorkerSettings(data_root=tmp_path)) == {"data_root": tmp_path}

    def test_no_context_skips_the_root_check_but_not_the_scheme(self, training: PipelineSignature) -> None:
        assert plan_run(training, {"data_url": "/elsewhere/x.csv"}, {}).parameters == {"data_url": "/elsewhere/x.csv"}
        found = problems(training, {"data_url": "http://internal/x.csv"}, {})
        assert "scheme 'http' is not supported" in found["parameters.data_url"]

    def test_template_creation_validates_with_the_worker_context(
        self, csv: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("TRIGGER_DATA_ROOT", str(csv.parent))
        result = CliRunner().invoke(
            templates, ["create", "nightly", "--pipeline", "training_pipeline", "-p", "data_url=/etc/hostname"]
        )
        assert result.exit_code == 1
        expected = f"invalid template: parameters.data_url: /etc/hostname resolves outside the data root {csv.parent}"
        assert expected in result.output
