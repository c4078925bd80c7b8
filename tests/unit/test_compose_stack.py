"""How the compose smoke test (tests/support/compose_stack.py) makes a service's settings local.

A mistake here would have the smoke test run something other than what compose runs, so the
rewriting is pinned: hosts, ports and container paths change, nothing else does.
"""

from __future__ import annotations

from pathlib import Path

from tests.support.compose_stack import (
    MySQLStandIn,
    Rewrite,
    dockerfile_env,
    duration,
    healthcheck_argv,
    volume_mount,
)

REPO = Path(__file__).resolve().parents[2]


def rewrite() -> Rewrite:
    return Rewrite(
        own_ports={8080: 41000},
        peers={"redis:6379": "127.0.0.1:42000", "zenml:8080": "127.0.0.1:43000"},
        paths={"/var/lib/trigger/credentials": "/tmp/stack/root/var/lib/trigger/credentials"},
    )


def test_other_services_are_reached_on_their_local_ports() -> None:
    assert rewrite().text("redis://redis:6379/0") == "redis://127.0.0.1:42000/0"
    assert rewrite().text("http://zenml:8080") == "http://127.0.0.1:43000"


def test_the_service_listens_and_checks_itself_on_its_own_local_port() -> None:
    argv = ["trigger", "gateway", "--host", "0.0.0.0", "--port", "8080"]
    assert rewrite().argv(argv) == ["trigger", "gateway", "--host", "127.0.0.1", "--port", "41000"]
    check = "urlopen('http://127.0.0.1:8080/healthz', timeout=5)"
    assert rewrite().text(check) == "urlopen('http://127.0.0.1:41000/healthz', timeout=5)"


def test_container_paths_become_the_stacks_paths_inside_shell_lines_too() -> None:
    line = 'key="$(cat /var/lib/trigger/credentials/zenml-api-key)" && exec trigger worker'
    expected = 'key="$(cat /tmp/stack/root/var/lib/trigger/credentials/zenml-api-key)" && exec trigger worker'
    assert rewrite().text(line) == expected


def test_everything_else_is_left_as_it_is() -> None:
    for value in ["2", "json", "trigger-workers", "s3://bucket/var/lib/trigger/credentials", "redis-server", "80801"]:
        assert rewrite().text(value) == value


def test_the_mysql_url_gets_the_stand_ins_user_and_database_and_keeps_the_services_password() -> None:
    env = {"MYSQL_USER": "zenml", "MYSQL_PASSWORD": "pw", "MYSQL_DATABASE": "zenml"}
    mysql = MySQLStandIn(env, suffix="abcd")
    local = Rewrite(own_ports={}, peers=mysql.peers(), paths={})
    expected = "mysql://compose_smoke_abcd:pw@127.0.0.1:3306/compose_smoke_abcd"
    assert local.text("mysql://zenml:pw@mysql:3306/zenml") == expected
    assert local.text("mysql://zenml:other@mysql:3306/zenml") == "mysql://zenml:other@127.0.0.1:3306/zenml"


def test_our_images_environment_is_read_from_the_dockerfile() -> None:
    env = dockerfile_env(REPO / "Dockerfile")
    assert env["REMAP_SIGTERM"] == "SIGQUIT"
    assert env["ZENML_ANALYTICS_OPT_IN"] == "false"


def test_healthchecks_volumes_and_durations_read_as_compose_reads_them() -> None:
    assert healthcheck_argv({"healthcheck": {"test": ["CMD", "redis-cli", "ping"]}}) == ["redis-cli", "ping"]
    assert healthcheck_argv({"healthcheck": {"test": ["CMD-SHELL", "a && b"]}}) == ["sh", "-c", "a && b"]
    assert healthcheck_argv({"healthcheck": {"test": ["NONE"]}}) is None
    assert volume_mount("zenml-credentials:/var/lib/trigger/credentials:ro") == (
        "zenml-credentials",
        "/var/lib/trigger/credentials",
        True,
    )
    assert (duration("1m30s", 0), duration(None, 7.0)) == (90.0, 7.0)
