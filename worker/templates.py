"""Run templates in open source: named, versioned ZenML snapshots with controlled overrides.

A template is a ZenML pipeline snapshot named `NAME@VERSION`, so ZenML's own tools list
it too. Its configuration, the paths a caller may override, and the registered pipeline
it belongs to travel in the snapshot's `extra` section; nothing is stored beside ZenML.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from producers.errors import Problem
from producers.overrides import merged_overrides
from worker.errors import LockedOverride, UnknownTemplate
from worker.signature import PipelineSignature

TEMPLATE_TAG = "zenml-trigger-template"
EXTRA_KEY = "zenml_trigger_template"
NAME_CHARS = r"[A-Za-z0-9_.:/-]"
"""What a template name is made of; `@` is kept for versions."""
NAME_PATTERN = re.compile(rf"^{NAME_CHARS}+$")
REF_PATTERN = re.compile(rf"^(?P<name>{NAME_CHARS}+?)(?:@(?P<version>\d+))?$")
UUID_PATTERN = re.compile(r"^[0-9a-fA-F-]{32,36}$")


@dataclass(frozen=True)
class Template:
    """One version of a template, read back from its ZenML snapshot."""

    name: str
    version: int
    snapshot_id: str
    pipeline_name: str
    source: str
    parameters: dict[str, Any] = field(default_factory=dict)
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    allow: frozenset[str] = frozenset()
    run_config: dict[str, Any] = field(default_factory=dict)
    description: str | None = None
    runnable: bool = False
    created: datetime | None = None

    @property
    def ref(self) -> str:
        """`NAME@VERSION`, the snapshot's name in ZenML."""
        return f"{self.name}@{self.version}"

    def describe(self) -> dict[str, Any]:
        """JSON form for `trigger templates show/list --json`."""
        return {
            "name": self.name,
            "version": self.version,
            "ref": self.ref,
            "snapshot_id": self.snapshot_id,
            "pipeline_name": self.pipeline_name,
            "source": self.source,
            "parameters": self.parameters,
            "steps": {s: {"parameters": p} for s, p in self.steps.items()},
            "allow": sorted(self.allow),
            "run_config": self.run_config,
            "description": self.description,
            "runnable_on_server": self.runnable,
            "created": self.created.isoformat() if self.created else None,
        }


def normalize_allow(paths: Iterable[str]) -> frozenset[str]:
    """`data_url` -> `parameters.data_url`; step paths stay `steps.S.parameters.P`."""
    return frozenset(p if p.startswith(("parameters.", "steps.")) else f"parameters.{p}" for p in paths)


def parse_ref(ref: str) -> tuple[str, int | None]:
    """`NAME` or `NAME@VERSION` into its parts."""
    match = REF_PATTERN.match(ref)
    if match is None:
        raise UnknownTemplate(details=[Problem("template", f"{ref!r} is not a template name (NAME or NAME@VERSION)")])
    version = match.group("version")
    return match.group("name"), int(version) if version else None


def from_snapshot(snapshot: Any) -> Template:
    """Read a template back from a snapshot created by `TemplateStore.create`."""
    meta = (snapshot.pipeline_configuration.extra or {}).get(EXTRA_KEY)
    if not isinstance(meta, dict):
        raise UnknownTemplate(
            details=[
                Problem("template", f"snapshot {snapshot.name or snapshot.id} was not created as a trigger template")
            ]
        )
    spec = snapshot.pipeline_spec
    return Template(
        name=meta["name"],
        version=int(meta["version"]),
        snapshot_id=str(snapshot.id),
        pipeline_name=snapshot.pipeline_configuration.name,
        source=spec.source.import_path if spec else "",
        parameters=dict(meta.get("parameters", {})),
        steps={k: dict(v) for k, v in meta.get("steps", {}).items()},
        allow=frozenset(meta.get("allow", [])),
        run_config=dict(meta.get("run_config", {})),
        description=snapshot.description,
        runnable=bool(getattr(snapshot, "runnable", False)),
        created=snapshot.created,
    )


