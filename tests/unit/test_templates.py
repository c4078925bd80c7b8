"""Run templates: refs, allowed paths, locking, merging, snapshots, the store, and the processor's template path."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from types import SimpleNamespace
from typing import Any

import pytest

from pipelines.training import training_pipeline
from producers.contract import TriggerRequest, encode_request, normalize_steps
from producers.state import RequestState, Status
from tests.unit.conftest import FakeRunner, FakeServer, FakeTemplates
from worker.errors import InvalidParameters, LockedOverride, RunSubmissionFailed, UnknownTemplate
from worker.processing import Delivery, Processor
from worker.runner import RunOutcome
from worker.settings import RetryOverride
from worker.signature import PipelineSignature, inspect_pipeline
from worker.templates import (
    EXTRA_KEY,
    TEMPLATE_TAG,
    Template,
    TemplateStore,
    allow_problems,
    check_locked,
    from_snapshot,
    locked_problems,
    merged,
    normalize_allow,
    parse_ref,
    split_run_config,
)
from worker.validation import plan_run

SOURCE = "pipelines.training.training_pipeline"


@pytest.fixture(scope="module")
def signature() -> PipelineSignature:
    return inspect_pipeline(training_pipeline)


def make_template(**fields: Any) -> Template:
    fields.setdefault("name", "nightly")
    fields.setdefault("version", 2)
    fields.setdefault("snapshot_id", "snap-2")
    fields.setdefault("pipeline_name", "training_pipeline")
    fields.setdefault("source", SOURCE)
    fields["allow"] = normalize_allow(fields.get("allow", ()))
    return Template(**fields)


def paths(problems: list[Any]) -> list[str]:
    return [p.path for p in problems]


# -- refs and allowed paths -----------------------------------------------------


class TestParseRef:
    @pytest.mark.parametrize(
        ("ref", "expected"),
        [
            ("nightly", ("nightly", None)),
            ("nightly@3", ("nightly", 3)),
            ("team/nightly.v2@10", ("team/nightly.v2", 10)),
        ],
    )
    def test_name_and_optional_version(self, ref: str, expected: tuple[str, int | None]) -> None:
        assert parse_ref(ref) == expected

    @pytest.mark.parametrize("ref", ["", "@3", "nightly@", "nightly@x", "a@b@1", "night ly", "nightly@-1"])
    def test_bad_refs_are_unknown_templates(self, ref: str) -> None:
        with pytest.raises(UnknownTemplate) as caught:
            parse_ref(ref)
        assert caught.value.details[0].path == "template"
        assert repr(ref) in caught.value.details[0].problem


def test_normalize_allow_prefixes_bare_names_and_keeps_full_paths() -> None:
    allowed = normalize_allow(["data_url", "parameters.model_type", "steps.load_data.parameters.seed"])
    assert allowed == frozenset({"parameters.data_url", "parameters.model_type", "steps.load_data.parameters.seed"})


class TestAllowProblems:
    @pytest.mark.parametrize(
        "path",
        [
            "model_type",
            "parameters.data_url",
            "steps.load_data.parameters.data_url",
            "steps.train_model.parameters.n_estimators",
        ],
    )
    def test_settable_paths_pass(self, signature: PipelineSignature, path: str) -> None:
        assert allow_problems(signature, [path]) == []

    @pytest.mark.parametrize(
        "path",
        [
            "steps.train_model.parameters.datasets",  # an artifact input
            "steps.nope.parameters.x",  # an unknown step
            "steps.train_model.parameters.nope",
            "parameters.nope",
            "steps.train_model.model_type",
        ],
    )
    def test_unsettable_paths_are_problems(self, signature: PipelineSignature, path: str) -> None:
        [problem] = allow_problems(signature, [path])
        assert problem.path == f"--allow {path}"
        assert "names no settable parameter" in problem.problem

    def test_every_bad_path_is_reported_at_once(self, signature: PipelineSignature) -> None:
        problems = allow_problems(signature, ["data_url", "nope", "steps.nope.parameters.x"])
        assert paths(problems) == ["--allow parameters.nope", "--allow steps.nope.parameters.x"]


class TestSplitRunConfig:
    def test_splits_parameters_step_parameters_and_the_rest(self) -> None:
        config = {
            "enable_cache": False,
            "parameters": {"model_type": "gradient_boosting"},
            "steps": {
                "train_model": {"parameters": {"n_estimators": 5}, "enable_cache": True},
                "load_data": {"parameters": {"data_url": "s3://b/x.csv"}},
            },
        }
        parameters, steps, rest = split_run_config(config)
        assert parameters == {"model_type": "gradient_boosting"}
        assert steps == {"train_model": {"n_estimators": 5}, "load_data": {"data_url": "s3://b/x.csv"}}
        assert rest == {"enable_cache": False, "steps": {"train_model": {"enable_cache": True}}}
        assert config["steps"]["train_model"] == {"parameters": {"n_estimators": 5}, "enable_cache": True}

    def test_empty_and_null_sections(self) -> None:
        assert split_run_config({}) == ({}, {}, {})
        assert split_run_config({"parameters": None, "steps": {"evaluate": None}}) == ({}, {"evaluate": {}}, {})


# -- locking and merging ------------------------------------------------------------


class TestLockedProblems:
    def test_allowed_paths_pass_with_any_value(self, signature: PipelineSignature) -> None:
        template = make_template(allow=["data_url", "steps.train_model.parameters.n_estimators"])
        problems = locked_problems(template, signature, {"data_url": "s3://new"}, {"train_model": {"n_estimators": 7}})
        assert problems == []

    def test_changing_a_locked_path_names_it(self, signature: PipelineSignature) -> None:
        template = make_template(
            parameters={"model_type": "gradient_boosting"}, steps={"train_model": {"n_estimators": 300}}
        )
        problems = locked_problems(
            template, signature, {"model_type": "random_forest"}, {"train_model": {"n_estimators": 5}}
        )
        assert paths(problems) == ["parameters.model_type", "steps.train_model.parameters.n_estimators"]
        assert all("locked by template nightly@2" in p.problem for p in problems)
        assert all("may override only: nothing" in p.problem for p in problems)

    def test_locked_message_lists_what_is_allowed(self, signature: PipelineSignature) -> None:
        template = make_template(allow=["data_url"])
        [problem] = locked_problems(template, signature, {"model_type": "gradient_boosting"}, {})
        assert problem.problem.endswith("may override only: parameters.data_url")

    def test_a_locked_path_set_to_the_pipeline_default_is_no_change(self, signature: PipelineSignature) -> None:
        template = make_template()  # sets neither random_state nor model_type: both run with their defaults
        assert (
            locked_problems(template, signature, {"model_type": "random_forest"}, {"train_model": {"random_state": 42}})
            == []
        )
        [problem] = locked_problems(template, signature, {}, {"train_model": {"random_state": 7}})
        assert problem.path == "steps.train_model.parameters.random_state"

    def test_setting_a_locked_path_to_the_templates_value_is_no_problem(self, signature: PipelineSignature) -> None:
        template = make_template(
            parameters={"model_type": "gradient_boosting"}, steps={"train_model": {"n_estimators": 300}}
        )
        problems = locked_problems(
            template, signature, {"model_type": "gradient_boosting"}, {"train_model": {"n_estimators": 300}}
        )
        assert problems == []

    def test_fed_step_path_is_allowed_through_its_pipeline_parameter(self, signature: PipelineSignature) -> None:
        template = make_template(allow=["model_type"], parameters={"model_type": "gradient_boosting"})
        assert locked_problems(template, signature, {}, {"train_model": {"model_type": "random_forest"}}) == []

    def test_fed_step_path_takes_its_template_value_from_the_pipeline_parameter(
        self, signature: PipelineSignature
    ) -> None:
        template = make_template(parameters={"model_type": "gradient_boosting"})
        same = {"train_model": {"model_type": "gradient_boosting"}}
        other = {"train_model": {"model_type": "random_forest"}}
        assert locked_problems(template, signature, {}, same) == []
        assert paths(locked_problems(template, signature, {}, other)) == ["steps.train_model.parameters.model_type"]

    def test_check_locked_raises_with_every_path(self, signature: PipelineSignature) -> None:
        template = make_template()
        with pytest.raises(LockedOverride) as caught:
            check_locked(template, signature, {"data_url": "x"}, {"train_model": {"n_estimators": 1}})
        assert paths(caught.value.details) == ["parameters.data_url", "steps.train_model.parameters.n_estimators"]


class TestMerged:
    def test_request_values_override_the_templates(self, signature: PipelineSignature) -> None:
        template = make_template(
            parameters={"data_url": "s3://old", "model_type": "gradient_boosting"},
            steps={"train_model": {"n_estimators": 300}, "load_data": {"seed": 1}},
        )
        parameters, steps = merged(template, signature, {"data_url": "s3://new"}, {"train_model": {"n_estimators": 5}})
        assert parameters == {"data_url": "s3://new", "model_type": "gradient_boosting"}
        assert steps == {"train_model": {"n_estimators": 5}, "load_data": {"seed": 1}}
        assert template.parameters == {"data_url": "s3://old", "model_type": "gradient_boosting"}
        assert template.steps["train_model"] == {"n_estimators": 300}

    def test_step_override_of_a_fed_parameter_replaces_the_templates_argument(
        self, signature: PipelineSignature
    ) -> None:
        template = make_template(
            parameters={"data_url": "s3://a", "model_type": "gradient_boosting"},
            steps={"train_model": {"n_estimators": 300}},
            allow=["model_type"],
        )
        request_steps = {"train_model": {"model_type": "random_forest"}}
        parameters, steps = merged(template, signature, {}, request_steps)
        assert parameters == {"data_url": "s3://a"}
        plan = plan_run(signature, parameters, steps)
        assert plan.parameters == {"data_url": "s3://a", "model_type": "random_forest"}
        assert plan.steps == {"train_model": {"n_estimators": 300}}
        # without the merge, the template's own argument would conflict with the override
        with pytest.raises(InvalidParameters, match=r"conflicts with parameters\.model_type"):
            plan_run(signature, dict(template.parameters), request_steps)

    def test_explicit_pipeline_parameter_is_kept_for_validation_to_judge(self, signature: PipelineSignature) -> None:
        template = make_template(parameters={"model_type": "gradient_boosting"})
        parameters, steps = merged(
            template, signature, {"model_type": "random_forest"}, {"train_model": {"model_type": "gradient_boosting"}}
        )
        assert parameters == {"model_type": "random_forest"}
        with pytest.raises(InvalidParameters, match=r"conflicts with parameters\.model_type"):
            plan_run(signature, parameters, steps)


# -- snapshots and the store ---------------------------------------------------------


def make_snapshot(
    snapshot_name: str | None = "nightly@2", meta: dict[str, Any] | None = None, **fields: Any
) -> SimpleNamespace:
    extra = {} if meta is None else {EXTRA_KEY: meta}
    defaults: dict[str, Any] = {
        "id": uuid.uuid4(),
        "name": snapshot_name,
        "description": "nightly retrain",
        "runnable": False,
        "created": datetime(2025, 1, 2, tzinfo=timezone.utc),
        "pipeline_configuration": SimpleNamespace(extra=extra, name="training_pipeline"),
        "pipeline_spec": SimpleNamespace(source=SimpleNamespace(import_path=SOURCE)),
    }
    return SimpleNamespace(**{**defaults, **fields})


def version_snapshot(name: str, version: int) -> SimpleNamespace:
    meta = {"name": name, "version": version, "parameters": {"model_type": "gradient_boosting"}, "allow": ["x"]}
    return make_snapshot(f"{name}@{version}", meta)


class TestFromSnapshot:
    def test_reads_the_template_back(self) -> None:
        meta = {
            "name": "nightly",
            "version": 2,
            "parameters": {"model_type": "gradient_boosting"},
            "steps": {"train_model": {"n_estimators": 300}},
            "allow": ["parameters.data_url"],
            "run_config": {"enable_cache": False},
        }
        snapshot = make_snapshot("nightly@2", meta, runnable=True)
        template = from_snapshot(snapshot)
        assert template.ref == "nightly@2"
        assert template.snapshot_id == str(snapshot.id)
        assert template.pipeline_name == "training_pipeline"
        assert template.source == SOURCE
        assert template.parameters == {"model_type": "gradient_boosting"}
        assert template.steps == {"train_model": {"n_estimators": 300}}
        assert template.allow == frozenset({"parameters.data_url"})
        assert template.run_config == {"enable_cache": False}
        assert template.description == "nightly retrain"
        assert template.runnable is True
        assert template.created == datetime(2025, 1, 2, tzinfo=timezone.utc)
        assert template.describe()["steps"] == {"train_model": {"parameters": {"n_estimators": 300}}}

    def test_minimal_meta_gets_empty_configuration(self) -> None:
        template = from_snapshot(make_snapshot("t@1", {"name": "t", "version": "1"}))
        assert (template.version, template.parameters, template.steps, template.allow) == (1, {}, {}, frozenset())

    @pytest.mark.parametrize("extra", [None, {}, {"other": 1}, {EXTRA_KEY: "not a dict"}])
    def test_snapshot_that_is_no_template_is_unknown(self, extra: Any) -> None:
        snapshot = make_snapshot("plain-snapshot")
        snapshot.pipeline_configuration.extra = extra
        with pytest.raises(UnknownTemplate, match="plain-snapshot was not created as a trigger template"):
            from_snapshot(snapshot)


class FakeClient:
    """The slice of `zenml.client.Client` that `TemplateStore` uses."""

    def __init__(self, *snapshots: SimpleNamespace) -> None:
        self.snapshots = list(snapshots)
        self.list_calls: list[dict[str, Any]] = []
        self.deleted: list[str] = []

    def list_snapshots(self, **kwargs: Any) -> list[SimpleNamespace]:
        self.list_calls.append(kwargs)
        return list(self.snapshots)

    def get_snapshot(self, snapshot_id: str, allow_prefix_match: bool = True) -> SimpleNamespace:
        for snapshot in self.snapshots:
            if str(snapshot.id) == snapshot_id:
                return snapshot
        raise KeyError(snapshot_id)

    def delete_snapshot(self, snapshot_id: str) -> None:
        self.deleted.append(snapshot_id)


@pytest.fixture
def client() -> FakeClient:
    return FakeClient(
        version_snapshot("nightly", 2),
        version_snapshot("nightly", 1),
        version_snapshot("nightly", 3),
        version_snapshot("nightly-old", 1),
        make_snapshot("nightly@x"),  # no template meta: reading it would raise
    )


@pytest.fixture
def store(client: FakeClient) -> TemplateStore:
    return TemplateStore(client_factory=lambda: client)


class TestTemplateStore:
    def test_versions_are_sorted_and_ignore_lookalike_names(self, store: TemplateStore, client: FakeClient) -> None:
        assert [t.ref for t in store.versions("nightly")] == ["nightly@1", "nightly@2", "nightly@3"]
        [call] = client.list_calls
        assert call["name"] == "startswith:nightly@"
        assert call["tags"] == [TEMPLATE_TAG]

    def test_get_by_name_picks_the_highest_version(self, store: TemplateStore) -> None:
        assert store.get("nightly").ref == "nightly@3"

    def test_get_by_ref_picks_that_version(self, store: TemplateStore, client: FakeClient) -> None:
        template = store.get("nightly@1")
        assert template.version == 1
        assert template.snapshot_id == str(client.snapshots[1].id)

    def test_get_missing_version_lists_the_known_ones(self, store: TemplateStore) -> None:
        with pytest.raises(UnknownTemplate) as caught:
            store.get("nightly@9")
        [problem] = caught.value.details
        assert problem.path == "template"
        assert "'nightly@9' does not exist (versions: nightly@1, nightly@2, nightly@3)" in problem.problem

    def test_get_missing_name_says_none(self, store: TemplateStore) -> None:
        with pytest.raises(UnknownTemplate, match=r"versions: none"):
            store.get("weekly")

    def test_get_by_snapshot_id(self, store: TemplateStore, client: FakeClient) -> None:
        snapshot_id = str(client.snapshots[0].id)
        assert store.get(snapshot_id).ref == "nightly@2"
        with pytest.raises(UnknownTemplate, match="no snapshot with id"):
            store.get(str(uuid.uuid4()))

    def test_delete_name_deletes_every_version(self, store: TemplateStore, client: FakeClient) -> None:
        removed = store.delete("nightly")
        assert [t.ref for t in removed] == ["nightly@1", "nightly@2", "nightly@3"]
        assert client.deleted == [t.snapshot_id for t in removed]

    def test_delete_ref_deletes_one_version(self, store: TemplateStore, client: FakeClient) -> None:
        [removed] = store.delete("nightly@2")
        assert client.deleted == [str(client.snapshots[0].id)] == [removed.snapshot_id]

    def test_delete_missing_is_unknown_and_deletes_nothing(self, store: TemplateStore, client: FakeClient) -> None:
        with pytest.raises(UnknownTemplate):
            store.delete("nightly@9")
        assert client.deleted == []


# -- the processor's template path ---------------------------------------------------


def template_request(request_id: str, template: str = "nightly", **fields: Any) -> Delivery:
    fields["steps"] = normalize_steps(fields.get("steps"))
    request = TriggerRequest(request_id=request_id, template=template, **fields)
    return Delivery(raw=encode_request(request), task_id=request_id)


def nightly(**fields: Any) -> Template:
    fields.setdefault("parameters", {"model_type": "gradient_boosting"})
    fields.setdefault("steps", {"train_model": {"n_estimators": 300}})
    fields.setdefault("allow", ["data_url"])
    fields.setdefault("run_config", {"enable_cache": False})
    return make_template(**fields)


@pytest.fixture
def build(make_services: Callable[..., Any]) -> Callable[..., Processor]:
    def processor(runner: FakeRunner, *templates: Template, server: FakeServer | None = None) -> Processor:
        return Processor(make_services(runner, templates=FakeTemplates(*templates), server=server or FakeServer()))

    return processor


def error_paths(state: RequestState) -> list[str]:
    assert state.error is not None
    return [d["path"] for d in state.error.details]


class TestProcessorTemplates:
    def test_template_runs_locally_with_merged_parameters_and_is_linked(
        self, build: Callable[..., Processor], runner: FakeRunner
    ) -> None:
        processor = build(runner, nightly())
        state = processor.handle(template_request("t-1", steps={"load_data": {"data_url": "s3://b/new.csv"}}))
        assert state.status is Status.SUCCEEDED
        assert state.template_ref == "nightly@2"
        [(name, plan, run_name)] = runner.calls
        assert name == "training_pipeline"
        assert plan.parameters == {"model_type": "gradient_boosting", "data_url": "s3://b/new.csv"}
        assert plan.steps == {"train_model": {"n_estimators": 300}}
        assert run_name == "training_pipeline-t-1-1"
        assert runner.links == [("run-1", "nightly@2", "snap-2")]

    def test_template_run_config_reaches_the_runner(self, build: Callable[..., Processor]) -> None:
        seen: list[Any] = []

        class ConfigRunner(FakeRunner):
            def run(self, entry: Any, plan: Any, run_name: str, run_config: Any = None, **kwargs: Any) -> Any:
                seen.append(run_config)
                return super().run(entry, plan, run_name, run_config, **kwargs)

        build(ConfigRunner(), nightly()).handle(template_request("t-2", template="nightly@2"))
        assert seen == [{"enable_cache": False}]

    def test_locked_override_is_rejected_with_every_other_problem(
        self, build: Callable[..., Processor], runner: FakeRunner
    ) -> None:
        processor = build(runner, nightly())
        steps = {"train_model": {"n_estimators": 5}, "nope": {"x": 1}, "load_data": {"data_url": 5}}
        state = processor.handle(template_request("t-3", steps=steps))
        assert state.status is Status.REJECTED
        assert state.error is not None
        assert state.error.type == "LockedOverride"
        found = error_paths(state)
        assert "steps.train_model.parameters.n_estimators" in found  # locked
        assert "steps.nope" in found  # unknown step
        assert "steps.load_data.parameters.data_url" in found  # allowed, but not a string
        assert runner.calls == []
        assert runner.links == []

    def test_locked_override_alone_is_rejected(self, build: Callable[..., Processor], runner: FakeRunner) -> None:
        state = build(runner, nightly()).handle(template_request("t-3b", parameters={"model_type": "random_forest"}))
        assert state.status is Status.REJECTED
        assert state.error is not None
        assert state.error.type == "LockedOverride"
        assert error_paths(state) == ["parameters.model_type"]
        assert runner.calls == []

    def test_locked_path_set_to_the_templates_value_runs(
        self, build: Callable[..., Processor], runner: FakeRunner
    ) -> None:
        steps = {"train_model": {"n_estimators": 300, "model_type": "gradient_boosting"}}
        state = build(runner, nightly()).handle(template_request("t-3c", steps=steps))
        assert state.status is Status.SUCCEEDED
        [(_, plan, _)] = runner.calls
        assert plan.parameters == {"model_type": "gradient_boosting"}
        assert plan.steps == {"train_model": {"n_estimators": 300}}

    def test_invalid_allowed_override_alone_is_invalid_parameters(
        self, build: Callable[..., Processor], runner: FakeRunner
    ) -> None:
        state = build(runner, nightly()).handle(template_request("t-4", parameters={"data_url": 5}))
        assert state.status is Status.REJECTED
        assert state.error is not None
        assert state.error.type == "InvalidParameters"
        assert error_paths(state) == ["parameters.data_url"]

    def test_template_of_an_unregistered_source_is_rejected(
        self, build: Callable[..., Processor], runner: FakeRunner
    ) -> None:
        processor = build(runner, nightly(source="elsewhere.evil_pipeline"))
        state = processor.handle(template_request("t-5"))
        assert state.status is Status.REJECTED
        assert state.error is not None
        assert state.error.type == "UnknownTemplate"
        assert "elsewhere.evil_pipeline" in state.error.details[0]["problem"]
        assert runner.calls == []

    def test_unknown_template_ref_is_rejected(self, build: Callable[..., Processor], runner: FakeRunner) -> None:
        state = build(runner, nightly()).handle(template_request("t-6", template="nightly@7"))
        assert state.status is Status.REJECTED
        assert state.error is not None
        assert state.error.type == "UnknownTemplate"
        assert state.template == "nightly@7"
        assert runner.calls == []

    def test_server_backend_submits_instead_of_running_locally(
        self, build: Callable[..., Processor], runner: FakeRunner
    ) -> None:
        outcome = RunOutcome(run_id="srv-1", run_name="training_pipeline-t-7-1", status="submitted")
        server = FakeServer(available=True, outcome=outcome)
        state = build(runner, nightly(), server=server).handle(template_request("t-7"))
        assert state.status is Status.SUBMITTED
        assert state.run_id == "srv-1"
        assert runner.calls == []
        assert runner.links == []
        assert server.calls == [
            (
                "nightly@2",
                {"model_type": "gradient_boosting"},
                {"train_model": {"n_estimators": 300}},
                "training_pipeline-t-7-1",
            )
        ]

    def test_server_submission_failure_is_retried(self, build: Callable[..., Processor], runner: FakeRunner) -> None:
        server = FakeServer(available=True, outcome=RunSubmissionFailed("server unavailable"))
        processor = build(runner, nightly(), server=server)
        state = processor.handle(template_request("t-8"))
        assert state.status is Status.RETRYING
        assert state.error is not None
        assert state.error.type == "RunSubmissionFailed"
        assert state.next_attempt_at is not None
        assert processor.s.schedule.pending() == 1
        assert runner.calls == []


def test_per_pipeline_retry_override_applies_to_template_runs(
    make_services: Callable[..., Any], runner: FakeRunner, worker_settings: Any
) -> None:
    settings = worker_settings.model_copy(
        update={"retry_overrides": {"training_pipeline": RetryOverride(max_attempts=1)}}
    )
    server = FakeServer(available=True, outcome=RunSubmissionFailed("server unavailable"))
    services = make_services(runner, settings=settings, templates=FakeTemplates(nightly()), server=server)
    state = Processor(services).handle(template_request("t-9"))
    assert state.status is Status.DEAD_LETTERED  # as a direct request to training_pipeline would be
