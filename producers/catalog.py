"""The catalog a worker publishes: what its pipelines and templates accept, so producers can check early.

The worker writes one JSON document per queue (`keys.catalog_key`); producers read it
and check a request before enqueueing it, with no ZenML and no worker code. The worker
stays the authority and validates every request again. A missing, stale or unreadable
catalog only skips the early check: it never blocks an enqueue.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis
from pydantic import AwareDatetime, BaseModel, ConfigDict, JsonValue, ValidationError

from producers import keys
from producers.errors import Problem

CATALOG_VERSION = 1
"""The document's schema number; a producer skips the check against a catalog newer than it reads."""


class _Entry(BaseModel):
    """Catalog parts are frozen, and ignore fields a newer worker adds within the same schema number."""

    model_config = ConfigDict(frozen=True, extra="ignore")


class ParameterInfo(_Entry):
    """One parameter: its readable type, its JSON Schema (None: not checkable early) and its default."""

    name: str
    type: str
    required: bool = False
    default: JsonValue = None
    default_exact: bool = True
    """False when `default` is only a readable stand-in for a value JSON cannot hold."""
    json_schema: dict[str, Any] | None = None
    from_pipeline_parameter: str | None = None


class StepInfo(_Entry):
    """One step invocation: the parameters a request may set, and those it may not."""

    name: str
    parameters: list[ParameterInfo] = []
    artifact_inputs: dict[str, str] = {}
    fixed: list[str] = []
    derived: list[str] = []

    def parameter(self, name: str) -> ParameterInfo | None:
        """The settable parameter called `name`, if any."""
        return next((p for p in self.parameters if p.name == name), None)


class PipelineInfo(_Entry):
    """A registered pipeline, in the shape `trigger pipelines --json` prints, plus schemas."""

    name: str
    source: str
    parameters: list[ParameterInfo] = []
    steps: list[StepInfo] = []

    def parameter(self, name: str) -> ParameterInfo | None:
        """The pipeline parameter called `name`, if any."""
        return next((p for p in self.parameters if p.name == name), None)

    def step(self, name: str) -> StepInfo | None:
        """The step invocation called `name`, if any."""
        return next((s for s in self.steps if s.name == name), None)

    def feeder(self, step: str, parameter: str) -> str | None:
        """The pipeline parameter the code passes into `step.parameter`, if any."""
        found = self.step(step)
        info = found.parameter(parameter) if found else None
        return info.from_pipeline_parameter if info else None

    def feeders(self, pipeline_parameter: str) -> list[str]:
        """`step.param` paths fed directly by one pipeline parameter."""
        return [
            f"{step.name}.{param.name}"
            for step in self.steps
            for param in step.parameters
            if param.from_pipeline_parameter == pipeline_parameter
        ]


class TemplateInfo(_Entry):
    """One template version: its configuration and the paths a request may and may not change."""

    ref: str
    name: str
    version: int
    snapshot_id: str
    pipeline_name: str
    source: str
    registered: bool
    parameters: dict[str, JsonValue] = {}
    steps: dict[str, dict[str, JsonValue]] = {}
    allow: list[str] = []
    locked: list[str] = []
    description: str | None = None


class TemplatesInfo(_Entry):
    """The templates, or why they are not known (no ZenML store at hand, not listed yet)."""

    known: bool
    reason: str | None = None
    generation: int = 0
    """`keys.CATALOG_TEMPLATE_CHANGES_KEY` as read just before the listing."""
    items: list[TemplateInfo] = []


class Catalog(_Entry):
    """The whole document under `keys.catalog_key(queue)`."""

    catalog_version: int
    content_hash: str
    published_at: AwareDatetime
    stale_after: float
    """Seconds after `published_at` when the catalog no longer counts (the key also expires then)."""
    refresh_interval: float
    """Seconds between the worker's publications."""
    queue: str
    publisher: str
    pipelines: list[PipelineInfo] = []
    templates: TemplatesInfo = TemplatesInfo(known=False, reason="not published")

    def pipeline(self, name: str) -> PipelineInfo | None:
        """The registered pipeline called `name`, if any."""
        return next((p for p in self.pipelines if p.name == name), None)

    def names(self) -> list[str]:
        """Registered pipeline names, sorted."""
        return sorted(p.name for p in self.pipelines)


