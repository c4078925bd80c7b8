"""The catalog: the worker publishes what its pipelines accept; producers check against it, at the worker's paths."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from functools import cache
from typing import Annotated, Any, Literal

import fakeredis
import pytest
import redis
from click.testing import CliRunner, Result
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from structlog.testing import capture_logs
from zenml import pipeline, step

from pipelines.registry import PipelineRegistry, RegisteredPipeline
from pipelines.training import training_pipeline
from producers import keys
from producers.catalog import CATALOG_VERSION, Catalog, CatalogReader
from producers.catalog_validation import SNAPSHOT_ID, TEMPLATE_REF, check_request, find_template
from producers.cli import cli
from producers.client import TriggerClient
from producers.contract import build_request, encode_request
from producers.errors import InvalidRequest
from producers.settings import ProducerSettings
from producers.state import Status
from tests.unit.conftest import FakeRunner, FakeTemplates
from worker import tasks
from worker.app import create_app
from worker.catalog import NOT_LISTED_YET, CatalogPublisher, CatalogThread, json_schema, parameter_info
from worker.processing import Delivery, Processor
from worker.settings import WorkerSettings
from worker.signature import ParameterSpec, PipelineSignature, inspect_pipeline
from worker.templates import REF_PATTERN, UUID_PATTERN, Template, normalize_allow
from worker.validation import plan_run, worker_context

# -- pipelines with every kind of parameter ----------------------------------------------------------


class Optimizer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Literal["adam", "sgd"]
    lr: Annotated[float, Field(gt=0, le=1)]
    betas: list[float] = [0.9, 0.999]


@step
def make_data(rows: Annotated[int, Field(ge=1, le=1000)] = 10, scale: int = 1) -> int:
    return rows * scale


@step
def fit(
    data: int,
    optimizer: Optimizer | None = None,
    epochs: Annotated[int, Field(ge=1, le=100)] = 10,
    weights: dict[str, float] | None = None,
    tags: list[str] | None = None,
    coerced: Annotated[int, BeforeValidator(int)] = 1,
    seed: int = 0,
) -> int:
    return data


@step
def shuffle(data: int, seed: int = 0) -> int:
    return data


@step
def label(text: str) -> str:
    return text


@pipeline(enable_cache=False)
def rich_pipeline(rows: int = 10, run_name: str = "demo", seed: int = 1) -> None:
    """`rows` feeds one step; `seed` feeds two; `scale` is fixed; `text` is computed from `run_name`."""
    data = make_data(rows, scale=2)
    fit(data, seed=seed)
    shuffle(data, seed=seed)
    label(text=f"run-{run_name}")


@pipeline(enable_cache=False)
def required_pipeline(path: str) -> None:
    label(text=path)


TRAINING_SOURCE = "pipelines.training:training_pipeline"
REGISTRY = PipelineRegistry(
    [
        RegisteredPipeline(training_pipeline.name, TRAINING_SOURCE, training_pipeline),
        RegisteredPipeline(rich_pipeline.name, "tests.unit.test_catalog:rich_pipeline", rich_pipeline),
        RegisteredPipeline(required_pipeline.name, "tests.unit.test_catalog:required_pipeline", required_pipeline),
    ]
)


@cache
def signature_by_name(name: str) -> PipelineSignature:
    entry = REGISTRY.get(name)
    assert entry is not None
    return inspect_pipeline(entry.pipeline)


def signature_of(entry: RegisteredPipeline) -> PipelineSignature:
    return signature_by_name(entry.name)


def template(version: int = 1, **fields: Any) -> Template:
    fields.setdefault("name", "nightly")
    fields.setdefault("snapshot_id", f"0000000{version}-0000-4000-8000-000000000000")
    fields.setdefault("pipeline_name", "training_pipeline")
    fields.setdefault("source", TRAINING_SOURCE)
    fields["allow"] = normalize_allow(fields.get("allow", ()))
    return Template(version=version, **fields)


NIGHTLY_1 = template(
    1,
    parameters={"model_type": "gradient_boosting"},
    steps={"train_model": {"n_estimators": 30}},
    allow=["steps.load_data.parameters.data_url"],
)
NIGHTLY_2 = template(2, steps={"train_model": {"n_estimators": 12}}, allow=["model_type"])
STRAY = template(1, name="stray", source="elsewhere.flows:retrain", pipeline_name="retrain")
TEMPLATES = [NIGHTLY_1, NIGHTLY_2, STRAY]


def settings(**overrides: Any) -> WorkerSettings:
    return WorkerSettings(redis_url="redis://unused.invalid:6379/0", **overrides)


def publisher(
    client: Any,
    templates: list[Template] | Callable[[], list[Template]] | None = None,
    registry: PipelineRegistry = REGISTRY,
    **overrides: Any,
) -> CatalogPublisher:
    lister = (lambda: list(templates)) if isinstance(templates, list) else templates
    return CatalogPublisher(client, settings(**overrides), registry, signature_of, lister)


def stored(client: Any, queue: str = keys.DEFAULT_QUEUE) -> dict[str, Any]:
    raw = client.get(keys.catalog_key(queue))
    assert raw is not None
    return json.loads(raw)


@pytest.fixture
def client(fake_redis: fakeredis.FakeRedis) -> TriggerClient:
    return TriggerClient(fake_redis, ProducerSettings())


@pytest.fixture
def published(fake_redis: fakeredis.FakeRedis) -> Catalog:
    return publisher(fake_redis, TEMPLATES).publish()


def request(**fields: Any) -> Any:
    fields.setdefault("source", "test")
    return build_request(**fields)


def catalog_paths(client: TriggerClient, **fields: Any) -> list[str]:
    result = client.check(request(**fields))
    assert result.skipped is None, result.skipped
    return sorted(problem.path for problem in result.problems)


def worker_paths(pipeline_name: str, parameters: dict[str, Any], steps: dict[str, Any]) -> list[str]:
    """Paths the worker's own validator reports for the same request."""
    built = request(pipeline_name=pipeline_name, parameters=parameters, steps=steps)
    context = worker_context(settings())
    try:
        plan_run(signature_by_name(pipeline_name), dict(built.parameters), built.step_parameters(), context)
    except InvalidRequest as exc:
        return sorted(problem.path for problem in exc.details)
    return []