def locked_problems(
    template: Template, signature: PipelineSignature, parameters: dict[str, Any], steps: dict[str, dict[str, Any]]
) -> list[Problem]:
    """Every override that changes a value the template locks."""
    problems = []
    for name, value in parameters.items():
        path = f"parameters.{name}"
        if path not in template.allow and _pipeline_value(template, signature, name) != value:
            problems.append(Problem(path, _locked_message(template)))
    for step_name, params in steps.items():
        for name, value in params.items():
            path = f"steps.{step_name}.parameters.{name}"
            if _step_path_allowed(template, signature, step_name, name, path):
                continue
            if _template_value(template, signature, step_name, name) != value:
                problems.append(Problem(path, _locked_message(template)))
    return problems


_UNSET = object()


def _step_path_allowed(template: Template, signature: PipelineSignature, step: str, name: str, path: str) -> bool:
    if path in template.allow:
        return True
    feeder = signature.feeder(step, name)
    return feeder is not None and f"parameters.{feeder}" in template.allow


def _template_value(template: Template, signature: PipelineSignature, step: str, name: str) -> Any:
    """What the template runs with for one step parameter: its own value, the feeding argument's, or the default."""
    if name in template.steps.get(step, {}):
        return template.steps[step][name]
    feeder = signature.feeder(step, name)
    if feeder:
        return _pipeline_value(template, signature, feeder)
    spec = signature.steps.get(step)
    parameter = spec.parameters.get(name) if spec else None
    return parameter.default if parameter is not None and not parameter.required else _UNSET


def _pipeline_value(template: Template, signature: PipelineSignature, name: str) -> Any:
    """What the template runs with for one pipeline parameter: its own value or the default."""
    if name in template.parameters:
        return template.parameters[name]
    parameter = signature.parameters.get(name)
    return parameter.default if parameter is not None and not parameter.required else _UNSET


def _locked_message(template: Template) -> str:
    allowed = ", ".join(sorted(template.allow)) or "nothing"
    return f"is locked by template {template.ref}; a request may override only: {allowed}"


