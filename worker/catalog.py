"""The catalog this worker publishes, so producers can check a request before they enqueue it.

The main process builds it from what validation itself uses: each registered pipeline's
signature, JSON Schemas from the same pydantic adapters, defaults, the step-parameter ->
argument mapping, and the templates with their allowed and locked paths. It replaces the
document whole (one SET) at start and every `catalog_interval` seconds; the key expires
when no worker refreshes it, so producers skip checks against a registry nobody serves.
"""

from __future__ import annotations

import json
import math
import os
import socket
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import redis
from pydantic import TypeAdapter
from pydantic_core import PydanticSerializationError, to_jsonable_python

from pipelines.registry import PipelineRegistry, RegisteredPipeline
from producers import keys
from producers.catalog import (
    CATALOG_VERSION,
    Catalog,
    ParameterInfo,
    PipelineInfo,
    StepInfo,
    TemplateInfo,
    TemplatesInfo,
    content_hash,
    parse_count,
)
from producers.client import connect
from producers.contract import utc_now
from producers.settings import ProducerSettings
from worker.logs import get_logger
from worker.settings import WorkerSettings
from worker.signature import ParameterSpec, PipelineSignature, StepSpec
from worker.templates import Template, TemplateStore, normalize_allow
from worker.validation import adapter_for

STALE_AFTER_INTERVALS = 10
"""A catalog not refreshed for this many intervals is stale (and its key expires)."""
NOT_LISTED_YET = "not listed yet: the worker lists them in the background right after it starts"
UNCHECKED_VALIDATORS = frozenset({"function-before", "function-wrap", "function-plain"})
"""Validators that see the raw input: they may accept what the type's JSON Schema refuses."""
MAX_REASON = 300
START_WAIT = 20.0
"""Seconds the worker's start waits for the first listing of templates (a ZenML store that does not answer)."""


def json_schema(annotation: Any) -> dict[str, Any] | None:
    """The JSON Schema of `annotation` as the worker's adapter validates it; None when no schema is faithful.

    `{}` (anything) when pydantic cannot build an adapter, since the worker then accepts any JSON value.
    """
    try:
        adapter = adapter_for(annotation)
    except Exception:  # noqa: BLE001 - the validator accepts any JSON value for such an annotation
        return {}
    if _sees_raw_input(adapter.core_schema):
        return None
    return _schema_of(adapter)


def _schema_of(adapter: TypeAdapter[Any]) -> dict[str, Any] | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydantic warns about defaults it leaves out of the schema
            schema = adapter.json_schema(mode="validation")
        json.dumps(schema, allow_nan=False)
    except Exception:  # noqa: BLE001 - a type with no JSON Schema is left to the worker
        return None
    return schema


def _sees_raw_input(core_schema: Any) -> bool:
    """Whether a before, wrap or plain validator sits anywhere in the core schema."""
    return any(node.get("type") in UNCHECKED_VALIDATORS for node in _nodes(core_schema))


