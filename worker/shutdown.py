"""Shutdown seen from the process that runs a request: whether the exception unwinding a run means the
worker is stopping.

A cold shutdown (SIGQUIT, or SIGTERM with `REMAP_SIGTERM=SIGQUIT` as the image sets) waits
`worker_soft_shutdown_timeout`, then cancels the requests still running: the main process sends
each prefork child SIGQUIT, whose billiard handler raises `SystemExit` inside the run. ZenML catches
it in the step, marks the step and the run failed, and lets it go on unwinding; only billiard's
flag says why. With `--pool solo` the run shares the main process, where ZenML's own SIGTERM handler
raises `RunInterruptedException` in the step and Celery's handler then marks the worker stopping.
"""

from __future__ import annotations


def stopping() -> bool:
    """Whether this process is being stopped, and the run with it: a pool child's terminate handler fired,
    or (solo pool) this worker's own warm or cold shutdown began."""
    return _terminate_handler_fired() or _worker_shutting_down()


def _terminate_handler_fired() -> bool:
    from billiard import common

    fired = getattr(common, "terminate_handler_fired", None)
    if fired is not None:
        return bool(fired())
    return bool(getattr(common, "_should_have_exited", [False])[0])  # billiard before 4.3: the flag alone


def _worker_shutting_down() -> bool:
    from celery.worker import state

    return state.should_terminate is not None or state.should_stop is not None
