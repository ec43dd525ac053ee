"""Recording and fault injection: the layer in front of moto for every AWS request (every path
but /_kiln/ and moto's own /moto-api/).

Each request is identified (service and region from the SigV4 credential scope, action from
`Action=` for query protocols or `X-Amz-Target` for JSON protocols), recorded, and given the
fault the settings pick for it: throttle / 500 / 503 / denied (the caller's policy does not
allow the action) answered here as AWS would for the request's protocol, drop (hang up before
moto acts), drop_after (hang up after moto acted), delay (hold moto's answer back), foreign (an
answer that is not AWS's at all: the rule's `status`, default 200, and `body`, default a web
page, as a proxy, a captive portal or a wrong --endpoint-url would answer), or none. `Faults`
holds the settings of POST /_kiln/faults.
Each record also holds the IAM authorizations AWS would evaluate for the request
(authorization.py), worked out before moto acts.
"""

import json
import random
import re
import socket
import time
import uuid
from http import HTTPStatus
from urllib.parse import parse_qs

from . import authorization
from .common import BadRequest, buffer_body, number, rate
from .visibility import hide_new, is_lagging_search, not_visible

FAULTS = ("throttle", "500", "503", "denied", "drop", "drop_after", "delay", "foreign")
ANSWERED = ("throttle", "500", "503", "denied")  # faults answered here, without moto
CONFIG_KEYS = {"seed", "throttle_rate", "error_rate", "drop_rate", "latency_ms", "rules"}
RULE_KEYS = {"action", "service", "fault", "count", "after", "ms", "status", "body"}
FOREIGN_PAGE = "<!DOCTYPE html>\n<html><head><title>Sign in to the network</title></head><body></body></html>\n"


def _rule(rule):
    """A validated fault rule with its defaults and a count of the requests it matched."""
    if not isinstance(rule, dict) or rule.get("fault") not in FAULTS:
        raise BadRequest(f"each rule needs 'fault', one of {FAULTS}")
    unknown = set(rule) - RULE_KEYS
    if unknown:
        raise BadRequest(f"unknown rule field(s): {sorted(unknown)}")
    count, after = rule.get("count", 1), rule.get("after", 0)
    if not isinstance(count, int) or not isinstance(after, int) or after < 0:
        raise BadRequest("rule count and after must be integers (count < 0: no limit)")
    ms = rule.get("ms", 1000)
    if not isinstance(ms, (int, float)) or ms < 0:
        raise BadRequest("rule ms must be a number >= 0")
    status, body = rule.get("status", 200), rule.get("body", FOREIGN_PAGE)
    if not isinstance(status, int) or not 100 <= status <= 599 or not isinstance(body, str):
        raise BadRequest("rule status must be an HTTP status (100-599) and body a string")
    return dict(rule, count=count, after=after, ms=ms, status=status, body=body, seen=0)


class Faults:
    """Seeded random rates plus counted rules; `pick` decides one request's fault."""

    def __init__(self, config=None):
        config = config or {}
        if not isinstance(config, dict):
            raise BadRequest("faults must be a JSON object")
        unknown = set(config) - CONFIG_KEYS
        if unknown:
            raise BadRequest(f"unknown faults key(s): {sorted(unknown)}")
        self.config = config
        self.rng = random.Random(config.get("seed", 0))
        self.throttle_rate = rate(config.get("throttle_rate", 0), "throttle_rate")
        self.error_rate = rate(config.get("error_rate", 0), "error_rate")
        self.drop_rate = rate(config.get("drop_rate", 0), "drop_rate")
        self.latency_ms = number(config.get("latency_ms", 0), "latency_ms")
        self.rules = [_rule(rule) for rule in config.get("rules", [])]
        self.delay_ms = 0  # `ms` of the last rule that applied (how long a "delay" holds back)
        self.foreign = (200, FOREIGN_PAGE)  # (status, body) of the last rule that applied

    def pick(self, service, action):
        """Rules first (each counts every request it matches), then the random rates."""
        chosen = self._rule_fault(service, action)
        if chosen or not (self.throttle_rate or self.error_rate or self.drop_rate):
            return chosen
        return self._random_fault()

    def _rule_fault(self, service, action):
        chosen = None
        for rule in self.rules:
            if rule.get("action") not in (None, action) or rule.get("service") not in (None, service):
                continue
            rule["seen"] += 1
            nth = rule["seen"] - rule["after"]
            if chosen is None and nth >= 1 and (rule["count"] < 0 or nth <= rule["count"]):
                chosen = rule["fault"]
                self.delay_ms = rule["ms"]
                self.foreign = (rule["status"], rule["body"])
        return chosen

    def _random_fault(self):
        draw = self.rng.random()
        if draw < self.throttle_rate:
            return "throttle"
        draw -= self.throttle_rate
        if draw < self.error_rate:
            return self.rng.choice(("500", "503"))
        draw -= self.error_rate
        if draw < self.drop_rate:
            return self.rng.choice(("drop", "drop_after"))
        return None