def content_hash(pipelines: list[PipelineInfo], templates: TemplatesInfo) -> str:
    """SHA-256 of what the catalog says (not when or by whom), so equal registries hash equal."""
    content = {
        "pipelines": [p.model_dump(mode="json") for p in pipelines],
        "templates": templates.model_dump(mode="json"),
    }
    text = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class CatalogRead:
    """A catalog as read, and why early checks cannot use it (`unusable`), if so."""

    catalog: Catalog | None
    unusable: str | None = None


@dataclass(frozen=True)
class CatalogCheck:
    """The early check's answer: the problems found, or why the check was skipped."""

    problems: list[Problem] = field(default_factory=list)
    skipped: str | None = None
    content_hash: str | None = None

    @property
    def passed(self) -> bool:
        """Checked, and nothing found."""
        return self.skipped is None and not self.problems


class CatalogReader:
    """Reads the catalog of one queue; never raises, so a broken catalog cannot block an enqueue."""

    def __init__(self, client: redis.Redis | None, queue: str, clock: Callable[[], float] = time.time) -> None:
        self.client, self.queue, self.clock = client, queue, clock

    def read(self) -> CatalogRead:
        """The catalog (stale ones too, marked unusable), or None with the reason."""
        if self.client is None:  # an interpret-only reader (see `interpret`)
            return CatalogRead(None, "this reader has no Redis client")
        try:
            raw, changes = self.client.mget(self.keys)
        except redis.RedisError as exc:
            return CatalogRead(None, f"the catalog could not be read: {type(exc).__name__}: {exc}")
        return self.interpret(raw, changes)

    def interpret(self, raw: bytes | None, changes: bytes | None) -> CatalogRead:
        """A read from the two values `read` fetches (the catalog and the template-change count), for
        callers that fetch them their own way (the gateway, with asyncio)."""
        if raw is None:
            return CatalogRead(None, f"no worker has published a catalog for queue {self.queue!r}")
        return self._parsed(raw, parse_count(changes))

    @property
    def keys(self) -> list[str]:
        """What `read` fetches, in order."""
        return [keys.catalog_key(self.queue), keys.CATALOG_TEMPLATE_CHANGES_KEY]

    def _parsed(self, raw: bytes, template_changes: int) -> CatalogRead:
        version = _declared_version(raw)
        if version is not None and version > CATALOG_VERSION:
            return CatalogRead(None, f"catalog schema {version} is newer than this producer reads ({CATALOG_VERSION})")
        try:
            catalog = Catalog.model_validate_json(raw)
        except ValidationError as exc:
            return CatalogRead(None, f"the catalog is unreadable ({exc.error_count()} problems)")
        return CatalogRead(_with_template_changes(catalog, template_changes), self._staleness(catalog))

    def _staleness(self, catalog: Catalog) -> str | None:
        age = self.clock() - catalog.published_at.timestamp()
        if age <= catalog.stale_after:
            return None
        return f"the catalog is stale: published {age:.0f}s ago by {catalog.publisher}, over {catalog.stale_after:g}s"


def parse_count(raw: bytes | None) -> int:
    """A Redis counter's value (0 when unset or not a number)."""
    try:
        return int(raw or 0)
    except ValueError:
        return 0


def _declared_version(raw: bytes) -> int | None:
    try:
        version = json.loads(raw).get("catalog_version")
    except (ValueError, AttributeError, RecursionError):
        return None
    return version if isinstance(version, int) else None


def _with_template_changes(catalog: Catalog, changes: int) -> Catalog:
    """Templates created or deleted after the worker listed them are unknown until it lists them again."""
    if not catalog.templates.known or changes <= catalog.templates.generation:
        return catalog
    reason = f"templates changed since the worker listed them; it lists them again within {catalog.refresh_interval:g}s"
    return catalog.model_copy(update={"templates": TemplatesInfo(known=False, reason=reason)})


def published_at_text(catalog: Catalog) -> str:
    """When and by whom, for CLI notes."""
    stamp = catalog.published_at.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    return f"published {stamp} by {catalog.publisher} ({catalog.content_hash[:19]})"