def _nodes(value: Any) -> Iterator[dict[str, Any]]:
    if isinstance(value, dict):
        yield value
        for item in value.values():
            yield from _nodes(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _nodes(item)


def jsonable(value: Any) -> tuple[Any, bool]:
    """`value` as JSON and True, or a readable stand-in and False when JSON cannot hold it."""
    try:
        data = to_jsonable_python(value)
        json.dumps(data, allow_nan=False)
    except (PydanticSerializationError, ValueError, TypeError):
        return repr(value)[:MAX_REASON], False
    return data, True


def parameter_info(spec: ParameterSpec) -> ParameterInfo:
    """One parameter as producers see it."""
    default, exact = (None, True) if spec.required else jsonable(spec.default)
    return ParameterInfo(
        name=spec.name,
        type=spec.type_name,
        required=spec.required,
        default=default,
        default_exact=exact,
        json_schema=json_schema(spec.annotation),
    )


def step_info(step: StepSpec, signature: PipelineSignature) -> StepInfo:
    """A step's settable parameters (fed ones show their argument's default), and what may not be set."""
    return StepInfo(
        name=step.name,
        parameters=[_step_parameter(step, spec, signature) for spec in step.configurable.values()],
        artifact_inputs=dict(step.artifact_inputs),
        fixed=sorted(step.fixed),
        derived=sorted(step.derived),
    )


def _step_parameter(step: StepSpec, spec: ParameterSpec, signature: PipelineSignature) -> ParameterInfo:
    info = parameter_info(spec)
    source = step.fed_by.get(spec.name)
    feeder = signature.parameters.get(source or "")
    if source is None or feeder is None:
        return info
    fed = parameter_info(feeder)
    update = {"from_pipeline_parameter": source, "required": fed.required, "default": fed.default}
    return info.model_copy(update={**update, "default_exact": fed.default_exact})


def pipeline_info(entry: RegisteredPipeline, signature: PipelineSignature) -> PipelineInfo:
    """A registered pipeline as producers see it."""
    return PipelineInfo(
        name=signature.name,
        source=entry.source,
        parameters=[parameter_info(spec) for spec in signature.parameters.values()],
        steps=[step_info(step, signature) for step in signature.steps.values()],
    )


def settable_paths(signature: PipelineSignature) -> list[str]:
    """Every path a request may set on this pipeline."""
    paths = [f"parameters.{name}" for name in signature.parameters]
    steps = signature.steps.values()
    return paths + [f"steps.{step.name}.parameters.{name}" for step in steps for name in step.configurable]


def locked_paths(template: Template, signature: PipelineSignature) -> list[str]:
    """The settable paths a template does not let a request change."""
    allow = normalize_allow(template.allow)
    return [path for path in settable_paths(signature) if not _allowed(path, allow, signature)]


def _allowed(path: str, allow: frozenset[str], signature: PipelineSignature) -> bool:
    parts = path.split(".")
    feeder = signature.feeder(parts[1], parts[3]) if len(parts) == 4 else None
    return path in allow or (feeder is not None and f"parameters.{feeder}" in allow)


def template_info(
    template: Template, entry: RegisteredPipeline | None, signature: PipelineSignature | None
) -> TemplateInfo:
    """One template version; one of a pipeline this worker does not register is listed as such."""
    return TemplateInfo(
        ref=template.ref,
        name=template.name,
        version=template.version,
        snapshot_id=template.snapshot_id,
        pipeline_name=entry.name if entry else template.pipeline_name,
        source=template.source,
        registered=entry is not None,
        parameters=template.parameters,
        steps=template.steps,
        allow=sorted(template.allow),
        locked=locked_paths(template, signature) if signature else [],
        description=template.description,
    )


def list_templates(store: TemplateStore) -> list[Template]:
    """Every template, then the store's pooled connections released (see `release_store_connections`)."""
    try:
        return store.list()
    finally:
        release_store_connections()


def release_store_connections() -> None:
    """Close the ZenML store's pooled connections in this (main) process.

    Pool children forked later inherit the store object; with its pool empty they open
    connections of their own instead of sharing a socket or SQLite handle with this process.
    """
    from zenml.config.global_config import GlobalConfiguration

    store = GlobalConfiguration()._zen_store
    engine = getattr(store, "_engine", None)
    if engine is not None:
        engine.dispose()
    session = getattr(store, "_session", None)
    if session is not None:
        session.close()


class CatalogPublisher:
    """Builds the catalog and replaces the published one whole, in one SET."""

    def __init__(
        self,
        client: redis.Redis,
        settings: WorkerSettings,
        registry: PipelineRegistry,
        signature_of: Callable[[RegisteredPipeline], PipelineSignature],
        templates: Callable[[], list[Template]] | None = None,
    ) -> None:
        self.client, self.settings, self.registry = client, settings, registry
        self.signature_of, self.templates = signature_of, templates
        self.publisher = f"{socket.gethostname()}:{os.getpid()}"
        self._published: tuple[str, str | None] | None = None
        self._listed: TemplatesInfo | None = None

    @property
    def stale_after(self) -> float:
        """Seconds a catalog counts without a refresh; its key expires then too."""
        return STALE_AFTER_INTERVALS * self.settings.catalog_interval

    def publish(self, list_templates: bool = True) -> Catalog:
        """Build the whole document, then SET it: a reader sees the old catalog or the new one, never a mix."""
        catalog = self.build(list_templates)
        ttl = max(1, math.ceil(self.stale_after))
        self.client.set(keys.catalog_key(self.settings.queue), catalog.model_dump_json(), ex=ttl)
        self._log_change(catalog)
        return catalog

    def build(self, list_templates: bool = True) -> Catalog:
        """The catalog as of now; templates are listed only when asked (it needs the ZenML store)."""
        pipelines = [pipeline_info(entry, self.signature_of(entry)) for entry in self.registry]
        templates = self._templates() if list_templates else TemplatesInfo(known=False, reason=NOT_LISTED_YET)
        return Catalog(
            catalog_version=CATALOG_VERSION,
            content_hash=content_hash(pipelines, templates),
            published_at=utc_now(),
            stale_after=self.stale_after,
            refresh_interval=self.settings.catalog_interval,
            queue=self.settings.queue,
            publisher=self.publisher,
            pipelines=pipelines,
            templates=templates,
        )

    def _templates(self) -> TemplatesInfo:
        """The templates, or why they are unknown: an unavailable store never fails the publication."""
        if self.templates is None:
            return TemplatesInfo(known=False, reason="this worker lists no templates")
        generation = parse_count(self.client.get(keys.CATALOG_TEMPLATE_CHANGES_KEY))
        try:
            items = [self._template_info(template) for template in self.templates()]
        except Exception as exc:  # noqa: BLE001 - a missing or failing ZenML store never fails the publication
            return self._unlisted(f"{type(exc).__name__}: {exc}"[:MAX_REASON])
        self._listed = TemplatesInfo(known=True, generation=generation, items=items)
        return self._listed

    def _unlisted(self, reason: str) -> TemplatesInfo:
        """The last list that worked (any change since shows in its generation), else templates unknown."""
        get_logger().warning("trigger.catalog_templates_unavailable", reason=reason)
        return self._listed or TemplatesInfo(known=False, reason=reason)

    def _template_info(self, template: Template) -> TemplateInfo:
        entry = self.registry.by_source(template.source)
        return template_info(template, entry, self.signature_of(entry) if entry else None)

    def _log_change(self, catalog: Catalog) -> None:
        published = (catalog.content_hash, catalog.templates.reason)
        if published == self._published:
            return
        self._published = published
        templates = len(catalog.templates.items) if catalog.templates.known else catalog.templates.reason
        get_logger().info(
            "trigger.catalog_published",
            catalog_hash=catalog.content_hash,
            pipelines=[p.name for p in catalog.pipelines],
            templates=templates,
        )


class CatalogThread(threading.Thread):
    """Publishes the full catalog at once, then every `interval` seconds, in the worker's main process."""

    def __init__(self, publisher: CatalogPublisher, interval: float) -> None:
        super().__init__(name="catalog-publisher", daemon=True)
        self.publisher, self.interval = publisher, interval
        self.stopped = threading.Event()
        self.first_done = threading.Event()

    def run(self) -> None:
        self.publish()
        self.first_done.set()
        while not self.stopped.wait(self.interval):
            self.publish()

    def publish(self) -> None:
        """One publication; a failure is logged and the next interval tries again."""
        try:
            self.publisher.publish()
        except Exception as exc:  # noqa: BLE001 - a thread of the consumer's own process: log, never crash it
            get_logger().warning("trigger.catalog_failed", error=f"{type(exc).__name__}: {exc}"[:MAX_REASON])


def note_template_change(settings: ProducerSettings) -> str | None:
    """Tell catalog readers the templates moved; a warning to show when Redis did not answer."""
    try:
        connect(settings).incr(keys.CATALOG_TEMPLATE_CHANGES_KEY)
    except redis.RedisError as exc:
        return (
            f"could not mark the catalog's templates as changed ({type(exc).__name__}: {exc}); "
            "early checks may use the old templates until the worker lists them again"
        )
    return None
