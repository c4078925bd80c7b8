"""The training pipeline's own guards: `DataUrl`'s rules, a loader that cannot hang, and what ZenML checks itself."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ConfigDict, TypeAdapter, ValidationError
from zenml.utils import pydantic_utils

from pipelines.data import DataUrl, open_regular_file
from pipelines.training import load_data, train_model

ADAPTER: TypeAdapter[str] = TypeAdapter(DataUrl)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A data root holding `data.csv`, with `outside.csv` next to (not under) it."""
    path = tmp_path / "root"
    path.mkdir()
    (path / "data.csv").write_text("a,target\n1,0\n2,1\n")
    (tmp_path / "outside.csv").write_text("a,target\n1,0\n")
    return path


def refusal(data_url: str, context: dict[str, Any] | None) -> str:
    """The message `DataUrl` refuses `data_url` with."""
    with pytest.raises(ValidationError) as info:
        ADAPTER.validate_python(data_url, context=context)
    [error] = info.value.errors()
    assert error["type"] == "value_error"
    return str(error["ctx"]["error"])


def accepts(data_url: str, context: dict[str, Any] | None) -> bool:
    return ADAPTER.validate_python(data_url, context=context) == data_url


def finishes_within(seconds: float, call: Callable[[], Any]) -> BaseException | None:
    """Run `call` in a thread; fail if it is still blocked after `seconds`, else return what it raised."""
    raised: list[BaseException | None] = [None]

    def target() -> None:
        try:
            call()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            raised[0] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still blocked after {seconds}s"
    return raised[0]


class TestSchemes:
    @pytest.mark.parametrize("url", ["s3://bucket/new.csv", "gs://bucket/x.csv", "az://container/x", "abfs://c/x"])
    def test_object_store_urls_are_accepted_with_or_without_a_root(self, url: str) -> None:
        assert accepts(url, {"data_root": None}) and accepts(url, None)

    @pytest.mark.parametrize(
        ("url", "scheme"),
        [
            ("http://10.0.0.1/x.csv", "http"),
            ("https://host/x.csv", "https"),
            ("ftp://h/x", "ftp"),
            ("hdfs://n/x", "hdfs"),
        ],
    )
    def test_other_schemes_are_refused_even_without_a_context(self, url: str, scheme: str) -> None:
        assert refusal(url, None).startswith(f"scheme {scheme!r} is not supported; use s3://, gs://")

    def test_an_object_store_url_needs_a_bucket(self) -> None:
        assert refusal("s3:///x.csv", None) == "s3:// URL names no bucket"

    def test_a_file_url_on_another_host_is_refused(self, root: Path) -> None:
        message = refusal(f"file://fileserver{root}/data.csv", {"data_root": root})
        assert "names host 'fileserver'" in message


