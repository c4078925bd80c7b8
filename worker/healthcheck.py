"""`python -m worker.healthcheck`: the container's health, cheap enough to run every 30 s.

`python -m worker.healthcheck beat` checks a beat container the same way.

`celery -A worker inspect ping` works (remote control is on by default), but it imports the Celery
app and waits for replies, which costs seconds every 30 s. So the check asks the two things that
matter: is the container's main process still a `trigger worker` (not a shell left after a failed
`exec`, not a zombie), and does Redis answer from here. Exit 0 when healthy, 1 with the reason on stderr.
"""

from __future__ import annotations

import sys
from pathlib import Path

import redis

from producers.client import connect
from producers.settings import ProducerSettings, redacted_url

MAIN_PROCESS = Path("/proc/1")


def main_process_problem(proc: Path = MAIN_PROCESS, role: str = "worker") -> str | None:
    """Why the main process is not a live `trigger <role>`, or None when it is."""
    try:
        cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError as exc:
        return f"cannot read {proc}: {exc}"
    if state in {"Z", "X"}:
        return f"main process is not running (state {state})"
    if role.encode() not in cmdline:
        return f"main process is not a {role}: {b' '.join(cmdline).decode(errors='replace').strip()}"
    return None


def redis_problem(settings: ProducerSettings) -> str | None:
    """Why Redis does not answer a PING within the producer timeouts, or None when it does."""
    try:
        connect(settings).ping()
    except (redis.RedisError, OSError) as exc:
        return f"Redis at {redacted_url(settings.redis_url)} does not answer: {type(exc).__name__}: {exc}"
    return None


def main(argv: list[str] | None = None) -> int:
    """0 when the worker (or `beat`, given as the argument) and its Redis are fine; 1 and the problem otherwise."""
    role = (argv if argv is not None else sys.argv[1:] or ["worker"])[0]
    settings = ProducerSettings(enqueue_timeout=2.0, connect_timeout=2.0)
    problem = main_process_problem(role=role) or redis_problem(settings)
    if problem is not None:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
