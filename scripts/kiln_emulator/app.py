"""The emulator's WSGI app: the control API under /_kiln/ (JSON in and out, never faulted, never
recorded, a bad body answered 400 {"error": ...}), moto's own /moto-api/ dashboard as is, and
every other path through the recording and fault layer (faults.py) to moto. The endpoints are
described in the docstring of scripts/emulator.py."""

import json
import logging

from .common import BadRequest, buffer_body
from .faults import AwsLayer, Faults
from .seed import SEED_LOCK, seed_world
from .state import STATE, merge_behaviour


def _health(method, payload):
    return {"ok": True}


def _faults(method, payload):
    with STATE.lock:
        if method == "POST":
            STATE.faults = Faults(payload)
        return STATE.faults.config


def _behaviour(method, payload):
    with STATE.lock:
        if method == "POST":
            STATE.behaviour = merge_behaviour(STATE.behaviour, payload)
        return STATE.behaviour


def _requests(method, payload):
    with STATE.lock:
        if method == "DELETE":
            STATE.requests = []
        return list(STATE.requests)


def _seed(method, payload):
    if not isinstance(payload, dict):
        raise BadRequest("seed body must be a JSON object")
    with SEED_LOCK:
        options = {k: v for k, v in payload.items() if k != "region"}
        return seed_world(payload.get("region") or "us-east-1", options)


def _shared_snapshot(method, payload):
    if not isinstance(payload, dict) or not {"owner", "description", "shared_with"} <= set(payload):
        raise BadRequest("shared_snapshot needs 'owner', 'description' and 'shared_with' (and may name 'region')")
    from . import amis

    return amis.add_shared_snapshot(payload)


def _reset(method, payload):
    from moto.moto_api._internal.models import moto_api_backend

    with SEED_LOCK:
        moto_api_backend.reset()
        STATE.reset()
    return {"ok": True}


def _target_health(method, payload):
    from .elbv2 import report

    return report(method)


# path -> (methods, handler(method, payload) -> JSON answer)
ENDPOINTS = {
    "/_kiln/health": (("GET",), _health),
    "/_kiln/faults": (("GET", "POST"), _faults),
    "/_kiln/behaviour": (("GET", "POST"), _behaviour),
    "/_kiln/requests": (("GET", "DELETE"), _requests),
    "/_kiln/seed": (("POST",), _seed),
    "/_kiln/reset": (("POST",), _reset),
    "/_kiln/shared_snapshot": (("POST",), _shared_snapshot),
    "/_kiln/target-health": (("GET", "DELETE"), _target_health),
}


def route(method, path, payload):
    """(status line, JSON answer) of a control API request."""
    methods, handler = ENDPOINTS.get(path, ((), None))
    if method not in methods:
        return "404 Not Found", {"error": f"no control endpoint {method} {path}"}
    return "200 OK", handler(method, payload)


class KilnApp:
    """Routes a request to the control API, moto's dashboard, or the AWS layer."""

    def __init__(self, moto_app):
        self.moto_app = moto_app
        self.aws = AwsLayer(moto_app, STATE)

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == "/_kiln" or path.startswith("/_kiln/"):
            return self.control(environ, start_response)
        if path.startswith("/moto-api"):
            return self.moto_app(environ, start_response)
        return self.aws(environ, start_response)

    def control(self, environ, start_response):
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "").rstrip("/")
        try:
            body = buffer_body(environ)
            payload = json.loads(body) if body.strip() else {}
            status, answer = route(method, path, payload)
        except BadRequest as err:
            status, answer = "400 Bad Request", {"error": str(err)}
        except json.JSONDecodeError as err:
            status, answer = "400 Bad Request", {"error": f"invalid JSON: {err}"}
        except Exception as err:
            logging.getLogger("kiln-emulator").exception("%s %s failed", method, path)
            status, answer = "500 Internal Server Error", {"error": f"{type(err).__name__}: {err}"}
        data = json.dumps(answer, default=str).encode()
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
        return [data]
