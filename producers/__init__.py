"""The producer side: the wire contract, the Python clients (sync and asyncio) and the `trigger` CLI's send side.

Importing this package never imports ZenML, scikit-learn, Celery or the worker.
"""

from producers.async_client import AsyncTriggerClient
from producers.client import TriggerClient
from producers.contract import StepOverride, TriggerRequest, decode_request, encode_request
from producers.errors import (
    EnqueueError,
    EnqueueNotReplicated,
    InvalidRequest,
    MalformedRequest,
    NotCancellable,
    PermanentError,
    TransientError,
    TriggerError,
    UnknownRequest,
)
from producers.settings import ProducerSettings
from producers.state import RequestState, Status

__all__ = [
    "AsyncTriggerClient",
    "EnqueueError",
    "EnqueueNotReplicated",
    "InvalidRequest",
    "MalformedRequest",
    "NotCancellable",
    "PermanentError",
    "ProducerSettings",
    "RequestState",
    "Status",
    "StepOverride",
    "TransientError",
    "TriggerClient",
    "TriggerError",
    "TriggerRequest",
    "UnknownRequest",
    "decode_request",
    "encode_request",
]
