"""Shutdown seen from a pool process: whether the exception unwinding a run means the worker is stopping.

A cold shutdown (SIGQUIT, or SIGTERM with `REMAP_SIGTERM=SIGQUIT` as the image sets) waits
`worker_soft_shutdown_timeout`, then cancels the requests still running: the main process sends
each prefork child SIGQUIT, whose billiard handler raises `SystemExit` inside the run. ZenML catches
it in the step, marks the step and the run failed, and lets it go on unwinding; only billiard's
flag says why.
"""

from __future__ import annotations


def stopping() -> bool:
    """Whether this process's terminate handler has fired: it is being stopped, and the run with it."""
    from billiard import common

    fired = getattr(common, "terminate_handler_fired", None)
    if fired is not None:
        return bool(fired())
    return bool(getattr(common, "_should_have_exited", [False])[0])  # billiard before 4.3: the flag alone
