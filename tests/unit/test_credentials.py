"""The keys file: ids, secrets (from the environment too), scopes and expiry; clear errors that never show a secret."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from producers.contract import build_request
from producers.credentials import Key, KeysFileError, load_keyring, parameter_path, paths_set

SECRET = "s3cret-value-nobody-may-read-0123456789"
OTHER = "another-secret-value-0123456789-abcdef"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "keys.yaml"
    path.write_text(text)
    return path


def key(**fields: Any) -> Key:
    return Key.model_validate({"id": "k", "secrets": [SECRET], **fields})


def load_error(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(KeysFileError) as caught:
        load_keyring(write(tmp_path, text), environ=environ or {"UNRELATED": "x"})
    return str(caught.value)


def test_a_keys_file_with_secrets_inline_and_from_the_environment(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
keys:
  - id: drift-monitor
    secrets: ["env:DRIFT_SECRET"]
    pipelines: [training_pipeline]
    parameters: [parameters.data_url, steps.load_data.data_url]
    expires_at: 2030-01-01T00:00:00Z
  - id: ci
    secrets: ["{SECRET}", "{OTHER}"]
    pipelines: ["*"]
    templates: [nightly]
""",
    )

    keyring = load_keyring(path, environ={"DRIFT_SECRET": OTHER})

    drift, ci = keyring.get("drift-monitor"), keyring.get("ci")
    assert drift is not None and ci is not None and len(keyring) == 2 and keyring.get("nobody") is None
    assert drift.secret_bytes() == (OTHER.encode(),)
    assert ci.secret_bytes() == (SECRET.encode(), OTHER.encode())
    assert drift.parameters == ("parameters.data_url", "steps.load_data.parameters.data_url")
    assert ci.parameters is None and drift.templates == ()
    assert drift.expires_at == datetime(2030, 1, 1, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ('{id: drift, secrets: ["env:MISSING"]}', "key 'drift': secrets: environment variable MISSING is not set"),
        ('{id: drift, secrets: ["short"]}', "key 'drift': secrets: secret 0 is shorter than 32 characters"),
        ("{id: drift, secrets: []}", "key 'drift': secrets:"),
        (f'{{id: drift, secrets: ["{SECRET}", "{OTHER}", "{SECRET}x"]}}', "key 'drift': secrets:"),
        (f'{{id: drift, secrets: ["{SECRET}"], pipeline: [x]}}', "key 'drift': pipeline: Extra inputs"),
        (f'{{id: drift, secrets: ["{SECRET}"], parameters: [data_url]}}', "key 'drift': parameters: Value error"),
        (f'{{id: drift, secrets: ["{SECRET}"], expires_at: 2030-01-01T00:00:00}}', "key 'drift': expires_at:"),
        (f'{{id: "bad id", secrets: ["{SECRET}"]}}', "key 'bad id': id: String should match pattern"),
        (f'{{secrets: ["{SECRET}"]}}', "key #1: id: Field required"),
    ],
)
def test_a_bad_key_is_refused_naming_the_key_and_the_field(tmp_path: Path, entry: str, expected: str) -> None:
    message = load_error(tmp_path, f"keys:\n  - {entry}\n")

    assert expected in message and str(tmp_path) in message
    assert SECRET not in message and OTHER not in message and "short" not in message.split("secret 0")[0]


def test_a_file_that_is_not_keys_is_refused(tmp_path: Path) -> None:
    assert "is not valid YAML at line 2" in load_error(tmp_path, "keys:\n\t- id: drift\n")
    assert "expected a mapping with a 'keys' list" in load_error(tmp_path, "- id: drift\n")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"keys: \xff\xfe")
    with pytest.raises(KeysFileError, match=r"binary\.yaml is not YAML text"):
        load_keyring(binary)
    with pytest.raises(KeysFileError, match=r"missing\.yaml cannot be read"):
        load_keyring(tmp_path / "missing.yaml")


def test_a_key_id_listed_twice_is_refused(tmp_path: Path) -> None:
    twice = f'keys:\n  - {{id: ci, secrets: ["{SECRET}"]}}\n  - {{id: ci, secrets: ["{OTHER}"]}}\n'

    assert "key id 'ci' is listed more than once" in load_error(tmp_path, twice)


def test_a_key_never_shows_its_secret() -> None:
    shown = key()

    assert SECRET not in repr(shown) and SECRET not in str(shown.model_dump())


def test_a_key_expires_at_its_time() -> None:
    at = datetime(2030, 1, 1, tzinfo=timezone.utc)

    assert not key().expired(at)
    assert not key(expires_at=at).expired(at - timedelta(seconds=1))
    assert key(expires_at=at).expired(at)


def test_pipeline_scopes_take_names_and_patterns() -> None:
    only_training = key(pipelines=["training_pipeline"])
    any_training = key(pipelines=["training_*"])
    nothing = key()
    training, other = build_request(pipeline_name="training_pipeline"), build_request(pipeline_name="etl_pipeline")

    assert only_training.target_problem(training) is None and any_training.target_problem(training) is None
    assert only_training.target_problem(other) == (
        "key 'k' may not trigger pipeline 'etl_pipeline' (its pipelines: training_pipeline)"
    )
    assert (
        nothing.target_problem(training) == "key 'k' may not trigger pipeline 'training_pipeline' (its pipelines: none)"
    )


def test_a_template_scope_covers_its_versions_and_a_pinned_one_only_itself() -> None:
    every_version, pinned = key(templates=["nightly"]), key(templates=["nightly@1"])
    latest, first = build_request(template="nightly"), build_request(template="nightly@1")
    second = build_request(template="nightly@2")

    assert every_version.target_problem(latest) is None and every_version.target_problem(second) is None
    assert pinned.target_problem(first) is None
    assert pinned.target_problem(second) is not None and pinned.target_problem(latest) is not None
    assert key(pipelines=["*"]).target_problem(latest) is not None, "pipelines do not cover templates"


def test_parameter_paths_are_checked_in_the_validators_form() -> None:
    drift = key(parameters=["parameters.data_url", "steps.load_data.data_url"])
    request = build_request(
        pipeline_name="training_pipeline",
        parameters={"data_url": "s3://b/x.csv", "model_type": "gradient_boosting"},
        steps={"load_data": {"data_url": "s3://b/x.csv"}, "train_model": {"n_estimators": 5}},
    )

    assert paths_set(request) == [
        "parameters.data_url",
        "parameters.model_type",
        "steps.load_data.parameters.data_url",
        "steps.train_model.parameters.n_estimators",
    ]
    assert drift.refused_paths(paths_set(request)) == [
        "parameters.model_type",
        "steps.train_model.parameters.n_estimators",
    ]


def test_no_parameter_scope_allows_any_path_and_an_empty_one_none() -> None:
    paths = ["parameters.data_url", "steps.train_model.parameters.n_estimators"]

    assert key().refused_paths(paths) == []
    assert key(parameters=[]).refused_paths(paths) == paths
    assert key(parameters=["steps.*.parameters.*"]).refused_paths(paths) == ["parameters.data_url"]
    assert key(parameters=["*"]).refused_paths(paths) == []


@pytest.mark.parametrize("path", ["data_url", "steps.train_model", "params.data_url", "steps.a.b.c", ""])
def test_a_path_that_names_no_parameter_is_refused(path: str) -> None:
    with pytest.raises(ValueError, match="is not a parameter path"):
        parameter_path(path)