# --------------------------------------------------------------------------------------
# What a request is, and AWS's answers for the error faults
# --------------------------------------------------------------------------------------

SCOPE_RE = re.compile(r"Credential=[^/,\s]+/\d{8}/([^/]+)/([^/]+)/aws4_request")
ACCESS_KEY_RE = re.compile(r"Credential=([^/,\s]+)/")

# fault -> (status line, code, message, error type) before a protocol's own adjustments
ERRORS = {
    "throttle": (None, None, None, "Sender"),
    "500": ("500 Internal Server Error", "InternalError", "An internal error has occurred", "Receiver"),
    "503": ("503 Service Unavailable", "ServiceUnavailable", "Service is unavailable", "Receiver"),
    "denied": (
        "403 Forbidden",
        "AccessDenied",
        "User: arn:aws:iam::123456789012:user/kiln is not authorized to perform this action",
        "Sender",
    ),
}


def identify(environ, body):
    """(service, region, action, protocol) of an AWS request."""
    scope = SCOPE_RE.search(environ.get("HTTP_AUTHORIZATION", ""))
    service, region = (scope.group(2), scope.group(1)) if scope else ("unknown", None)
    target = environ.get("HTTP_X_AMZ_TARGET")
    if target:
        return service, region, target.rsplit(".", 1)[-1], "json"
    action = None
    if "x-www-form-urlencoded" in environ.get("CONTENT_TYPE", ""):
        action = parse_qs(body.decode("utf-8", "replace")).get("Action", [None])[0]
    action = action or parse_qs(environ.get("QUERY_STRING", "")).get("Action", [None])[0]
    if action:
        return service, region, action, "ec2" if service == "ec2" else "query"
    return service, region, f"{environ.get('REQUEST_METHOD')} {environ.get('PATH_INFO')}", "rest"


def _json_fault(fault, request_id):
    status, code, message, _ = ERRORS[fault]
    if fault == "throttle":
        status, code, message = "400 Bad Request", "ThrottlingException", "Rate exceeded"
    elif fault == "500":
        code = "InternalServerError"  # the modeled name in JSON services such as SSM
    elif fault == "denied":
        status, code = "400 Bad Request", "AccessDeniedException"
    body = json.dumps({"__type": code, "message": message})
    return status, [("Content-Type", "application/x-amz-json-1.1"), ("x-amzn-RequestId", request_id)], body


def _ec2_fault(fault, request_id):
    status, code, message, _ = ERRORS[fault]
    if fault == "throttle":
        status, code, message = "503 Service Unavailable", "RequestLimitExceeded", "Request limit exceeded."
    elif fault == "denied":
        code, message = "UnauthorizedOperation", "You are not authorized to perform this operation."
    body = (
        f"<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors>"
        f"<RequestID>{request_id}</RequestID></Response>"
    )
    return status, [("Content-Type", "text/xml;charset=UTF-8")], body


def _query_fault(fault, request_id):
    status, code, message, kind = ERRORS[fault]
    if fault == "throttle":
        status, code, message = "400 Bad Request", "Throttling", "Rate exceeded"
    body = (
        f"<ErrorResponse><Error><Type>{kind}</Type><Code>{code}</Code><Message>{message}</Message></Error>"
        f"<RequestId>{request_id}</RequestId></ErrorResponse>"
    )
    return status, [("Content-Type", "text/xml"), ("x-amzn-RequestId", request_id)], body


def fault_response(protocol, fault):
    """(status line, headers, body) answering as AWS would for this protocol."""
    answer = {"json": _json_fault, "ec2": _ec2_fault}.get(protocol, _query_fault)
    return answer(fault, str(uuid.uuid4()))


class DropConnection(ConnectionAbortedError):
    """Raised after the socket is shut: werkzeug treats it as a dropped connection."""


def drop(environ):
    """Hang up on the client without an answer."""
    sock = environ.get("werkzeug.socket")
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    raise DropConnection("connection dropped by a kiln emulator fault")


# --------------------------------------------------------------------------------------
# The layer itself
# --------------------------------------------------------------------------------------