def merged(
    template: Template, signature: PipelineSignature, parameters: dict[str, Any], steps: dict[str, dict[str, Any]]
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The template's configuration with the request's (allowed) overrides on top (`merged_overrides`)."""
    return merged_overrides(template.parameters, template.steps, signature.feeder, parameters, steps)


def check_locked(
    template: Template, signature: PipelineSignature, parameters: dict[str, Any], steps: dict[str, dict[str, Any]]
) -> None:
    """Raise `LockedOverride` listing every locked path the request tries to change."""
    problems = locked_problems(template, signature, parameters, steps)
    if problems:
        raise LockedOverride(details=problems)


class TemplateStore:
    """Create, find, list and delete templates through ZenML's snapshot API."""

    def __init__(self, client_factory: Callable[[], Any] | None = None) -> None:
        self._client_factory = client_factory

    def client(self) -> Any:
        """The ZenML client (created lazily so importing this module never touches a store)."""
        if self._client_factory is not None:
            return self._client_factory()
        from zenml.client import Client

        return Client()

    def versions(self, name: str) -> list[Template]:
        """Every version of `name`, oldest first."""
        snapshots = self.client().list_snapshots(
            name=f"startswith:{name}@", tags=[TEMPLATE_TAG], size=1000, hydrate=True
        )
        templates = [from_snapshot(s) for s in snapshots if _is_version_of(s.name, name)]
        return sorted(templates, key=lambda t: t.version)

    def get(self, ref: str) -> Template:
        """`NAME` (latest), `NAME@VERSION`, or a snapshot id; `UnknownTemplate` otherwise."""
        if UUID_PATTERN.match(ref):
            return self._by_id(ref)
        name, version = parse_ref(ref)
        versions = self.versions(name)
        chosen = versions[-1:] if version is None else [t for t in versions if t.version == version]
        if not chosen:
            known = ", ".join(t.ref for t in versions) or "none"
            raise UnknownTemplate(details=[Problem("template", f"template {ref!r} does not exist (versions: {known})")])
        return chosen[0]

    def _by_id(self, snapshot_id: str) -> Template:
        try:
            return from_snapshot(self.client().get_snapshot(snapshot_id, allow_prefix_match=False))
        except KeyError:
            raise UnknownTemplate(details=[Problem("template", f"no snapshot with id {snapshot_id}")]) from None

    def list(self) -> list[Template]:
        """Every version of every template."""
        snapshots = self.client().list_snapshots(tags=[TEMPLATE_TAG], size=1000, hydrate=True)
        return sorted((from_snapshot(s) for s in snapshots), key=lambda t: (t.name, t.version))

    def create(
        self,
        name: str,
        pipeline: Any,
        parameters: dict[str, Any],
        steps: dict[str, dict[str, Any]],
        allow: Iterable[str],
        run_config: dict[str, Any],
        description: str | None = None,
    ) -> Template:
        """Snapshot `pipeline` (already validated values) as the next version of `name`."""
        from worker.runner import configured_pipeline

        version = max((t.version for t in self.versions(name)), default=0) + 1
        meta = {
            "name": name,
            "version": version,
            "parameters": parameters,
            "steps": steps,
            "allow": sorted(normalize_allow(allow)),
            "run_config": run_config,
        }
        configured = configured_pipeline(pipeline, steps, run_config, extra={EXTRA_KEY: meta})
        configured.prepare(**parameters)
        snapshot = configured.create_snapshot(name=f"{name}@{version}", description=description, tags=[TEMPLATE_TAG])
        return from_snapshot(self.client().get_snapshot(snapshot.id, allow_prefix_match=False))

    def delete(self, ref: str) -> list[Template]:
        """Delete one version (`NAME@VERSION`) or all versions (`NAME`); return what was deleted."""
        name, version = parse_ref(ref)
        doomed = [t for t in self.versions(name) if version is None or t.version == version]
        if not doomed:
            raise UnknownTemplate(details=[Problem("template", f"template {ref!r} does not exist")])
        for template in doomed:
            self.client().delete_snapshot(template.snapshot_id)
        return doomed


def _is_version_of(snapshot_name: str | None, name: str) -> bool:
    prefix, _, version = (snapshot_name or "").rpartition("@")
    return prefix == name and version.isdigit()


def allow_problems(signature: PipelineSignature, allow: Iterable[str]) -> list[Problem]:
    """Allowed paths that name no parameter a request could set."""
    problems = []
    for path in sorted(normalize_allow(allow)):
        parts = path.split(".")
        if parts[0] == "parameters" and len(parts) == 2 and parts[1] in signature.parameters:
            continue
        if len(parts) == 4 and parts[0] == "steps" and parts[2] == "parameters":
            step = signature.steps.get(parts[1])
            if step is not None and (parts[3] in step.configurable):
                continue
        problems.append(Problem(f"--allow {path}", "names no settable parameter of this pipeline"))
    return problems


def split_run_config(run_config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]], dict[str, Any]]:
    """A ZenML run configuration as (pipeline parameters, step parameters, everything else)."""
    rest = {k: v for k, v in run_config.items() if k != "parameters"}
    steps: dict[str, dict[str, Any]] = {}
    step_rest: dict[str, Any] = {}
    for name, options in (run_config.get("steps") or {}).items():
        options = dict(options or {})
        steps[name] = dict(options.pop("parameters", None) or {})
        if options:
            step_rest[name] = options
    rest.pop("steps", None)
    if step_rest:
        rest["steps"] = step_rest
    return dict(run_config.get("parameters") or {}), steps, rest
