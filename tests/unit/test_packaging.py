"""The producer side stays light: a web app that only enqueues never imports ZenML or the worker."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support.catalog import MINIMAL_CATALOG

REPO = Path(__file__).resolve().parents[2]


def test_importing_producers_pulls_in_no_heavy_dependency() -> None:
    code = (
        "import json, sys; import producers; from producers import TriggerClient, TriggerRequest; "
        "import producers.cli, producers.catalog, producers.catalog_validation, producers.catalog_cli; "
        "import producers.credentials, producers.signing, producers.schedules, producers.schedules_cli; "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'zenml', 'sklearn', 'celery', 'kombu', 'worker', 'pipelines', 'pandas', 'numpy', 'scipy', 'structlog', "
        "'jsonschema', 'yaml'})))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_drift_detection_pulls_in_its_extra_and_nothing_of_the_worker() -> None:
    """`producers.drift` is opt-in: it brings pandas, numpy and scipy, still no ZenML or worker."""
    code = (
        "import json, sys; import producers.drift; "
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'zenml', 'sklearn', 'celery', 'worker', 'pipelines', 'pandas', 'numpy', 'scipy'})))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == ["numpy", "pandas", "scipy"]


def test_the_early_check_runs_without_zenml_or_the_worker() -> None:
    """Checking a request against a catalog needs jsonschema, and still no ZenML, worker or pydantic adapters of its."""
    code = (
        "import json, sys, fakeredis; from producers import TriggerClient, ProducerSettings; "
        "r = fakeredis.FakeRedis(); r.set('zenml-trigger:catalog:zenml-triggers', sys.argv[1]); "
        "problems = TriggerClient(r, ProducerSettings()).validate('p', parameters={'n': 'x'}); "
        "print(json.dumps([[p.path for p in problems], sorted({m.split('.')[0] for m in sys.modules} & "
        "{'zenml', 'worker', 'pipelines', 'celery', 'jsonschema'})]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(MINIMAL_CATALOG)], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == [["parameters.n"], ["jsonschema"]]


def test_the_readme_shows_exactly_the_acl_lines_the_integration_test_loads() -> None:
    lines = (REPO / "examples" / "redis" / "users.acl").read_text().splitlines()
    readme = (REPO / "README.md").read_text()

    assert len(lines) == 3 and all(line.startswith("user ") for line in lines)
    assert "```\n" + "\n".join(lines) + "\n```" in readme
