"""Reading a YAML file the operator wrote (keys, schedules): one clear line for each way it can fail."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def read_yaml(path: Path, kind: str, error: type[Exception]) -> Any:
    """The parsed file; `error` naming the `kind` of file, its path and what is wrong (never its content).

    PyYAML is imported here, not at the top: it is the worker's dependency, and a producer that only
    enqueues never reads such a file.
    """
    try:
        import yaml
    except ImportError as exc:
        raise error(f"reading {path} needs pyyaml: pip install 'zenml-queue-trigger[worker]'") from exc
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise error(f"{kind} {path} cannot be read: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, RecursionError):
        raise error(f"{kind} {path} is not YAML text") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        raise error(f"{kind} {path} is not valid YAML{line}") from None
