"""The emulator's mutable state, behind one lock: the behaviour settings (validated here; what
each key does is told in the service module that reads it), the fault settings (faults.py), the
recorded requests, the instance refreshes, target registrations and the healthy-target record. `STATE` is the one instance;
POST /_kiln/reset restores it."""

import copy
import re
import threading

from .common import BadRequest, number
from .faults import Faults

DEFAULT_BEHAVIOUR = {
    "instance_pending_seconds": 0,
    "instance_stopping_seconds": 0,
    "instance_shutting_down_seconds": 0,
    "image_pending_seconds": 0,
    "image_fail": False,
    "snapshot_in_use_seconds": 0,
    "instance_type_errors": {},
    "image_references": True,
    "instance_launch_failure": "",
    "ssm_agent": "online",
    "ssm_online_after_seconds": 0,
    "ssm_send_ready_after_seconds": 0,
    "commands": [],
    "refresh": {"status": "Successful", "seconds": 1},
    # Launch templates and their versions per Describe page when the request sets no MaxResults.
    "page_size": 15,
    # New ids unknown to calls naming them for this long, per kind (visibility.py).
    "invisible_seconds": {"instance": 0, "image": 0, "snapshot": 0},
    # New instances, images and snapshots missing from searches (filter queries) for this long.
    "search_lag_seconds": 0,
    "target_health": {"healthy_after_seconds": 0, "unhealthy": []},
}
COMMAND_STATUSES = ("Success", "Failed", "TimedOut", "Cancelled")
REFRESH_STATUSES = ("Successful", "Failed", "Cancelled")
COMMAND_RULE_KEYS = {"match", "role", "status", "pending_seconds", "in_progress_seconds", "stdout", "stderr", "exit_code"}


def _exit_code(rule, status):
    exit_code = rule.get("exit_code")
    if exit_code is None:  # a plausible code for the status unless one is given
        return {"Success": 0, "Failed": 1}.get(status, -1)
    if isinstance(exit_code, bool) or not isinstance(exit_code, int):
        raise BadRequest("exit_code must be an integer")
    return exit_code


def command_rule(rule):
    """A validated behaviour `commands` rule with its defaults filled in."""
    if not isinstance(rule, dict) or not isinstance(rule.get("match"), str):
        raise BadRequest("each commands rule needs a string 'match'")
    unknown = set(rule) - COMMAND_RULE_KEYS
    if unknown:
        raise BadRequest(f"unknown commands rule field(s): {sorted(unknown)}")
    try:
        re.compile(rule["match"])
    except re.error as err:
        raise BadRequest(f"bad regex {rule['match']!r}: {err}") from None
    status = rule.get("status", "Success")
    if status not in COMMAND_STATUSES:
        raise BadRequest(f"commands status must be one of {COMMAND_STATUSES}")
    exit_code = _exit_code(rule, status)
    role = rule.get("role")
    if role is not None and not isinstance(role, str):
        raise BadRequest("a commands rule's role must be a string (an instance's kiln:role tag)")
    return {
        "match": rule["match"],
        "role": role,
        "status": status,
        "pending_seconds": number(rule.get("pending_seconds", 0), "pending_seconds"),
        "in_progress_seconds": number(rule.get("in_progress_seconds", 0), "in_progress_seconds"),
        "stdout": str(rule.get("stdout", "")),
        "stderr": str(rule.get("stderr", "")),
        "exit_code": exit_code,
    }


def _flag(key, value):
    if not isinstance(value, bool):
        raise BadRequest(f"{key} must be true or false")
    return value


INSTANCE_TYPE_ERRORS = ("InsufficientInstanceCapacity", "Unsupported")


def _instance_type_errors(key, value):
    if not isinstance(value, dict) or any(code not in INSTANCE_TYPE_ERRORS for code in value.values()):
        raise BadRequest(f"instance_type_errors must map instance types to one of {INSTANCE_TYPE_ERRORS}")
    return dict(value)


def _ssm_agent(key, value):
    if value not in ("online", "never"):
        raise BadRequest("ssm_agent must be 'online' or 'never'")
    return value


def _commands(key, value):
    if not isinstance(value, list):
        raise BadRequest("commands must be a list")
    return [command_rule(rule) for rule in value]