# -- publishing -----------------------------------------------------------------------------------------


class TestPublishing:
    def test_one_document_under_the_queues_key_expiring_when_stale(self, fake_redis: fakeredis.FakeRedis) -> None:
        catalog = publisher(fake_redis, TEMPLATES, queue="q1", catalog_interval=30).publish()
        document = stored(fake_redis, "q1")
        assert document["catalog_version"] == CATALOG_VERSION
        assert document["content_hash"] == catalog.content_hash
        assert document["content_hash"].startswith("sha256:")
        assert document["queue"] == "q1" and document["stale_after"] == 300
        assert 290 < fake_redis.ttl(keys.catalog_key("q1")) <= 300
        assert [p["name"] for p in document["pipelines"]] == REGISTRY.names()
        assert fake_redis.get(keys.catalog_key(keys.DEFAULT_QUEUE)) is None

    def test_types_schemas_and_defaults_come_from_the_signature(self, published: Catalog) -> None:
        training = published.pipeline("training_pipeline")
        assert training is not None
        model_type = training.parameter("model_type")
        assert model_type is not None and model_type.default == "random_forest" and not model_type.required
        assert model_type.json_schema == {"enum": ["random_forest", "gradient_boosting"], "type": "string"}
        train = training.step("train_model")
        assert train is not None
        n_estimators = train.parameter("n_estimators")
        assert n_estimators is not None and n_estimators.type == "int in [1, 1000]"
        assert n_estimators.json_schema == {"type": "integer", "minimum": 1, "maximum": 1000}
        assert train.artifact_inputs == {"datasets": "preprocess"}

    def test_the_step_parameter_mapping_and_what_a_request_may_not_set(self, published: Catalog) -> None:
        rich = published.pipeline("rich_pipeline")
        assert rich is not None
        assert rich.feeder("make_data", "rows") == "rows"
        assert sorted(rich.feeders("seed")) == ["fit.seed", "shuffle.seed"]
        make = rich.step("make_data")
        label_step = rich.step("label")
        assert make is not None and make.fixed == ["scale"]
        assert label_step is not None and label_step.derived == ["text"]
        rows = make.parameter("rows")
        assert rows is not None and rows.default == 10  # a fed parameter shows its argument's default

    def test_a_validator_that_sees_raw_input_is_not_checked_early(self, published: Catalog) -> None:
        assert json_schema(Annotated[int, BeforeValidator(int)]) is None
        assert json_schema(int) == {"type": "integer"}
        fit_step = published.pipeline("rich_pipeline").step("fit")  # type: ignore[union-attr]
        assert fit_step.parameter("coerced").json_schema is None  # type: ignore[union-attr]

    def test_a_default_json_cannot_hold_is_marked_inexact(self) -> None:
        parameter = parameter_info(ParameterSpec("threshold", float, default=float("nan")))
        assert (parameter.default, parameter.default_exact) == ("nan", False)
        assert parameter_info(ParameterSpec("threshold", float, default=0.5)).default_exact is True

    def test_templates_with_allowed_and_locked_paths(self, published: Catalog) -> None:
        assert published.templates.known
        by_ref = {t.ref: t for t in published.templates.items}
        assert set(by_ref) == {"nightly@1", "nightly@2", "stray@1"}
        nightly = by_ref["nightly@1"]
        assert nightly.allow == ["steps.load_data.parameters.data_url"]
        assert "steps.load_data.parameters.data_url" not in nightly.locked
        assert "parameters.data_url" in nightly.locked and "steps.train_model.parameters.n_estimators" in nightly.locked
        assert "steps.train_model.parameters.model_type" not in by_ref["nightly@2"].locked  # fed by allowed model_type
        assert by_ref["stray@1"].registered is False and nightly.registered is True

    def test_an_unavailable_template_store_marks_templates_unknown(self, fake_redis: fakeredis.FakeRedis) -> None:
        def broken() -> list[Template]:
            raise RuntimeError("This method is not allowed when not connected to a ZenML Server")

        catalog = publisher(fake_redis, broken).publish()
        assert catalog.templates.known is False
        assert (
            catalog.templates.reason == "RuntimeError: This method is not allowed when not connected to a ZenML Server"
        )
        assert [p.name for p in catalog.pipelines] == REGISTRY.names()  # the rest is still published

    def test_start_publishes_pipelines_without_waiting_for_templates(self, fake_redis: fakeredis.FakeRedis) -> None:
        lister_calls: list[int] = []
        catalog = publisher(fake_redis, lambda: lister_calls.append(1) or []).publish(list_templates=False)
        assert lister_calls == []
        assert catalog.templates.known is False and catalog.templates.reason == NOT_LISTED_YET

    def test_the_thread_lists_templates_and_survives_a_failure(self, fake_redis: fakeredis.FakeRedis) -> None:
        thread = CatalogThread(publisher(fake_redis, TEMPLATES), interval=60)
        thread.publish()
        assert stored(fake_redis)["templates"]["known"] is True
        broken = CatalogThread(publisher(_BrokenRedis(), TEMPLATES), interval=60)
        with capture_logs() as logs:
            broken.publish()
        assert [entry["event"] for entry in logs] == ["trigger.catalog_failed"]

    def test_a_failed_listing_keeps_the_last_list_that_worked(self, fake_redis: fakeredis.FakeRedis) -> None:
        answers: list[Any] = [RuntimeError("store down"), [NIGHTLY_1], RuntimeError("database is locked")]

        def lister() -> list[Template]:
            answer = answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer

        catalog_publisher = publisher(fake_redis, lister)
        assert catalog_publisher.publish().templates.reason == "RuntimeError: store down"
        listed = catalog_publisher.publish().templates
        with capture_logs() as logs:
            again = catalog_publisher.publish().templates
        assert again == listed and [t.ref for t in again.items] == ["nightly@1"]
        assert logs == [
            {
                "event": "trigger.catalog_templates_unavailable",
                "reason": "RuntimeError: database is locked",
                "log_level": "warning",
            }
        ]

    def test_a_change_is_logged_once(self, fake_redis: fakeredis.FakeRedis) -> None:
        catalog_publisher = publisher(fake_redis, TEMPLATES)
        with capture_logs() as logs:
            catalog_publisher.publish()
            catalog_publisher.publish()
        assert [entry["event"] for entry in logs] == ["trigger.catalog_published"]
        assert logs[0]["templates"] == 3