class TestLocalPaths:
    def test_a_csv_under_the_root_is_accepted_as_a_path_or_file_url(self, root: Path) -> None:
        csv = root / "data.csv"
        for url in (str(csv), f"file://{csv}", f"file://localhost{csv}"):
            assert accepts(url, {"data_root": root}), url
        assert accepts(str(csv), {"data_root": str(root)})

    @pytest.mark.parametrize("url", ["../outside.csv", "data.csv", "sub/../../outside.csv", ""])
    def test_relative_paths_are_refused_wherever_the_worker_runs(
        self, root: Path, url: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.chdir(root)
        assert "is not an absolute path" in refusal(url, {"data_root": root})

    def test_a_dotdot_escape_is_refused(self, root: Path) -> None:
        url = f"{root}/../outside.csv"
        assert refusal(url, {"data_root": root}) == f"{url} resolves outside the data root {root}"

    def test_outside_the_root_reads_the_same_whether_or_not_the_file_exists(self, root: Path) -> None:
        existing, missing = root.parent / "outside.csv", root.parent / "missing.csv"
        for path in (existing, missing):
            assert refusal(str(path), {"data_root": root}) == f"{path} resolves outside the data root {root}"

    def test_a_symlink_out_of_the_root_is_refused(self, root: Path) -> None:
        link = root / "escape.csv"
        link.symlink_to(root.parent / "outside.csv")
        assert refusal(str(link), {"data_root": root}) == f"{link} resolves outside the data root {root}"

    def test_a_symlink_inside_the_root_is_followed(self, root: Path) -> None:
        link = root / "latest.csv"
        link.symlink_to(root / "data.csv")
        assert accepts(str(link), {"data_root": root})

    def test_a_root_reached_through_a_symlink_works(self, root: Path) -> None:
        alias = root.parent / "alias"
        alias.symlink_to(root)
        assert accepts(str(alias / "data.csv"), {"data_root": alias})
        assert accepts(str(root / "data.csv"), {"data_root": alias})

    def test_a_fifo_is_refused_at_once(self, root: Path) -> None:
        fifo = root / "pipe.csv"
        os.mkfifo(fifo)
        started = time.monotonic()
        assert refusal(str(fifo), {"data_root": root}) == f"{fifo} is not a regular file"
        assert time.monotonic() - started < 1

    def test_a_directory_is_refused(self, root: Path) -> None:
        (root / "daily").mkdir()
        assert refusal(str(root / "daily"), {"data_root": root}) == f"{root / 'daily'} is not a regular file"

    def test_a_missing_file_under_the_root_is_refused(self, root: Path) -> None:
        assert (
            refusal(str(root / "nope.csv"), {"data_root": root})
            == f"{root / 'nope.csv'} does not exist or cannot be read"
        )

    @pytest.mark.parametrize("context", [{"data_root": None}, {}], ids=["no-root", "root-key-missing"])
    def test_a_context_without_a_root_refuses_local_paths(self, root: Path, context: dict[str, Any]) -> None:
        assert "the worker has no data root (TRIGGER_DATA_ROOT)" in refusal(str(root / "data.csv"), context)

    def test_without_a_context_only_the_shape_is_checked(self, root: Path) -> None:
        """ZenML validates step parameters again at run time, with no context: that must not refuse a planned run."""
        assert accepts("/not/under/any/root.csv", None)
        assert "is not an absolute path" in refusal("relative.csv", None)


class TestLoader:
    def test_load_data_reads_a_csv(self, root: Path) -> None:
        data = load_data.entrypoint(data_url=f"file://{root / 'data.csv'}")
        assert list(data.columns) == ["a", "target"] and len(data) == 2

    def test_load_data_simulates_remote_data(self) -> None:
        data = load_data.entrypoint(data_url="s3://bucket/x.csv", n_samples=120, seed=1)
        assert len(data) == 120 and "target" in data.columns

    def test_load_data_refuses_a_fifo_without_blocking(self, root: Path) -> None:
        """A FIFO swapped in after validation: opening it plainly would wait for a writer forever."""
        fifo = root / "swapped.csv"
        os.mkfifo(fifo)
        raised = finishes_within(5, lambda: load_data.entrypoint(data_url=str(fifo)))
        assert isinstance(raised, ValueError) and "is not a regular file" in str(raised)

    def test_open_regular_file_refuses_a_directory(self, root: Path) -> None:
        with pytest.raises(ValueError, match="is not a regular file"):
            open_regular_file(root)

    def test_open_regular_file_reads_in_blocking_mode(self, root: Path) -> None:
        with open_regular_file(root / "data.csv") as file:
            assert os.get_blocking(file.fileno())
            assert file.read().startswith(b"a,target")


class TestZenMLsOwnChecks:
    """ZenML 0.98 validates step parameters with pydantic too, with the `Annotated` metadata but no context."""

    def test_the_step_runner_enforces_the_bounds(self) -> None:
        with pytest.raises(ValidationError, match="less than or equal to 10000"):
            pydantic_utils.validate_function_args(
                load_data.entrypoint, ConfigDict(arbitrary_types_allowed=True), data_url="s3://b/x", n_samples=10**6
            )

    def test_the_step_runner_accepts_a_local_path_the_worker_planned(self) -> None:
        arguments = pydantic_utils.validate_function_args(
            load_data.entrypoint, ConfigDict(arbitrary_types_allowed=True), data_url="/srv/data/x.csv"
        )
        assert arguments["data_url"] == "/srv/data/x.csv"

    def test_compiling_a_pipeline_refuses_an_out_of_bound_parameter(self) -> None:
        with pytest.raises(RuntimeError, match="Input validation failed for input 'n_estimators'"):
            train_model.entrypoint_definition.validate_input(key="n_estimators", value=10**400)
