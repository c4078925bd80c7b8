"""Cost of signing a request (producer) and of checking it (worker), next to what each side already spends.

Times, per call, in interleaved rounds (so machine noise hits every mode alike):

* ``sign``:            `producers.signing.sign` of a typical request's wire text;
* ``verify``:          `parse_signature` + `verify` against one secret (a key outside a rotation);
* ``verify_rotation``: the same against two secrets (both are always tried);
* ``authorize``:       the worker's whole `Authorization.check`: parse, key lookup, verify, expiry, age, scopes;
* ``encode_request``:  the producer's `encode_request` of the same request (baseline: work every send does);
* ``decode_request``:  the worker's `decode_request` of the same text (baseline: work every delivery does).

Prints one JSON object: microseconds per call for each mode (median over rounds, and every round),
sign's and authorize's ratio to their baselines, and whether sign and verify meet the target (50 µs).

    python benchmarks/signing.py [--calls 20000] [--rounds 7] [--target-us 50]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from producers.contract import TriggerRequest, decode_request, encode_request, normalize_steps
from producers.signing import parse_signature, sign, verify
from worker.authorization import Authorization, KeysFile

SECRET = b"benchmark-secret-0123456789abcdef0123456789"
OTHER = b"benchmark-rotated-0123456789abcdef0123456789"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--calls", type=int, default=20_000, help="calls per mode and round (default: %(default)s)")
    add("--rounds", type=int, default=7, help="timed rounds per mode (default: %(default)s)")
    add("--target-us", type=float, default=50.0, help="µs sign and verify should stay under (default: %(default)s)")
    return parser.parse_args()


def typical_request() -> TriggerRequest:
    """The size of a drift alert: a data URL, a step override, keys, a small metadata summary."""
    return TriggerRequest(
        pipeline_name="training_pipeline",
        parameters={"data_url": "s3://bucket/churn/2026-11-24/current.csv"},
        steps=normalize_steps({"train_model": {"model_type": "gradient_boosting", "n_estimators": 200}}),
        idempotency_key="drift:churn-model:2026-11-24",
        coalesce_key="drift:churn-model",
        source="drift-monitor",
        metadata={"drift": {"drifted": ["mean radius", "worst area"], "share": 0.1}},
    )


def authorization(workdir: Path) -> Authorization:
    path = workdir / "keys.yaml"
    path.write_text(
        "keys:\n"
        f"  - id: drift-monitor\n    secrets: [{SECRET.decode()}]\n    pipelines: [training_pipeline]\n"
        "    parameters: [parameters.data_url, steps.train_model.parameters.*]\n"
    )
    return Authorization(KeysFile(path), required=True)


def modes(workdir: Path) -> dict[str, Callable[[], Any]]:
    """The calls to time, by mode name."""
    request = typical_request()
    text = encode_request(request)
    signature = sign(text, "drift-monitor", SECRET)
    check = authorization(workdir)
    return {
        "sign": lambda: sign(text, "drift-monitor", SECRET),
        "verify": lambda: verify(text, parse_signature(signature), [SECRET]),
        "verify_rotation": lambda: verify(text, parse_signature(signature), [OTHER, SECRET]),
        "authorize": lambda: check.check(request, text, signature),
        "encode_request": lambda: encode_request(request),
        "decode_request": lambda: decode_request(text),
    }


def per_call_us(call: Callable[[], Any], calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - started) / calls * 1e6


def measure(timed: dict[str, Callable[[], Any]], calls: int, rounds: int) -> dict[str, list[float]]:
    """Microseconds per call, per round, with the order of modes rotated every round."""
    names, results = list(timed), {name: [] for name in timed}
    for name in names:
        per_call_us(timed[name], max(1, calls // 10))  # warm-up
    for round_ in range(rounds):
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            results[name].append(round(per_call_us(timed[name], calls), 3))
    return results


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        results = measure(modes(Path(workdir)), args.calls, args.rounds)
    median = {name: round(statistics.median(values), 3) for name, values in results.items()}
    print(
        json.dumps(
            {
                "python": platform.python_version(),
                "payload_bytes": len(encode_request(typical_request()).encode()),
                "calls_per_round": args.calls,
                "us_per_call_median": median,
                "us_per_call_rounds": results,
                "sign_over_encode_request": round(median["sign"] / median["encode_request"], 3),
                "authorize_over_decode_request": round(median["authorize"] / median["decode_request"], 3),
                "target_us": args.target_us,
                "meets_target": median["sign"] < args.target_us and median["verify"] < args.target_us,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
