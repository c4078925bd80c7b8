"""What both example apps share: the "retrain" body, its trigger request and the JSON bodies they answer with.

The apps only translate HTTP to these calls, so the FastAPI and the Flask app behave the same.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from producers import InvalidRequest, TriggerError, TriggerRequest
from producers.contract import build_request, problems_from_validation
from producers.errors import Problem
from producers.state import storable_text

PIPELINE = "training_pipeline"
"""The tutorial's pipeline: `training_pipeline(data_url, model_type)`, registered in the worker."""
SOURCE = "webapp"
"""How the requests of this app are tagged in the outcome log and on the ZenML run."""


class RetrainBody(BaseModel):
    """What a user's "retrain" asks for; the worker checks it against the pipeline's real signature."""

    model_config = ConfigDict(extra="forbid")

    data_url: str = Field(min_length=1, max_length=2048, examples=["s3://bucket/new.csv"])
    model_type: str | None = Field(default=None, max_length=64, examples=["gradient_boosting"])


def parse_body(data: Any) -> RetrainBody:
    """The body of a framework without validation of its own (Flask); `InvalidRequest` with every path."""
    try:
        return RetrainBody.model_validate(data)
    except ValidationError as exc:
        raise InvalidRequest(details=problems_from_validation(exc)) from None


def body_problems(errors: Iterable[Mapping[str, Any]]) -> InvalidRequest:
    """FastAPI's body errors as one `InvalidRequest`: paths under the body, text escaped, the input never echoed.

    FastAPI's own 422 echoes the input and cannot encode a lone surrogate in it (a 500 instead).
    """
    details = [Problem(storable_text(".".join(map(str, e["loc"][1:])), 200), storable_text(e["msg"])) for e in errors]
    return InvalidRequest(details=details)


def retrain_request(body: RetrainBody) -> TriggerRequest:
    """The trigger request for a retrain: both fields are the pipeline's own arguments (None: its default)."""
    return build_request(pipeline_name=PIPELINE, parameters=body.model_dump(exclude_none=True), source=SOURCE)


def accepted(request_id: str, status_url: str) -> dict[str, str]:
    """The 202 body: the run happens later, in a worker; `status_url` tells how it went."""
    return {"request_id": request_id, "status": "queued", "status_url": status_url}


def queue_unavailable(request_id: str) -> dict[str, str]:
    """The 503 body: Redis did not take the request within the enqueue timeout.

    `request_id` is the one in the producer's `trigger.enqueue_failed` log line, so an operator finds it.
    """
    return {
        "error": "queue_unavailable",
        "message": "the retrain could not be queued: the queue did not answer in time; try again later",
        "request_id": request_id,
    }


STATE_UNAVAILABLE = {"error": "state_unavailable", "message": "the request's state could not be read; try again"}
"""The 503 body of a status look-up while Redis is down."""


def problem(error: str, exc: TriggerError) -> dict[str, Any]:
    """A 4xx body from a trigger error: its message and every problem with its path."""
    return {"error": error, "message": exc.message, "details": [d.as_dict() for d in exc.details]}
