"""A bad pipeline configuration stops the worker at start, with one clear line, never per message."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from click.testing import CliRunner

from producers.cli import cli
from worker import tasks
from worker.app import celery_config, create_app
from worker.settings import WorkerSettings


@pytest.mark.parametrize(
    ("path", "reason"),
    [("os:system", "not a ZenML @pipeline"), ("no.such.module:thing", "cannot import"), ("nocolon", "must look like")],
)
def test_worker_init_exits_on_a_bad_pipeline_path(path: str, reason: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tasks, "_processor", None)
    app = create_app(WorkerSettings(pipelines=[path], redis_url="redis://127.0.0.1:1/0"))
    with pytest.raises(SystemExit, match=reason):
        tasks.on_worker_init()
    assert app.trigger_settings.pipelines == [path]  # type: ignore[attr-defined]
    monkeypatch.setattr(tasks, "_processor", None)


def test_pipelines_command_reports_a_bad_path_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIGGER_PIPELINES", "os:system")
    result = CliRunner().invoke(cli, ["pipelines"])
    assert result.exit_code == 1
    assert (
        result.output.strip()
        == "Error: pipeline path 'os:system' is a builtin_function_or_method, not a ZenML @pipeline"
    )
    assert "Traceback" not in result.output


def test_settings_split_comma_separated_pipelines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIGGER_PIPELINES", "pipelines.training:training_pipeline, my.flows:retrain ")
    assert WorkerSettings().pipelines == ["pipelines.training:training_pipeline", "my.flows:retrain"]


class _Worker:
    def __init__(self, pool_cls: object) -> None:
        self.pool_cls = pool_cls


@pytest.mark.parametrize("pool", ["threads", "gevent", "eventlet"])
def test_worker_init_refuses_pools_where_the_run_time_limit_cannot_hold(
    pool: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tasks, "_processor", None)
    create_app(WorkerSettings(redis_url="redis://127.0.0.1:1/0"))
    pool_cls = type("TaskPool", (), {"__module__": f"celery.concurrency.{pool}"})
    with pytest.raises(SystemExit, match=f"--pool {pool} is not supported"):
        tasks.on_worker_init(sender=_Worker(pool_cls))


def test_pool_names_as_operators_write_them() -> None:
    from celery.concurrency import prefork, solo

    assert tasks.pool_name(_Worker(prefork.TaskPool)) == "prefork"
    assert tasks.pool_name(_Worker(solo.TaskPool)) == "solo"


def test_the_hard_limit_is_the_largest_run_limit_plus_the_grace() -> None:
    settings = WorkerSettings(run_timeout=600, run_timeouts={"a": 7200, "template:nightly": 60}, run_timeout_grace=30)
    assert tasks.hard_time_limit(settings) == 7230
    app = create_app(settings)
    assert app.tasks["zenml_trigger.run"].time_limit == 7230


def test_worker_init_exits_on_a_keys_file_that_does_not_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keys_file = tmp_path / "keys.yaml"
    keys_file.write_text('keys:\n  - {id: drift, secrets: ["too-short"]}\n')
    monkeypatch.setattr(tasks, "_processor", None)
    create_app(WorkerSettings(redis_url="redis://127.0.0.1:1/0", require_signed=True, keys_file=keys_file))

    with pytest.raises(SystemExit, match="key 'drift': secrets: secret 0 is shorter than 32 characters") as caught:
        tasks.on_worker_init(sender=_Worker(None))

    assert "too-short" not in str(caught.value)
    monkeypatch.setattr(tasks, "_processor", None)


def test_a_rediss_url_makes_the_worker_verify_the_server_and_a_redis_url_uses_no_tls() -> None:
    secure = celery_config(WorkerSettings(redis_url="rediss://worker:pw@redis.internal:6380/0"))
    plain = celery_config(WorkerSettings(redis_url="redis://127.0.0.1:6379/0"))

    assert secure["broker_use_ssl"] == {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    assert plain["broker_use_ssl"] is None
