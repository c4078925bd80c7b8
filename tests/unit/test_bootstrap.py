"""The stack's init (worker/bootstrap.py) and the worker container's health check, without a server."""

from __future__ import annotations

import stat
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from producers.settings import ProducerSettings
from worker import healthcheck
from worker.bootstrap import (
    Action,
    BootstrapSettings,
    bootstrap,
    key_file_present,
    plan,
    wait_until,
    write_key_file,
)


@pytest.mark.parametrize(
    ("file_present", "on_server", "action"),
    [
        (True, True, Action.KEEP),
        (False, True, Action.ROTATE),
        (True, False, Action.CREATE),
        (False, False, Action.CREATE),
    ],
)
def test_plan_keeps_only_a_key_both_sides_know(file_present: bool, on_server: bool, action: Action) -> None:
    assert plan(file_present, on_server) is action


def test_key_file_is_owner_only_and_an_empty_one_does_not_count(tmp_path: Path) -> None:
    path = tmp_path / "credentials" / "zenml-api-key"
    assert not key_file_present(path)
    write_key_file(path, "ZENKEY_abc")
    assert path.read_text() == "ZENKEY_abc\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert key_file_present(path)
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind
    path.write_text("\n")
    assert not key_file_present(path)


def test_wait_until_gives_up_at_the_deadline() -> None:
    now = [0.0]
    answers = iter([False, False, True])
    assert wait_until(
        lambda: next(answers), 10, interval=2, clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s)
    )
    assert now[0] == 4
    now[0] = 0.0
    assert not wait_until(
        lambda: False, 5, interval=2, clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s)
    )
    assert now[0] == 6


class FakeZenML:
    """The few `zenml.client.Client` calls the bootstrap makes, against in-memory accounts and keys."""

    def __init__(self) -> None:
        self.accounts: set[str] = set()
        self.keys: dict[tuple[str, str], str] = {}
        self.issued = 0

    def get_service_account(self, name: str, allow_name_prefix_match: bool = True) -> Any:
        if name not in self.accounts:
            raise KeyError(name)
        return SimpleNamespace(name=name)

    def create_service_account(self, name: str, description: str = "") -> Any:
        self.accounts.add(name)
        return SimpleNamespace(name=name)

    def list_api_keys(self, account: str, name: str) -> Any:
        return SimpleNamespace(items=[name] if (account, name) in self.keys else [])

    def _issue(self, account: str, name: str) -> Any:
        self.issued += 1
        self.keys[account, name] = f"ZENKEY_{self.issued}"
        return SimpleNamespace(key=self.keys[account, name])

    def create_api_key(self, account: str, name: str, description: str = "") -> Any:
        return self._issue(account, name)

    def rotate_api_key(self, account: str, name: str, retain_period_minutes: int = 0) -> Any:
        assert (account, name) in self.keys
        return self._issue(account, name)


def test_bootstrap_is_idempotent_and_recovers_a_lost_key_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIGGER_BOOTSTRAP_API_KEY_FILE", str(tmp_path / "key"))
    settings, zenml = BootstrapSettings(), FakeZenML()
    assert bootstrap(zenml, settings) is Action.CREATE
    assert zenml.accounts == {"trigger-workers"}
    assert (tmp_path / "key").read_text() == "ZENKEY_1\n"
    assert bootstrap(zenml, settings) is Action.KEEP
    assert zenml.issued == 1
    (tmp_path / "key").unlink()
    assert bootstrap(zenml, settings) is Action.ROTATE
    assert (tmp_path / "key").read_text() == "ZENKEY_2\n" == zenml.keys["trigger-workers", "trigger-workers"] + "\n"


def test_bootstrap_reads_the_server_url_zenml_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZENML_STORE_URL", "http://zenml.example:8080")
    assert BootstrapSettings().server_url == "http://zenml.example:8080"


def write_proc(root: Path, cmdline: list[str], state: str = "S") -> Path:
    root.mkdir()
    (root / "cmdline").write_bytes(b"\0".join(arg.encode() for arg in cmdline) + b"\0")
    (root / "stat").write_text(f"1 (python (x)) {state} 0 1 1\n")
    return root


def test_healthcheck_wants_a_live_worker_as_the_main_process(tmp_path: Path) -> None:
    worker = ["/usr/local/bin/python", "/usr/local/bin/trigger", "worker"]
    assert healthcheck.main_process_problem(write_proc(tmp_path / "a", worker)) is None
    shell = ["sh", "-c", "export K=x && exec trigger worker"]
    assert "not a worker" in healthcheck.main_process_problem(write_proc(tmp_path / "b", shell))
    assert "not running" in healthcheck.main_process_problem(write_proc(tmp_path / "c", worker, state="Z"))
    assert "cannot read" in healthcheck.main_process_problem(tmp_path / "missing")


def test_healthcheck_names_redis_without_its_password() -> None:
    settings = ProducerSettings(redis_url="redis://:hunter2@127.0.0.1:1/0", connect_timeout=0.2, enqueue_timeout=0.2)
    problem = healthcheck.redis_problem(settings)
    assert problem is not None and ":***@" in problem and "hunter2" not in problem


def test_healthcheck_of_beat_wants_trigger_beat_as_the_main_process(tmp_path: Path) -> None:
    beat = ["/usr/local/bin/python", "/usr/local/bin/trigger", "beat"]
    assert healthcheck.main_process_problem(write_proc(tmp_path / "a", beat), role="beat") is None
    assert "not a worker" in healthcheck.main_process_problem(write_proc(tmp_path / "b", beat))
