"""`trigger gateway` as a real process on a free loopback port, for the integration tier."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_gateway(
    env: dict[str, str], cwd: Path, log: Path, log_level: str = "warning"
) -> tuple[subprocess.Popen[bytes], str]:
    """Start it and wait until `/healthz` answers; the process and its base URL."""
    port = free_port()
    command = [sys.executable, "-m", "producers.cli", "gateway", "--port", str(port), "--log-level", log_level]
    with open(log, "ab") as out:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    wait_until_up(base, process)
    return process, base


def wait_until_up(base: str, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the gateway exited at start"
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError(f"the gateway did not answer on {base} within {timeout:g}s")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
