"""`trigger drift check`: compare two data files, print the drift, publish a coalesced retrain on drift.

Loaded only when the command runs, since it needs the `drift` extra (pandas, numpy, scipy).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import pandas as pd

from producers.alerts import DriftPublisher
from producers.cli import parse_assignment, parse_step_assignments
from producers.client import TriggerClient
from producers.drift import DriftDetector, DriftInputError, DriftReport
from producers.drift_report import render


@click.group()
def drift() -> None:
    """Drift checks that publish retrains."""


@drift.command("demo")
@click.option("--timeout", default=300.0, show_default=True, help="Seconds to wait for each alert's outcome.")
@click.pass_context
def demo(ctx: click.Context, timeout: float) -> None:
    """Detect a real shift, fire a burst of alerts at a real worker, show the runs they became (worker extra)."""
    from worker.drift_demo import drift_demo  # the worker side, loaded only for the demo

    ctx.invoke(drift_demo, timeout=timeout)


def read_frame(path: Path) -> pd.DataFrame:
    """A CSV or Parquet file as a frame; one clear error when it cannot be read."""
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(path)
        return pd.read_csv(path)
    except ImportError as exc:
        raise click.ClickException(f"{path}: reading Parquet needs pyarrow ({exc})") from None
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"{path}: cannot read it as {path.suffix or 'CSV'}: {exc}") from None


@drift.command()
@click.argument("reference", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("current", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--model", required=True, help="The model the data feeds; alerts coalesce per model (drift:MODEL).")
@click.option("--pipeline", help="Pipeline to retrain with.")
@click.option("--template", help="Template to retrain with, instead of a pipeline.")
@click.option("-p", "--param", "params", multiple=True, metavar="KEY=VALUE", help="Pipeline-level parameter.")
@click.option("-s", "--step-param", "step_params", multiple=True, metavar="STEP.KEY=VALUE", help="Step parameter.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object: the report and what was published.")
@click.option("--dry-run", is_flag=True, help="Check and print, but publish nothing.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path), help="Write an HTML report.")
def check(
    reference: Path,
    current: Path,
    model: str,
    pipeline: str | None,
    template: str | None,
    params: tuple[str, ...],
    step_params: tuple[str, ...],
    as_json: bool,
    dry_run: bool,
    report_path: Path | None,
) -> None:
    """Compare CURRENT with REFERENCE (CSV or Parquet) and publish a retrain when they drifted."""
    if (pipeline is None) == (template is None):
        raise click.UsageError("give --pipeline NAME or --template NAME (exactly one)")
    ref_frame, cur_frame = read_frame(reference), read_frame(current)
    try:
        report = DriftDetector.fit(ref_frame).check(cur_frame)
    except DriftInputError as exc:
        raise click.ClickException(str(exc)) from None
    if report_path is not None:
        report_path.write_text(render(report, ref_frame, cur_frame, title=f"Drift of {model}"), encoding="utf-8")
    published = None if dry_run else _publish(report, model, pipeline, template, params, step_params)
    _print(report, published, dry_run, as_json, report_path)


def _publish(
    report: DriftReport,
    model: str,
    pipeline: str | None,
    template: str | None,
    params: tuple[str, ...],
    step_params: tuple[str, ...],
) -> str | None:
    parameters = dict(parse_assignment(p, "-p") for p in params)
    steps = parse_step_assignments(step_params)
    publisher = DriftPublisher(TriggerClient.from_env())
    return publisher.publish(
        report, model=model, pipeline=pipeline, template=template, parameters=parameters, steps=steps
    )


def _print(report: DriftReport, published: str | None, dry_run: bool, as_json: bool, report_path: Path | None) -> None:
    verdict = _verdict(report, published, dry_run)
    if as_json:
        document: dict[str, Any] = {"report": report.model_dump(mode="json"), "published": published}
        click.echo(json.dumps({**document, "verdict": verdict, "html_report": str(report_path or "") or None}))
        return
    click.echo(f"{'feature':<28} {'kind':<12} {'statistic':>10} {'p-value':>10} {'PSI':>8}  drifted")
    for f in report.features:
        name = f.name if len(f.name) <= 28 else f.name[:27] + "…"
        mark = "yes" if f.drifted else "no"
        click.echo(f"{name:<28} {f.kind:<12} {f.statistic:>10.4f} {f.p_value:>10.3g} {f.psi:>8.4f}  {mark}")
    click.echo(verdict)
    if report_path is not None:
        click.echo(f"report: {report_path}")


def _verdict(report: DriftReport, published: str | None, dry_run: bool) -> str:
    share = f"{len(report.drifted_features)} of {len(report.features)} features drifted"
    if not report.drifted:
        return "no drift: nothing published"
    if dry_run:
        return f"{share}; dry run: nothing published"
    return f"{share}; published retrain request {published}"
