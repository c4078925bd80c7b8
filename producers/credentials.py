"""Who may trigger what: the keys file (`TRIGGER_KEYS_FILE`) and the scope checks of one key.

```yaml
keys:
  - id: drift-monitor
    secrets: ["env:DRIFT_MONITOR_SECRET"]      # two during a rotation; `env:NAME` reads the environment
    pipelines: [training_pipeline]            # names or patterns (`*`); none: no pipeline
    templates: ["nightly"]                    # `nightly` covers every version, `nightly@2` only that one
    parameters: [parameters.data_url]         # paths it may set; omitted: any, []: none
    expires_at: 2027-01-01T00:00:00Z          # optional
```

Light on purpose: no ZenML, and pyyaml is imported only when a file is read (by the worker).
Error messages name the key and the field, never a secret.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from datetime import datetime
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_core import PydanticCustomError
from pydantic_core.core_schema import ValidationInfo

from producers.contract import TriggerRequest, problems_from_validation
from producers.signing import KEY_ID_PATTERN
from producers.yaml_file import read_yaml

MIN_SECRET_CHARS = 32
"""A shorter secret is refused: HMAC is only as strong as its key (`secrets.token_urlsafe(32)` gives 43)."""
ENV_PREFIX = "env:"


class KeysFileError(ValueError):
    """The keys file cannot be used; the message names the key and the field."""


class Key(BaseModel):
    """One producer key: its secrets, what it may trigger, and until when."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    id: str = Field(pattern=rf"^{KEY_ID_PATTERN}$")
    secrets: tuple[SecretStr, ...] = Field(min_length=1, max_length=2)
    pipelines: tuple[str, ...] = ()
    templates: tuple[str, ...] = ()
    parameters: tuple[str, ...] | None = None
    expires_at: AwareDatetime | None = None
    description: str = ""

    @field_validator("secrets", mode="before")
    @classmethod
    def _resolve_secrets(cls, value: Any, info: ValidationInfo) -> Any:
        if not isinstance(value, (list, tuple)):
            raise PydanticCustomError("secrets", "must be a list of one or two secrets")
        environ = (info.context or {}).get("environ", os.environ)
        return [_secret(item, index, environ) for index, item in enumerate(value)]

    @field_validator("parameters", mode="after")
    @classmethod
    def _parameter_paths(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return None if value is None else tuple(parameter_path(path) for path in value)

    def secret_bytes(self) -> tuple[bytes, ...]:
        """The secrets to verify with (both during a rotation)."""
        return tuple(secret.get_secret_value().encode() for secret in self.secrets)

    def expired(self, now: datetime) -> bool:
        """Whether the key's `expires_at` has passed."""
        return self.expires_at is not None and now >= self.expires_at

    def target_problem(self, request: TriggerRequest) -> str | None:
        """Why this key may not trigger the request's pipeline or template, or None."""
        if request.template is not None:
            kind, name, patterns = "template", request.template, self.templates
            allowed = _template_allowed(name, patterns)
        else:
            kind, name, patterns = "pipeline", request.pipeline_name or "", self.pipelines
            allowed = any(fnmatchcase(name, pattern) for pattern in patterns)
        if allowed:
            return None
        return f"key {self.id!r} may not trigger {kind} {name!r} (its {kind}s: {_listed(patterns)})"

    def refused_paths(self, paths: Iterable[str]) -> list[str]:
        """The parameter paths among `paths` this key may not set."""
        if self.parameters is None:
            return []
        return [path for path in paths if not any(fnmatchcase(path, allowed) for allowed in self.parameters)]


class Keyring:
    """The keys of one keys file, by id."""

    def __init__(self, keys: Iterable[Key]) -> None:
        self.keys: dict[str, Key] = {key.id: key for key in keys}

    def get(self, key_id: str) -> Key | None:
        """The key with this id, or None."""
        return self.keys.get(key_id)

    def __len__(self) -> int:
        return len(self.keys)


def load_keyring(path: Path | str, environ: Mapping[str, str] | None = None) -> Keyring:
    """Read and check a keys file; `KeysFileError` naming the key and field for anything wrong."""
    entries = _entries(read_yaml(Path(path), "keys file", KeysFileError), path)
    keys = [_key(entry, index, environ or os.environ, path) for index, entry in enumerate(entries)]
    ids = [key.id for key in keys]
    repeated = sorted({key_id for key_id in ids if ids.count(key_id) > 1})
    if repeated:
        raise KeysFileError(f"keys file {path}: key id {repeated[0]!r} is listed more than once")
    return Keyring(keys)


def paths_set(request: TriggerRequest) -> list[str]:
    """The parameter paths a request sets, in the validator's dotted form."""
    paths = [f"parameters.{name}" for name in request.parameters]
    return paths + [
        f"steps.{step}.parameters.{name}" for step, values in request.steps.items() for name in values.parameters
    ]


def parameter_path(path: str) -> str:
    """A scope's parameter path in the validator's form: `steps.S.N` becomes `steps.S.parameters.N`."""
    parts = path.split(".") if isinstance(path, str) else []
    if path == "*" or (len(parts) == 2 and parts[0] == "parameters"):
        return path
    if len(parts) == 4 and parts[0] == "steps" and parts[2] == "parameters":
        return path
    if len(parts) == 3 and parts[0] == "steps":
        return f"steps.{parts[1]}.parameters.{parts[2]}"
    raise ValueError(f"{path!r} is not a parameter path: use parameters.NAME or steps.STEP.parameters.NAME")


def _secret(item: Any, index: int, environ: Mapping[str, str]) -> str:
    if not isinstance(item, str):
        raise PydanticCustomError("secret", "secret {index} must be a string", {"index": index})
    if item.startswith(ENV_PREFIX):
        name = item[len(ENV_PREFIX) :]
        if name not in environ:
            raise PydanticCustomError("secret", "environment variable {name} is not set", {"name": name})
        item = environ[name]
    if len(item) < MIN_SECRET_CHARS:
        raise PydanticCustomError(
            "secret", "secret {index} is shorter than {least} characters", {"index": index, "least": MIN_SECRET_CHARS}
        )
    return item


def _entries(data: Any, path: Path | str) -> list[Any]:
    entries = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise KeysFileError(f"keys file {path}: expected a mapping with a 'keys' list")
    return entries


def _key(entry: Any, index: int, environ: Mapping[str, str], path: Path | str) -> Key:
    """One entry as a `Key`; its errors name the key (by id, else by position) and each field, no value."""
    key_id = entry.get("id") if isinstance(entry, dict) else None
    name = repr(key_id) if isinstance(key_id, str) else f"#{index + 1}"
    try:
        return Key.model_validate(entry, context={"environ": environ})
    except ValidationError as exc:
        problems = "; ".join(str(problem) for problem in problems_from_validation(exc))
        raise KeysFileError(f"keys file {path}: key {name}: {problems}") from None


def _template_allowed(ref: str, patterns: Iterable[str]) -> bool:
    """`nightly` allows every version (`nightly@2`); `nightly@1` only that one."""
    name = ref.partition("@")[0]
    return any(fnmatchcase(ref, pattern) or fnmatchcase(name, pattern) for pattern in patterns)


def _listed(patterns: Iterable[str]) -> str:
    return ", ".join(patterns) or "none"