class _BrokenRedis(fakeredis.FakeRedis):
    def set(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        raise redis.ConnectionError("Redis went away")


# -- versioning and atomic replacement ---------------------------------------------------------------------


class TestVersioning:
    def test_equal_content_hashes_equal_and_a_change_changes_it(self, fake_redis: fakeredis.FakeRedis) -> None:
        first = publisher(fake_redis, TEMPLATES).publish()
        again = publisher(fake_redis, TEMPLATES).publish()
        fewer = publisher(fake_redis, [NIGHTLY_1]).publish()
        assert again.content_hash == first.content_hash and again.published_at >= first.published_at
        assert fewer.content_hash != first.content_hash

    def test_a_newer_schema_is_skipped_not_misread(
        self, fake_redis: fakeredis.FakeRedis, client: TriggerClient
    ) -> None:
        publisher(fake_redis, TEMPLATES).publish()
        document = stored(fake_redis) | {"catalog_version": CATALOG_VERSION + 1, "pipelines": "a new shape"}
        fake_redis.set(keys.catalog_key(keys.DEFAULT_QUEUE), json.dumps(document))
        result = client.check(request(pipeline_name="no_such_pipeline"))
        assert result.problems == []
        assert result.skipped == f"catalog schema {CATALOG_VERSION + 1} is newer than this producer reads (1)"

    def test_fields_a_newer_worker_adds_are_ignored(
        self, fake_redis: fakeredis.FakeRedis, client: TriggerClient
    ) -> None:
        publisher(fake_redis, TEMPLATES).publish()
        document = stored(fake_redis) | {"added_later": {"anything": 1}}
        fake_redis.set(keys.catalog_key(keys.DEFAULT_QUEUE), json.dumps(document))
        assert catalog_paths(client, pipeline_name="no_such_pipeline") == ["pipeline_name"]


class TestAtomicReplace:
    def test_a_publication_replaces_the_whole_document(self, fake_redis: fakeredis.FakeRedis) -> None:
        publisher(fake_redis, TEMPLATES).publish()
        smaller = PipelineRegistry([entry for entry in REGISTRY if entry.name == "training_pipeline"])
        publisher(fake_redis, [NIGHTLY_2], registry=smaller).publish()
        document = stored(fake_redis)
        assert [p["name"] for p in document["pipelines"]] == ["training_pipeline"]
        assert [t["ref"] for t in document["templates"]["items"]] == ["nightly@2"]

    def test_it_is_one_write(self, fake_redis: fakeredis.FakeRedis) -> None:
        writes: list[str] = []
        recorder = _Recorder(fake_redis, writes)
        publisher(recorder, TEMPLATES).publish()
        assert writes == ["set"]

    def test_a_build_that_fails_leaves_the_published_catalog_as_it_was(self, fake_redis: fakeredis.FakeRedis) -> None:
        before = publisher(fake_redis, TEMPLATES).publish()

        def broken(entry: RegisteredPipeline) -> PipelineSignature:
            raise RuntimeError("cannot compile")

        with pytest.raises(RuntimeError):
            CatalogPublisher(fake_redis, settings(), REGISTRY, broken, lambda: []).publish()
        assert stored(fake_redis)["content_hash"] == before.content_hash


class _Recorder:
    """A Redis client that notes every write command, reads passing through."""

    WRITES = frozenset({"set", "mset", "hset", "delete", "incr", "expire", "pipeline", "register_script"})

    def __init__(self, client: Any, writes: list[str]) -> None:
        self.client, self.writes = client, writes

    def __getattr__(self, name: str) -> Any:
        if name in self.WRITES:
            self.writes.append(name)
        return getattr(self.client, name)


# -- the early check reports the worker's paths ----------------------------------------------------------

PARITY_CASES = [
    ("training_pipeline", {"model_type": "linear"}, {}),
    ("training_pipeline", {"learning_rate": 0.1}, {}),
    ("training_pipeline", {}, {"train_model": {"n_estimators": 5000, "depth": 3}}),
    ("training_pipeline", {}, {"train_model": {"n_estimators": "10"}}),
    ("training_pipeline", {}, {"train_model": {"n_estimators": 10.0}}),
    ("training_pipeline", {}, {"train_model": {"datasets": {}}}),
    ("training_pipeline", {}, {"tune_model": {"x": 1}}),
    ("training_pipeline", {}, {"preprocess": {"test_size": 0.9}, "load_data": {"n_samples": 5, "seed": -1}}),
    ("training_pipeline", {"model_type": "gradient_boosting"}, {"train_model": {"model_type": "random_forest"}}),
    ("training_pipeline", {"model_type": "linear"}, {"train_model": {"model_type": "random_forest"}}),
    ("training_pipeline", {"data_url": 5}, {"load_data": {"data_url": ["s3://b/x.csv"]}}),
    ("rich_pipeline", {"rows": "10", "seed": True}, {}),
    ("rich_pipeline", {"rows": 1.0}, {}),
    ("rich_pipeline", {}, {"fit": {"optimizer": {"name": "rmsprop", "lr": 2, "extra": 1}}}),
    ("rich_pipeline", {}, {"fit": {"optimizer": {"name": "adam"}}}),
    ("rich_pipeline", {}, {"fit": {"optimizer": "adam"}}),
    ("rich_pipeline", {}, {"fit": {"optimizer": {"name": "sgd", "lr": 0.1, "betas": [0.9, "b"]}}}),
    ("rich_pipeline", {}, {"fit": {"weights": {"a": "x", "b": 1}, "tags": [1, "b", None], "epochs": 0}}),
    ("rich_pipeline", {}, {"fit": {"seed": 3, "data": 1}}),
    ("rich_pipeline", {}, {"make_data": {"scale": 3, "rows": 2000}, "label": {"text": "x"}}),
    ("rich_pipeline", {"rows": 6}, {"make_data": {"rows": 5}}),
    ("required_pipeline", {}, {}),
    ("required_pipeline", {"path": 7}, {}),
]


@pytest.mark.usefixtures("published")
class TestSamePathsAsTheWorker:
    @pytest.mark.parametrize(("pipeline_name", "parameters", "steps"), PARITY_CASES)
    def test_each_mistake_at_the_workers_path(
        self, client: TriggerClient, pipeline_name: str, parameters: dict[str, Any], steps: dict[str, Any]
    ) -> None:
        expected = worker_paths(pipeline_name, parameters, steps)
        assert expected, "every case is a mistake the worker rejects"
        assert catalog_paths(client, pipeline_name=pipeline_name, parameters=parameters, steps=steps) == expected

    @pytest.mark.parametrize(
        ("pipeline_name", "parameters", "steps"),
        [
            ("training_pipeline", {}, {"train_model": {"model_type": "gradient_boosting", "n_estimators": 10}}),
            ("rich_pipeline", {}, {"fit": {"coerced": "10", "optimizer": None}, "make_data": {"rows": 5}}),
            ("rich_pipeline", {"seed": 4}, {"fit": {"optimizer": {"name": "sgd", "lr": 1}, "tags": []}}),
            ("required_pipeline", {"path": "x"}, {}),
        ],
    )
    def test_what_the_worker_accepts_passes(
        self, client: TriggerClient, pipeline_name: str, parameters: dict[str, Any], steps: dict[str, Any]
    ) -> None:
        assert worker_paths(pipeline_name, parameters, steps) == []
        assert catalog_paths(client, pipeline_name=pipeline_name, parameters=parameters, steps=steps) == []

    def test_problems_say_what_was_expected(self, client: TriggerClient) -> None:
        problems = client.validate("training_pipeline", steps={"train_model": {"n_estimators": 5000}})
        assert [str(p) for p in problems] == [
            "steps.train_model.parameters.n_estimators: 5000 is greater than the maximum of 1000 "
            "(expected int in [1, 1000])"
        ]

    def test_what_needs_the_workers_configuration_is_left_to_the_worker(self, client: TriggerClient) -> None:
        assert worker_paths("training_pipeline", {"data_url": "/etc/passwd"}, {}) == ["parameters.data_url"]
        assert catalog_paths(client, pipeline_name="training_pipeline", parameters={"data_url": "/etc/passwd"}) == []

    def test_a_union_is_reported_at_its_value_where_the_worker_adds_the_branch(
        self, fake_redis: fakeredis.FakeRedis, client: TriggerClient
    ) -> None:
        @step
        def either(value: int | list[int] = 1) -> None: ...

        @pipeline(enable_cache=False)
        def union_pipeline() -> None:
            either()

        registry = PipelineRegistry([RegisteredPipeline("union_pipeline", "x:union", union_pipeline)])
        CatalogPublisher(fake_redis, settings(), registry, lambda e: inspect_pipeline(e.pipeline)).publish()
        steps = {"either": {"value": "x"}}
        with pytest.raises(InvalidRequest) as info:
            plan_run(inspect_pipeline(union_pipeline), {}, steps)
        worker = sorted(p.path for p in info.value.details)
        assert worker == ["steps.either.parameters.value.int", "steps.either.parameters.value.list[int]"]
        assert catalog_paths(client, pipeline_name="union_pipeline", steps=steps) == ["steps.either.parameters.value"]

    def test_an_unknown_pipeline_is_named_with_the_registered_ones(self, client: TriggerClient) -> None:
        problems = client.validate("retrain_pipeline")
        assert [str(p) for p in problems] == [
            "pipeline_name: pipeline 'retrain_pipeline' is not registered; "
            "registered: required_pipeline, rich_pipeline, training_pipeline"
        ]

    def test_a_request_that_cannot_be_built_reports_the_contracts_paths(self, client: TriggerClient) -> None:
        problems = client.validate("training_pipeline", steps={"train_model": {"n_estimators": float("inf")}})
        assert [p.path for p in problems] == ["steps.train_model.parameters.n_estimators"]


class TestSamePathsThroughTheWholeWorker:
    """The worker's whole resolution (pipelines, templates, locks), through `Processor.handle`."""

    @pytest.fixture
    def worker(self, make_services: Callable[..., Any]) -> Processor:
        from dataclasses import replace

        services = make_services(FakeRunner(), templates=FakeTemplates(*TEMPLATES))
        return Processor(replace(services, registry=REGISTRY))

    @pytest.mark.parametrize(
        "fields",
        [
            {"pipeline_name": "retrain_pipeline"},
            {"template": "nightly@1", "steps": {"train_model": {"model_type": "random_forest", "n_estimators": 99}}},
            {"template": "nightly@1", "parameters": {"data_url": "s3://b/x.csv"}},
            {"template": "nightly@1", "steps": {"load_data": {"data_url": 5}, "train_model": {"n_estimators": 0}}},
            {"template": "nightly", "parameters": {"model_type": "linear"}, "steps": {"tune": {"x": 1}}},
            {"template": "nightly@7"},
            {"template": "missing"},
            {"template": "stray"},
        ],
    )
    def test_rejections_at_the_same_paths(
        self, worker: Processor, published: Catalog, client: TriggerClient, fields: dict[str, Any]
    ) -> None:
        built = request(**fields)
        state = worker.handle(Delivery(raw=encode_request(built), task_id=built.request_id))
        assert state.status is Status.REJECTED and state.error is not None
        expected = sorted(detail["path"] for detail in state.error.details)
        assert catalog_paths(client, **fields) == expected

    def test_allowed_overrides_pass_both(self, worker: Processor, published: Catalog, client: TriggerClient) -> None:
        fields = {"template": "nightly", "steps": {"train_model": {"model_type": "random_forest", "n_estimators": 12}}}
        built = request(**fields)
        assert worker.handle(Delivery(raw=encode_request(built), task_id=built.request_id)).status is Status.SUCCEEDED
        assert catalog_paths(client, **fields) == []


class TestTemplateRefs:
    def test_the_producer_reads_refs_as_the_worker_does(self) -> None:
        assert TEMPLATE_REF.pattern == REF_PATTERN.pattern
        assert SNAPSHOT_ID.pattern == UUID_PATTERN.pattern

    def test_by_snapshot_id_latest_and_pinned(self, published: Catalog) -> None:
        assert find_template(published, NIGHTLY_1.snapshot_id)[0].ref == "nightly@1"  # type: ignore[union-attr]
        upper = NIGHTLY_1.snapshot_id.replace("-", "").upper()
        assert find_template(published, upper)[0].ref == "nightly@1"  # type: ignore[union-attr]
        assert find_template(published, "nightly")[0].ref == "nightly@2"  # type: ignore[union-attr]
        assert find_template(published, "nightly@7") == (
            None,
            "template 'nightly@7' does not exist (versions: nightly@1, nightly@2)",
        )


# -- a missing or stale catalog skips the check, never the enqueue ----------------------------------------


class TestSkipped:
    def test_no_catalog_skips_with_a_log_line(self, client: TriggerClient, caplog: pytest.LogCaptureFixture) -> None:
        with caplog.at_level(logging.INFO, logger="producers.client"):
            assert client.validate("no_such_pipeline") == []
        assert "trigger.catalog_skipped" in caplog.text
        assert "no worker has published a catalog for queue 'zenml-triggers'" in caplog.text

    def test_a_stale_catalog_is_skipped(self, fake_redis: fakeredis.FakeRedis, published: Catalog) -> None:
        later = published.published_at + timedelta(seconds=published.stale_after + 1)
        read = CatalogReader(fake_redis, keys.DEFAULT_QUEUE, clock=later.timestamp).read()
        assert read.catalog is not None and read.unusable is not None and "stale" in read.unusable
        result = check_request(read, request(pipeline_name="no_such_pipeline"))
        assert result.problems == [] and result.skipped == read.unusable

    def test_a_fresh_catalog_is_used(self, fake_redis: fakeredis.FakeRedis, published: Catalog) -> None:
        just = published.published_at + timedelta(seconds=published.stale_after - 1)
        read = CatalogReader(fake_redis, keys.DEFAULT_QUEUE, clock=just.timestamp).read()
        assert read.unusable is None
        assert check_request(read, request(pipeline_name="no_such_pipeline")).problems != []

    def test_an_unreadable_catalog_is_skipped(self, fake_redis: fakeredis.FakeRedis, client: TriggerClient) -> None:
        fake_redis.set(keys.catalog_key(keys.DEFAULT_QUEUE), b"{not json")
        assert client.check(request(pipeline_name="x")).skipped == "the catalog is unreadable (1 problems)"

    def test_redis_trouble_is_skipped(self) -> None:
        broken = TriggerClient(_NoRedis(), ProducerSettings())
        result = broken.check(request(pipeline_name="x"))
        assert result.skipped == "the catalog could not be read: ConnectionError: connection refused"

    def test_changed_templates_skip_template_checks_only(
        self, fake_redis: fakeredis.FakeRedis, client: TriggerClient, published: Catalog
    ) -> None:
        fake_redis.incr(keys.CATALOG_TEMPLATE_CHANGES_KEY)
        result = client.check(request(template="missing"))
        assert result.problems == [] and result.skipped is not None
        assert "templates changed since the worker listed them" in result.skipped
        assert catalog_paths(client, pipeline_name="no_such_pipeline") == ["pipeline_name"]
        publisher(fake_redis, TEMPLATES).publish()  # the worker lists them again
        assert catalog_paths(client, template="missing") == ["template"]

    def test_unknown_templates_skip_template_checks(
        self, fake_redis: fakeredis.FakeRedis, client: TriggerClient
    ) -> None:
        publisher(fake_redis, TEMPLATES).publish(list_templates=False)
        assert (
            client.check(request(template="missing")).skipped
            == f"the catalog does not know the templates: {NOT_LISTED_YET}"
        )


class _NoRedis(fakeredis.FakeRedis):
    def mget(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        raise redis.ConnectionError("connection refused")


# -- the command line --------------------------------------------------------------------------------------


@pytest.fixture
def broker(monkeypatch: pytest.MonkeyPatch, fake_redis: fakeredis.FakeRedis) -> fakeredis.FakeRedis:
    monkeypatch.setattr("producers.client.connect", lambda settings: fake_redis)
    return fake_redis


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), prog_name="trigger")


