"""The registry: the only pipelines this deployment runs, named by operator configuration.

Paths come from settings (`module:attribute`), never from a message, so a request
naming `os.system` finds nothing to run instead of triggering an import.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from producers.errors import TriggerError

BUNDLED_PIPELINES = ("pipelines.training:training_pipeline",)


class RegistryError(TriggerError):
    """A configured pipeline path could not be loaded; raised at worker start, not per message."""


@dataclass(frozen=True)
class RegisteredPipeline:
    """A pipeline the operator allowed, under the name requests use for it."""

    name: str
    source: str
    pipeline: Any
    metrics_step: str = "evaluate"


def load_object(path: str) -> Any:
    """Import `module:attribute` from operator configuration."""
    module_name, sep, attribute = path.partition(":")
    if not sep or not module_name or not attribute:
        raise RegistryError(f"pipeline path {path!r} must look like 'package.module:attribute'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise RegistryError(f"pipeline path {path!r}: cannot import {module_name!r}: {exc}") from exc
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise RegistryError(f"pipeline path {path!r}: module {module_name!r} has no {attribute!r}") from None


def _as_entry(path: str) -> RegisteredPipeline:
    from zenml.pipelines.pipeline_definition import Pipeline

    obj = load_object(path)
    if not isinstance(obj, Pipeline):
        raise RegistryError(f"pipeline path {path!r} is a {type(obj).__name__}, not a ZenML @pipeline")
    return RegisteredPipeline(name=obj.name, source=path, pipeline=obj)


class PipelineRegistry:
    """Registered pipelines by name."""

    def __init__(self, entries: Sequence[RegisteredPipeline]) -> None:
        self._entries: dict[str, RegisteredPipeline] = {}
        for entry in entries:
            if entry.name in self._entries:
                other = self._entries[entry.name].source
                raise RegistryError(f"pipeline name {entry.name!r} is registered twice ({other}, {entry.source})")
            self._entries[entry.name] = entry

    @classmethod
    def from_paths(cls, paths: Sequence[str] = BUNDLED_PIPELINES) -> PipelineRegistry:
        """Load each configured `module:attribute` path."""
        return cls([_as_entry(path) for path in paths])

    def get(self, name: str) -> RegisteredPipeline | None:
        """The registered pipeline called `name`, if any."""
        return self._entries.get(name)

    def by_source(self, source: str) -> RegisteredPipeline | None:
        """The registered pipeline whose configured path or ZenML source is `source`."""
        for entry in self._entries.values():
            if source in (entry.source, _zenml_source(entry.pipeline)):
                return entry
        return None

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def __iter__(self) -> Iterator[RegisteredPipeline]:
        return iter(self._entries[name] for name in self.names())


def _zenml_source(pipeline: Any) -> str:
    return pipeline.resolve().import_path
