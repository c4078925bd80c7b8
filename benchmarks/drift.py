"""Time of `DriftDetector.check` on a large frame, next to plain numpy work on the same data in the same run.

Builds a reference and a current frame of seeded normal data (one feature shifted by 0.5 sigma), fits
once, then times, in interleaved rounds (rotating the order so machine noise hits them alike):

* ``check``:          ``DriftDetector.check(current)``: KS + PSI for every feature, the report included;
* ``fit``:            ``DriftDetector.fit(reference)``;
* ``numpy_quantile``: ``numpy.quantile`` of every current column at the PSI bin edges (the baseline:
  one pass of plain numpy over the same data, with no test at all);
* ``numpy_sort``:     ``numpy.sort`` of every current column (KS must sort both samples).

Prints one JSON object: wall seconds per mode (median, min, every round) and median CPU seconds
(check runs one thread per CPU, so its CPU time can exceed its wall time), check's wall-time
ratio to each baseline, and whether the median check meets the target (default 1 s).

    python benchmarks/drift.py [--rows 100000] [--features 50] [--rounds 5] [--target 1.0]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from producers.drift import DriftDetector, DriftSettings


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--rows", type=int, default=100_000, help="rows in each frame (default: %(default)s)")
    add("--features", type=int, default=50, help="numeric features (default: %(default)s)")
    add("--rounds", type=int, default=5, help="timed rounds per mode (default: %(default)s)")
    add("--target", type=float, default=1.0, help="seconds the median check should stay under (default: %(default)s)")
    add("--seed", type=int, default=0)
    return parser.parse_args()


def frames(rows: int, features: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Reference and current frames of standard normal columns; the first current column is shifted 0.5 sigma."""
    rng = np.random.default_rng(seed)
    columns = [f"f{i:03d}" for i in range(features)]
    reference = pd.DataFrame(rng.normal(size=(rows, features)), columns=columns)
    current = pd.DataFrame(rng.normal(size=(rows, features)), columns=columns)
    current[columns[0]] += 0.5
    return reference, current


def modes(reference: pd.DataFrame, current: pd.DataFrame) -> dict[str, Callable[[], Any]]:
    """The calls to time, by mode name."""
    detector = DriftDetector.fit(reference)
    values = current.to_numpy()
    edges = np.linspace(0, 1, DriftSettings().bins + 1)[1:-1]
    return {
        "check": lambda: detector.check(current),
        "fit": lambda: DriftDetector.fit(reference),
        "numpy_quantile": lambda: np.quantile(values, edges, axis=0),
        "numpy_sort": lambda: np.sort(values, axis=0),
    }


def timed(call: Callable[[], Any]) -> tuple[float, float]:
    """Wall and CPU seconds (all threads) one call takes, after a garbage collection.

    CPU time shows the work itself: on a shared machine the wall time also holds other processes' turns.
    """
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    call()
    return time.perf_counter() - wall, time.process_time() - cpu


def run(calls: dict[str, Callable[[], Any]], rounds: int) -> dict[str, list[tuple[float, float]]]:
    """Every mode once per round (after one untimed warm-up each), the order rotated each round."""
    names = list(calls)
    for name in names:
        calls[name]()
    seconds: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    for index in range(rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            seconds[name].append(timed(calls[name]))
    return seconds


def describe(times: list[tuple[float, float]]) -> dict[str, Any]:
    """Median and minimum wall seconds, every round's, and the median CPU seconds."""
    walls = [wall for wall, _ in times]
    return {
        "median_s": round(statistics.median(walls), 4),
        "min_s": round(min(walls), 4),
        "values_s": [round(v, 4) for v in walls],
        "median_cpu_s": round(statistics.median(cpu for _, cpu in times), 4),
    }


def median_wall(times: list[tuple[float, float]]) -> float:
    return statistics.median(wall for wall, _ in times)


def main() -> None:
    args = parse_args()
    reference, current = frames(args.rows, args.features, args.seed)
    calls = modes(reference, current)
    report = calls["check"]()
    seconds = run(calls, args.rounds)
    check = median_wall(seconds["check"])
    print(
        json.dumps(
            {
                "benchmark": "drift_check",
                "rows": args.rows,
                "features": args.features,
                "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
                "load_average_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
                "python": platform.python_version(),
                "modes": {name: describe(values) for name, values in seconds.items()},
                "check_vs_numpy_quantile": round(check / median_wall(seconds["numpy_quantile"]), 2),
                "check_vs_numpy_sort": round(check / median_wall(seconds["numpy_sort"]), 2),
                "target_s": args.target,
                "meets_target": check < args.target,
                "drifted_features": list(report.drifted_features),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