def _new_record(environ, service, region, action):
    access_key = ACCESS_KEY_RE.search(environ.get("HTTP_AUTHORIZATION", ""))
    return {
        "service": service,
        "region": region,
        "action": action,
        # Tells apart callers sharing one emulator (kiln, and a test checking its work).
        "access_key": access_key.group(1) if access_key else None,
        "status": None,
        "fault": None,
        "t": time.time(),
    }


def _set_status(record, status):
    record["status"] = int(status.split()[0])


class AwsLayer:
    """WSGI app in front of moto: records each AWS request in `state`, then answers it as the
    fault picked for it says (moto's own answer when there is none)."""

    def __init__(self, moto_app, state):
        self.moto_app = moto_app
        self.state = state

    def __call__(self, environ, start_response):
        body = buffer_body(environ)
        service, region, action, protocol = identify(environ, body)
        record = _new_record(environ, service, region, action)
        # What IAM checks for this request, worked out before moto acts on it (resource tags).
        record["authorizations"], record["authorization_error"] = authorization.record(
            service, region, action, protocol, body
        )
        fault, latency, delay_ms, foreign = self._register(record, service, action)
        if latency:
            time.sleep(latency / 1000)
        if fault == "foreign":
            return self._foreign_answer(record, foreign, start_response)
        if fault in ANSWERED:
            return self._error_answer(record, protocol, fault, start_response)
        unseen = not_visible(self.state, action, body) if service == "ec2" else None
        if unseen:
            return self._not_found_answer(record, unseen, start_response)
        if fault == "drop":
            drop(environ)
        if fault is None and service == "ec2" and is_lagging_search(self.state, action, body):
            return self._search_answer(environ, record, action, start_response)
        if fault == "delay":  # let moto do the work, then hold the answer back for a while
            status, headers, answer = self._moto_answer(environ, record)
            time.sleep(delay_ms / 1000)
            start_response(status, headers)
            return [answer]
        if fault == "drop_after":  # let moto do the work, then hang up without answering
            self._moto_answer(environ, record)
            drop(environ)

        def capture(status, headers, exc_info=None):
            _set_status(record, status)
            return start_response(status, headers, exc_info)

        return self.moto_app(environ, capture)

    def _register(self, record, service, action):
        """Records the request and picks its fault: (fault, latency ms, delay ms, foreign answer)."""
        with self.state.lock:
            self.state.requests.append(record)
            faults = self.state.faults
            record["fault"] = fault = faults.pick(service, action)
            return fault, faults.latency_ms, faults.delay_ms, faults.foreign

    def _foreign_answer(self, record, foreign, start_response):
        """An answer that is not AWS's: the rule's status and body, as a web server sends them."""
        code, text = foreign
        status = f"{code} {HTTPStatus(code).phrase if code in HTTPStatus._value2member_map_ else 'Status'}"
        _set_status(record, status)
        payload = text.encode()
        start_response(status, [("Content-Type", "text/html"), ("Content-Length", str(len(payload)))])
        return [payload]

    def _error_answer(self, record, protocol, fault, start_response):
        status, headers, text = fault_response(protocol, fault)
        _set_status(record, status)
        payload = text.encode()
        start_response(status, headers + [("Content-Length", str(len(payload)))])
        return [payload]

    def _not_found_answer(self, record, error, start_response):
        """An EC2 `*.NotFound` answer for an id not visible yet (visibility.py)."""
        code, message = error
        status = "400 Bad Request"
        _set_status(record, status)
        payload = (
            f"<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors>"
            f"<RequestID>{uuid.uuid4()}</RequestID></Response>"
        ).encode()
        start_response(status, [("Content-Type", "text/xml;charset=UTF-8"), ("Content-Length", str(len(payload)))])
        return [payload]

    def _search_answer(self, environ, record, action, start_response):
        """moto's answer to a search, without the ids too new to be found (visibility.py)."""
        status, headers, answer = self._moto_answer(environ, record)
        if record["status"] == 200:
            answer = hide_new(self.state, action, answer)
        headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
        start_response(status, headers + [("Content-Length", str(len(answer)))])
        return [answer]

    def _moto_answer(self, environ, record):
        """Lets moto act; (status, headers, body) of its answer, which is not sent."""
        held = {}

        def hold(status, headers, exc_info=None):
            _set_status(record, status)
            held["status"], held["headers"] = status, headers
            return lambda data: None

        result = self.moto_app(environ, hold)
        try:
            body = b"".join(result)
        finally:
            if hasattr(result, "close"):
                result.close()
        return held.get("status"), held.get("headers"), body