class TestSendCheck:
    def test_a_bad_request_exits_with_every_path_and_enqueues_nothing(
        self, broker: fakeredis.FakeRedis, published: Catalog
    ) -> None:
        result = invoke("send", "training_pipeline", "-p", "model_type=linear", "-s", "train_model.depth=3", "--check")
        assert result.exit_code == 1
        lines = result.output.splitlines()
        assert lines[0] == "Error: the workers would reject this request for training_pipeline; nothing was enqueued"
        assert [line.split(":")[0].strip() for line in lines[1:]] == [
            "parameters.model_type",
            "steps.train_model.parameters.depth",
        ]
        assert broker.llen(keys.DEFAULT_QUEUE) == 0 and broker.keys(keys.state_key("*")) == []

    def test_json_lists_the_problems(self, broker: fakeredis.FakeRedis, published: Catalog) -> None:
        result = invoke("send", "training_pipeline", "-s", "train_model.n_estimators=0", "--check", "--json")
        assert result.exit_code == 1
        printed = json.loads(result.stdout)
        assert printed["status"] == "invalid" and printed["enqueued"] is False
        assert [p["path"] for p in printed["problems"]] == ["steps.train_model.parameters.n_estimators"]

    def test_a_good_request_is_enqueued(self, broker: fakeredis.FakeRedis, published: Catalog) -> None:
        result = invoke("send", "training_pipeline", "-s", "train_model.n_estimators=20", "--check", "--json")
        assert result.exit_code == 0, result.output
        printed = json.loads(result.stdout)
        assert printed["check"] == "passed" and broker.llen(keys.DEFAULT_QUEUE) == 1

    def test_without_a_catalog_it_says_so_and_enqueues(self, broker: fakeredis.FakeRedis) -> None:
        result = invoke("send", "no_such_pipeline", "--check")
        assert result.exit_code == 0
        assert "early check skipped (no worker has published a catalog" in result.stderr
        assert result.stdout.strip() and broker.llen(keys.DEFAULT_QUEUE) == 1

    def test_without_check_nothing_is_read(self, broker: fakeredis.FakeRedis, published: Catalog) -> None:
        result = invoke("send", "no_such_pipeline")
        assert result.exit_code == 0 and broker.llen(keys.DEFAULT_QUEUE) == 1


