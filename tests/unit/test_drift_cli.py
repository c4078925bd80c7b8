"""`trigger drift check`: a per-feature table, a publish only on drift, an HTML report with one chart per drift."""

from __future__ import annotations

import json
from pathlib import Path

import fakeredis
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from producers import TriggerClient, keys
from producers.cli import cli


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path, Path]:
    rng = np.random.default_rng(7)
    reference = pd.DataFrame(
        {f"f{i}": rng.normal(size=1000) for i in range(5)} | {"plan": rng.choice(["a", "b"], 1000)}
    )
    calm = pd.DataFrame({f"f{i}": rng.normal(size=1000) for i in range(5)} | {"plan": rng.choice(["a", "b"], 1000)})
    shifted = calm.assign(f2=calm["f2"] + 1.0)
    paths = tmp_path / "reference.csv", tmp_path / "calm.csv", tmp_path / "shifted.csv"
    for frame, path in zip((reference, calm, shifted), paths, strict=True):
        frame.to_csv(path, index=False)
    return paths


def run(*args: str) -> object:
    return CliRunner().invoke(cli, ["drift", "check", *args, "--model", "churn", "--pipeline", "training_pipeline"])


def test_drift_is_published_as_one_coalesced_alert(
    files: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = fakeredis.FakeRedis()
    monkeypatch.setattr(TriggerClient, "from_env", classmethod(lambda cls: cls(fake)))
    reference, _, shifted = files

    result = run(str(reference), str(shifted), "-p", "data_url=s3://bucket/new.csv")

    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    assert "f2 " in result.output and "1 of 6 features drifted; published retrain request" in result.output  # type: ignore[attr-defined]
    assert fake.get(keys.coalesce_latest_key("drift:churn")) is not None and fake.llen("zenml-triggers") == 1


def test_no_drift_publishes_nothing_and_json_says_so(files: tuple[Path, Path, Path]) -> None:
    reference, calm, _ = files

    result = run(str(reference), str(calm), "--json", "--dry-run")

    document = json.loads(result.output)  # type: ignore[attr-defined]
    assert result.exit_code == 0 and document["published"] is None  # type: ignore[attr-defined]
    assert document["verdict"] == "no drift: nothing published" and len(document["report"]["features"]) == 6


def test_the_html_report_has_a_chart_per_drifted_feature(files: tuple[Path, Path, Path], tmp_path: Path) -> None:
    reference, _, shifted = files
    page = tmp_path / "drift.html"

    result = run(str(reference), str(shifted), "--dry-run", "--report", str(page))

    html = page.read_text()
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    assert html.count("<svg") == 1 and "f2: PSI" in html and "dry run: nothing published" in result.output  # type: ignore[attr-defined]
    assert "<script" not in html and "http" not in html.replace("http://www.w3.org/2000/svg", "")


def test_a_missing_column_is_one_clear_error(files: tuple[Path, Path, Path], tmp_path: Path) -> None:
    reference, calm, _ = files
    broken = tmp_path / "broken.csv"
    pd.read_csv(calm).drop(columns="f3").to_csv(broken, index=False)

    result = run(str(reference), str(broken), "--dry-run")

    assert result.exit_code == 1 and "f3" in result.output and "Traceback" not in result.output  # type: ignore[attr-defined]


def test_parquet_files_are_read_too(files: tuple[Path, Path, Path], tmp_path: Path) -> None:
    reference, _, shifted = files
    parquet = tmp_path / "shifted.parquet"
    pd.read_csv(shifted).to_parquet(parquet)

    result = run(str(reference), str(parquet), "--dry-run")

    assert result.exit_code == 0 and "1 of 6 features drifted" in result.output, result.output  # type: ignore[attr-defined]
