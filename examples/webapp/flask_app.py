"""A Flask app whose "retrain" endpoint enqueues a run of the tutorial pipeline and answers 202 at once.

Run it with `flask --app examples.webapp.flask_app run` (see this folder's README).
The sync `TriggerClient` is thread-safe: one per app, shared by every request thread.
An enqueue is one Redis call bounded by `TRIGGER_CONNECT_TIMEOUT` + `TRIGGER_ENQUEUE_TIMEOUT`.
"""

from __future__ import annotations

from flask import Blueprint, Flask, Response, current_app, jsonify, request, url_for
from redis.exceptions import RedisError

from examples.webapp.retrain import (
    STATE_UNAVAILABLE,
    accepted,
    parse_body,
    problem,
    queue_unavailable,
    retrain_request,
)
from producers import InvalidRequest, TriggerClient, UnknownRequest

blueprint = Blueprint("retrain", __name__)
EXTENSION = "triggers"


def triggers() -> TriggerClient:
    """The app's one client."""
    return current_app.extensions[EXTENSION]


@blueprint.post("/retrain")
def retrain() -> tuple[Response, int] | tuple[Response, int, dict[str, str]]:
    """Queue a retrain and answer 202 with the request id and where to follow it."""
    try:
        trigger_request = retrain_request(parse_body(request.get_json(silent=True)))
    except InvalidRequest as exc:
        return jsonify(problem("invalid_request", exc)), 422
    request_id = triggers().try_send(trigger_request)
    if request_id is None:
        return jsonify(queue_unavailable(trigger_request.request_id)), 503
    status_url = url_for("retrain.status", request_id=request_id, _external=True)
    return jsonify(accepted(request_id, status_url)), 202, {"Location": status_url}


@blueprint.get("/retrain/<request_id>")
def status(request_id: str) -> Response | tuple[Response, int]:
    """The request's state, as `trigger status --json` shows it; 404 for an id nothing is known under."""
    try:
        state = triggers().status(request_id)
    except UnknownRequest as exc:
        return jsonify(problem("unknown_request", exc)), 404
    except RedisError:
        return jsonify(STATE_UNAVAILABLE), 503
    return jsonify(state.public_dict())


def create_app(client: TriggerClient | None = None) -> Flask:
    """The app, with `client` or one configured from `TRIGGER_*` (read here, at the edge)."""
    app = Flask(__name__)
    app.extensions[EXTENSION] = client if client is not None else TriggerClient.from_env()
    app.register_blueprint(blueprint)
    return app