class TestPipelinesFromTheCatalog:
    @pytest.fixture
    def without_zenml(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import importlib.util

        real = importlib.util.find_spec
        monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "zenml" else real(name, *a))

    @pytest.mark.usefixtures("without_zenml")
    def test_lists_what_the_worker_published(self, broker: fakeredis.FakeRedis, published: Catalog) -> None:
        result = invoke("pipelines")
        assert result.exit_code == 0, result.output
        assert result.stderr.startswith("from the workers' catalog, published ")
        assert "training_pipeline  (pipelines.training:training_pipeline)" in result.stdout
        assert "  steps.train_model.parameters.n_estimators: int in [1, 1000] (default 100)" in result.stdout
        assert "  steps.train_model.parameters.model_type: " in result.stdout
        assert "-> parameters.model_type" in result.stdout

    @pytest.mark.usefixtures("without_zenml")
    def test_json_carries_the_schemas(self, broker: fakeredis.FakeRedis, published: Catalog) -> None:
        listed = json.loads(invoke("pipelines", "--json").stdout)
        assert [p["name"] for p in listed] == REGISTRY.names()
        assert listed[1]["parameters"][0]["json_schema"] == {"type": "integer"}

    @pytest.mark.usefixtures("without_zenml")
    def test_no_catalog_is_one_line(self, broker: fakeredis.FakeRedis) -> None:
        result = invoke("pipelines")
        assert result.exit_code == 1
        assert result.output.strip() == (
            "Error: no catalog to list pipelines from: no worker has published a catalog for queue 'zenml-triggers'"
        )

    def test_the_worker_side_prints_the_same_lines(self, broker: fakeredis.FakeRedis, published: Catalog) -> None:
        from_catalog = invoke("pipelines", "--catalog").stdout.splitlines()
        from_registry = invoke("pipelines").stdout.splitlines()  # the bundled registry: training_pipeline only
        start = from_catalog.index(from_registry[0])
        assert from_catalog[start : start + len(from_registry)] == from_registry
        assert len(from_registry) > 10


