"""`trigger drift demo` end to end, as CI runs it: real data, real Redis, a real worker, one run for 20 alerts."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.integration.conftest import REPO, Stack


def test_the_drift_demo_turns_a_burst_of_twenty_alerts_into_exactly_the_runs_needed(stack: Stack) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "producers.cli", "drift", "demo", "--timeout", "240"],
        cwd=REPO,
        env=stack.env(),
        capture_output=True,
        text=True,
        timeout=420,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 of 31 features drifted" in result.stdout
    summary = re.search(r"20 alerts -> 1 run(?: \(\+(\d) trailing\))?, (\d+) coalesced", result.stdout)
    assert summary is not None, result.stdout
    trailing, coalesced = int(summary.group(1) or 0), int(summary.group(2))
    assert trailing <= 1 and 1 + trailing + coalesced == 20
    assert "every alert accounted for: yes" in result.stdout
