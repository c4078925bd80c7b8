"""The producer side stays light: a web app that only enqueues never imports ZenML or the worker."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_importing_producers_pulls_in_no_heavy_dependency() -> None:
    code = (
        "import json, sys; import producers; from producers import TriggerClient, TriggerRequest; "
        "import producers.cli; "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'zenml', 'sklearn', 'celery', 'kombu', 'worker', 'pipelines', 'pandas', 'structlog'})))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
