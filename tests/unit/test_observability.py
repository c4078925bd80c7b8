"""The compose stack's `observability` profile: Prometheus' scrape config, Grafana's provisioning, the dashboard.

The dashboard may use only the metric names and labels the worker and gateway promise (README
"Metrics"); a renamed metric or label would leave a panel silently empty, so it fails here instead.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.tools import tool

REPO = Path(__file__).resolve().parents[2]
OBSERVABILITY = REPO / "examples" / "observability"
PROMETHEUS_CONFIG = OBSERVABILITY / "prometheus.yml"
DASHBOARD = OBSERVABILITY / "grafana" / "dashboards" / "zenml-queue-trigger.json"
DATASOURCES = OBSERVABILITY / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDERS = OBSERVABILITY / "grafana" / "provisioning" / "dashboards" / "zenml-queue-trigger.yml"

# The metrics contract: name -> (type, labels).
CONTRACT: dict[str, tuple[str, set[str]]] = {
    "trigger_requests_total": ("counter", {"pipeline", "status"}),
    "trigger_attempts_total": ("counter", {"pipeline"}),
    "trigger_retries_total": ("counter", {"pipeline"}),
    "trigger_dead_letters_total": ("counter", {"pipeline"}),
    "trigger_run_duration_seconds": ("histogram", {"pipeline", "status"}),
    "trigger_queue_wait_seconds": ("histogram", {"pipeline"}),
    "trigger_runs_in_flight": ("gauge", {"pipeline"}),
    "trigger_queue_depth": ("gauge", {"queue"}),
    "trigger_retry_scheduled": ("gauge", {"queue"}),
    "trigger_dead_letter_store_size": ("gauge", set()),
    "trigger_leases_held": ("gauge", set()),
    "trigger_gateway_requests_total": ("counter", {"route", "code"}),
    "trigger_gateway_request_duration_seconds": ("histogram", {"route"}),
}
HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset"}
IDENTIFIER = re.compile(r"[A-Za-z_:][\w:]*")


def compose_services() -> dict[str, Any]:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def expressions() -> list[str]:
    return [target["expr"] for panel in dashboard()["panels"] for target in panel["targets"]]


def metric_names(expr: str) -> set[str]:
    """The series an expression selects: identifiers that are neither functions, keywords, label names
    (in `by (...)`, `{...}`), nor inside a range (`[5m]`)."""
    text = re.sub(r'"[^"]*"', '""', expr)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", text)
    found = (match for match in IDENTIFIER.finditer(text) if not re.match(r"\s*\(", text[match.end() :]))
    return {match.group() for match in found if match.group() not in KEYWORDS}


def label_names(expr: str) -> set[str]:
    """Labels an expression groups by or matches on."""
    grouped = re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr)
    matched = re.findall(r"\{([^}]*)\}", expr)
    names = {name.strip() for group in grouped for name in group.split(",")}
    return names | {re.split(r"[=!~]", pair)[0].strip() for group in matched for pair in group.split(",") if pair}


def contract_metric(series: str) -> str:
    """The contract metric a series belongs to (a histogram's `_bucket`, `_sum`, `_count` included)."""
    if series in CONTRACT and CONTRACT[series][0] != "histogram":
        return series
    base = next((series.removesuffix(end) for end in HISTOGRAM_SERIES if series.endswith(end)), series)
    assert CONTRACT.get(base, ("",))[0] == "histogram", f"{series} is not a metric the worker or gateway serves"
    return base


def test_the_dashboard_parses_and_every_panel_queries_the_provisioned_datasource() -> None:
    board = dashboard()
    datasource = yaml.safe_load(DATASOURCES.read_text())["datasources"][0]
    assert board["uid"] and board["panels"]
    for panel in board["panels"]:
        assert panel["targets"], panel["title"]
        for target in [panel, *panel["targets"]]:
            assert target["datasource"] == {"type": "prometheus", "uid": datasource["uid"]}, panel["title"]


def test_the_metric_name_reader_finds_series_and_skips_functions_labels_and_ranges() -> None:
    expr = 'histogram_quantile(0.95, sum by (le, pipeline) (rate(x_bucket{status="ok"}[$__rate_interval]))) / y'
    assert metric_names(expr) == {"x_bucket", "y"}
    assert label_names(expr) == {"le", "pipeline", "status"}


def test_every_expression_names_only_contract_metrics_and_their_labels() -> None:
    for expr in expressions():
        series = metric_names(expr)
        assert series, f"no metric found in {expr!r}"
        metrics = {contract_metric(name) for name in series}
        allowed = set().union(*(CONTRACT[metric][1] for metric in metrics))
        allowed |= {"le"} if any(name.endswith("_bucket") for name in series) else set()
        assert label_names(expr) <= allowed, f"{expr!r} uses labels outside {sorted(allowed)}"


def test_the_dashboard_shows_what_an_operator_asks_first() -> None:
    """Requests by status, run durations p50/p95, queue depth, dead letters, retries, runs in flight."""
    exprs = expressions()
    used = {contract_metric(name) for expr in exprs for name in metric_names(expr)}
    wanted = {"trigger_requests_total", "trigger_run_duration_seconds", "trigger_queue_depth"}
    wanted |= {"trigger_dead_letters_total", "trigger_retries_total", "trigger_runs_in_flight"}
    assert wanted <= used
    assert any("by (status)" in expr and "trigger_requests_total" in expr for expr in exprs)
    for quantile in ("0.5", "0.95"):
        assert any(f"histogram_quantile({quantile}," in e and "trigger_run_duration_seconds" in e for e in exprs)


def test_cluster_gauges_are_not_summed_over_workers() -> None:
    """Every worker reports the same Redis-wide figure, so a sum would count it once per replica."""
    for expr in expressions():
        for gauge in ("trigger_queue_depth", "trigger_retry_scheduled", "trigger_dead_letter_store_size"):
            assert not (gauge in expr and "sum" in expr), expr


def test_prometheus_scrapes_every_worker_replica_and_the_gateway() -> None:
    jobs = {job["job_name"]: job for job in yaml.safe_load(PROMETHEUS_CONFIG.read_text())["scrape_configs"]}
    services = compose_services()
    discovery = jobs["worker"]["dns_sd_configs"][0]
    assert (discovery["names"], discovery["port"], jobs["worker"]["metrics_path"]) == (["worker"], 9808, "/metrics")
    assert services["worker"]["environment"]["TRIGGER_METRICS_PORT"] == "9808"
    assert "9808" in services["worker"]["expose"]
    assert jobs["gateway"]["static_configs"][0]["targets"] == ["gateway:8080"]
    assert "8080" in services["gateway"]["command"]


def test_promtool_accepts_the_prometheus_config() -> None:
    result = subprocess.run(
        [tool("promtool"), "check", "config", str(PROMETHEUS_CONFIG)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", ["prometheus", "grafana"])
def test_the_profile_services_start_only_with_the_profile_and_mount_files_that_exist(name: str) -> None:
    service = compose_services()[name]
    assert service["profiles"] == ["observability"]
    for volume in service["volumes"]:
        source = volume.split(":")[0]
        if source.startswith("./"):
            assert (REPO / source).exists(), volume


def test_grafana_is_provisioned_from_the_mounted_files_and_signs_in_with_the_env_password() -> None:
    grafana = compose_services()["grafana"]
    targets = {volume.split(":")[1] for volume in grafana["volumes"]}
    provider = yaml.safe_load(DASHBOARD_PROVIDERS.read_text())["providers"][0]
    assert {"/etc/grafana/provisioning", provider["options"]["path"]} <= targets
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == "${GRAFANA_ADMIN_PASSWORD}"
    assert grafana["depends_on"] == {"prometheus": {"condition": "service_healthy"}}
    assert yaml.safe_load(DATASOURCES.read_text())["datasources"][0]["url"] == "http://prometheus:9090"