def _refresh(key, value):
    if not isinstance(value, dict) or set(value) - {"status", "seconds"}:
        raise BadRequest("refresh must be an object with 'status' and/or 'seconds'")
    refresh = dict(DEFAULT_BEHAVIOUR["refresh"], **value)
    if refresh["status"] not in REFRESH_STATUSES:
        raise BadRequest(f"refresh status must be one of {REFRESH_STATUSES}")
    number(refresh["seconds"], "refresh.seconds")
    return refresh


def _invisible(value):
    kinds = DEFAULT_BEHAVIOUR["invisible_seconds"]
    if not isinstance(value, dict) or set(value) - set(kinds):
        raise BadRequest(f"invisible_seconds must be an object with keys among {sorted(kinds)}")
    return dict(kinds, **{kind: number(seconds, f"invisible_seconds.{kind}") for kind, seconds in value.items()})


def _string(key, value):
    if not isinstance(value, str):
        raise BadRequest(f"{key} must be a string")
    return value


def _page_size(value):
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 200:
        raise BadRequest("page_size must be an integer from 1 to 200")
    return value


TARGET_HEALTH_RULE_KEYS = {"image_id", "image_tagged", "reason", "description"}


def _unhealthy_rule(rule):
    if not isinstance(rule, dict) or set(rule) - TARGET_HEALTH_RULE_KEYS:
        raise BadRequest(f"each target_health.unhealthy rule is an object with keys among {sorted(TARGET_HEALTH_RULE_KEYS)}")
    if not (isinstance(rule.get("image_id"), str) or isinstance(rule.get("image_tagged"), str)):
        raise BadRequest("a target_health.unhealthy rule needs 'image_id' or 'image_tagged'")
    return {
        "image_id": rule.get("image_id"),
        "image_tagged": rule.get("image_tagged"),
        "reason": str(rule.get("reason", "Target.ResponseCodeMismatch")),
        "description": str(rule.get("description", "Health checks failed with these codes: [503]")),
    }


def _target_health(key, value):
    if not isinstance(value, dict) or set(value) - {"healthy_after_seconds", "unhealthy"}:
        raise BadRequest("target_health must be an object with 'healthy_after_seconds' and/or 'unhealthy'")
    health = dict(DEFAULT_BEHAVIOUR["target_health"], **value)
    number(health["healthy_after_seconds"], "target_health.healthy_after_seconds")
    if not isinstance(health["unhealthy"], list):
        raise BadRequest("target_health.unhealthy must be a list")
    health["unhealthy"] = [_unhealthy_rule(rule) for rule in health["unhealthy"]]
    return health


# behaviour key -> check(key, value) returning the value to keep
BEHAVIOUR_CHECKS = {
    **{key: lambda key, value: number(value, key) for key in DEFAULT_BEHAVIOUR if key.endswith("_seconds")},
    "image_fail": _flag,
    "image_references": _flag,
    "instance_type_errors": _instance_type_errors,
    "ssm_agent": _ssm_agent,
    "commands": _commands,
    "refresh": _refresh,
    "page_size": lambda key, value: _page_size(value),
    "instance_launch_failure": lambda key, value: _string(key, value),
    "invisible_seconds": lambda key, value: _invisible(value),
    "target_health": _target_health,
}


def merge_behaviour(current, update):
    """Validate `update` and return `current` with it merged in (top-level keys)."""
    if not isinstance(update, dict):
        raise BadRequest("behaviour must be a JSON object")
    unknown = set(update) - set(DEFAULT_BEHAVIOUR)
    if unknown:
        raise BadRequest(f"unknown behaviour key(s): {sorted(unknown)}")
    merged = dict(current)
    for key, value in update.items():
        merged[key] = BEHAVIOUR_CHECKS[key](key, value)
    return merged


class State:
    """Behaviour, faults, recorded requests and instance refreshes; `lock` guards all of it."""

    def __init__(self):
        self.lock = threading.RLock()
        self.reset()

    def reset(self):
        with self.lock:
            self.behaviour = copy.deepcopy(DEFAULT_BEHAVIOUR)
            self.faults = Faults()
            self.requests = []
            self.refreshes = {}  # (account, region, group) -> [Refresh], newest first
            self.born = {}  # resource id -> creation time (visibility.py)
            self.registered = {}  # (target group arn, instance id) -> when registered
            self.health_record = {}  # target group arn -> [(time, healthy targets)], changes only
            self.health_sampling = False  # set by the first /_kiln/target-health call or refresh
            self.instance_versions = {}  # instance id -> launch template version it was launched from

    def setting(self, key):
        with self.lock:
            return self.behaviour[key]


STATE = State()
