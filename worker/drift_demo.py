"""`trigger drift demo`: real data, a real shift, a burst of alerts, and exactly the runs that are needed.

scikit-learn's breast cancer data set is split in two; three features of the second half are
shifted by 0.8 standard deviations. The detector finds them, then 20 alerts go out in a burst
while a real worker runs: they coalesce into one run (plus one trailing run if alerts arrived
while it ran), trained on the current CSV through `data_url`, and every alert is accounted for.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections import Counter
from pathlib import Path

import click
import pandas as pd
from sklearn.datasets import load_breast_cancer

from producers.alerts import DriftPublisher
from producers.client import TriggerClient
from producers.drift import DriftDetector, DriftReport
from producers.settings import ProducerSettings
from producers.state import RequestState, Status
from worker.demo import DEMO_QUEUE, _wait, demo_redis, running_worker

SHIFTED = ("mean radius", "mean texture", "worst area")
ALERTS = 20


def write_data(folder: Path) -> tuple[Path, Path]:
    """A reference CSV and a current CSV whose `SHIFTED` features moved by 0.8 standard deviations."""
    frame = load_breast_cancer(as_frame=True).frame
    reference = frame.sample(frac=0.5, random_state=0)
    current = frame.drop(reference.index).copy()
    for column in SHIFTED:
        current[column] = current[column] + 0.8 * reference[column].std()
    paths = folder / "reference.csv", folder / "current.csv"
    reference.to_csv(paths[0], index=False)
    current.to_csv(paths[1], index=False)
    return paths


def print_report(report: DriftReport) -> None:
    """The drifted features' scores, and how many were calm."""
    click.echo(f"Drift check: {len(report.drifted_features)} of {len(report.features)} features drifted")
    for feature in report.features:
        if feature.drifted:
            click.echo(f"  {feature.name:<24} PSI {feature.psi:6.3f}  p-value {feature.p_value:.2g}")


def account(states: list[RequestState]) -> str:
    """`20 alerts -> 1 run (+1 trailing) ...`: what the burst became."""
    counts = Counter(state.status for state in states)
    runs = sum(counts[s] for s in (Status.SUCCEEDED, Status.FAILED))
    trailing = f" (+{runs - 1} trailing)" if runs > 1 else ""
    accounted = all(state.status.terminal for state in states)
    return (
        f"{len(states)} alerts -> 1 run{trailing}, {counts[Status.COALESCED]} coalesced; "
        f"every alert accounted for: {'yes' if accounted else 'no'}"
    )


@click.command()
@click.option("--timeout", default=300.0, show_default=True, help="Seconds to wait for each alert's outcome.")
def drift_demo(timeout: float) -> None:
    """Detect a real shift, fire a burst of alerts at a real worker, and show exactly the runs that are needed."""
    folder = Path(tempfile.mkdtemp(prefix="trigger-drift-demo-"))
    reference, current = write_data(folder)
    report = DriftDetector.fit(pd.read_csv(reference)).check(pd.read_csv(current))
    print_report(report)
    os.environ["TRIGGER_DATA_ROOT"] = str(folder)  # the worker may read the current CSV, and nothing else local
    with demo_redis(ProducerSettings().redis_url) as url, running_worker(url, str(folder / "worker.log")) as worker:
        client = TriggerClient.from_settings(ProducerSettings(redis_url=url, queue=DEMO_QUEUE, enqueue_timeout=2))
        publisher, model = DriftPublisher(client), f"breast-cancer-{uuid.uuid4().hex[:6]}"
        parameters = {"data_url": f"file://{current}"}
        sent = [
            publisher.publish(report, model=model, pipeline="training_pipeline", parameters=parameters)
            for _ in range(ALERTS)
        ]
        click.echo(f"Published {ALERTS} alerts in a burst (coalescing key drift:{model}); worker log: {folder}")
        states = [_wait(client, request_id, timeout, worker) for request_id in sent if request_id]
    for state in states:
        if state.status is not Status.COALESCED:
            click.echo(f"  run for {state.request_id}: {state.status.value}, covered {state.coalesced_count} alerts")
    click.echo(account(states))