# -- the worker publishes at start ---------------------------------------------------------------------------


class TestWorkerStart:
    @pytest.fixture(autouse=True)
    def _fresh(self, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
        for name in ("_processor", "_catalog_thread"):
            monkeypatch.setattr(tasks, name, None)
        monkeypatch.setattr(tasks, "configure_worker_logging", lambda *args, **kwargs: None)  # keep logs capturable
        yield
        if tasks._catalog_thread is not None:  # its last log lines must not land in another test's capture
            tasks._catalog_thread.stopped.set()
            tasks._catalog_thread.join(timeout=30)

    def test_init_publishes_pipelines_and_templates_before_consuming(
        self, monkeypatch: pytest.MonkeyPatch, fake_redis: fakeredis.FakeRedis
    ) -> None:
        monkeypatch.setattr("worker.runtime.connect", lambda settings: fake_redis)
        monkeypatch.setattr("worker.runtime.list_templates", lambda store: [NIGHTLY_1])
        create_app(WorkerSettings(redis_url="redis://unused.invalid:6379/0", queue="q-start"))
        with capture_logs() as logs:
            tasks.on_worker_init()
        document = stored(fake_redis, "q-start")
        assert [p["name"] for p in document["pipelines"]] == ["training_pipeline"]
        assert document["templates"]["known"] is True
        assert [t["ref"] for t in document["templates"]["items"]] == ["nightly@1"]
        published = [entry["templates"] for entry in logs if entry["event"] == "trigger.catalog_published"]
        assert published == [NOT_LISTED_YET, 1]  # the pipelines at once, then with the templates
        assert logs[-1]["event"] == "trigger.worker_started"

    def test_a_store_that_does_not_answer_does_not_hold_the_start(
        self, monkeypatch: pytest.MonkeyPatch, fake_redis: fakeredis.FakeRedis
    ) -> None:
        release = threading.Event()
        monkeypatch.setattr("worker.runtime.connect", lambda settings: fake_redis)
        monkeypatch.setattr("worker.runtime.list_templates", lambda store: release.wait() and [])
        monkeypatch.setattr(tasks, "START_WAIT", 0.01)
        create_app(WorkerSettings(redis_url="redis://unused.invalid:6379/0"))
        tasks.on_worker_init()
        assert stored(fake_redis)["templates"] == {
            "known": False,
            "reason": NOT_LISTED_YET,
            "generation": 0,
            "items": [],
        }
        release.set()

    def test_redis_down_at_start_does_not_stop_the_worker(self) -> None:
        create_app(WorkerSettings(redis_url="redis://127.0.0.1:1/0"))
        with capture_logs() as logs:
            tasks.on_worker_init()
        events = [entry["event"] for entry in logs]
        assert events == ["trigger.catalog_failed", "trigger.catalog_failed", "trigger.worker_started"]
