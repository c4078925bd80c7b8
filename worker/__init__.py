"""The receiving side: `celery -A worker worker` finds the app here.

The app is created on first access, from `TRIGGER_*` settings, so importing the
package reads no environment and starts nothing.
"""

from __future__ import annotations

from typing import Any

_app: Any = None


def __getattr__(name: str) -> Any:
    global _app
    if name in ("app", "celery"):
        if _app is None:
            from worker.app import create_app
            from worker.logs import start_log_stream

            _app = create_app()
            start_log_stream(_app.trigger_settings)  # `celery -A worker ...` starts here
        return _app
    raise AttributeError(f"module 'worker' has no attribute {name!r}")
