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
    "refresh": {"status": "Successful", "seconds": 1, "success_before_healthy": False, "replacements_before_failure": 2},
    # AWS rules a refresh follows (autoscaling.py quotes each). `irreversible` is on: kiln pins a
    # group on $Default/$Latest before a verified refresh. The others stay off by default (the
    # emulator's earlier behaviour) and are switched on by the tests that exercise them.
    "refresh_rules": {"irreversible": True, "max_size": False, "elb_grace_period": False, "instance_warmup": False},
    # False: the region has no default VPC (seed {"default_vpc": false}); RunInstances without a
    # subnet answers VPCIdNotSpecified (ec2.py).
    "default_vpc": True,
    # Launch templates and their versions per Describe page when the request sets no MaxResults.
    "page_size": 15,
    # New ids unknown to calls naming them for this long, per kind (visibility.py).
    "invisible_seconds": {"instance": 0, "image": 0, "snapshot": 0, "launch_template_version": 0},
    # New instances, images and snapshots missing from searches (filter queries) for this long.
    "search_lag_seconds": 0,
    "target_health": {"healthy_after_seconds": 0, "unhealthy": [], "register_after_seconds": 0},
}
COMMAND_STATUSES = ("Success", "Failed", "TimedOut", "Cancelled")
REFRESH_STATUSES = ("Successful", "Failed", "Cancelled")
COMMAND_RULE_KEYS = {
    "match", "role", "status", "pending_seconds", "in_progress_seconds", "stdout", "stderr", "exit_code",
    "reboots", "reboot_seconds",
}


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
        "reboots": _count(rule.get("reboots", 0), "reboots"),
        "reboot_seconds": number(rule.get("reboot_seconds", 0), "reboot_seconds"),
    }


def _count(value, key):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadRequest(f"{key} must be an integer >= 0")
    return value


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
    keys = set(DEFAULT_BEHAVIOUR["refresh"])
    if not isinstance(value, dict) or set(value) - keys:
        raise BadRequest(f"refresh must be an object with keys among {sorted(keys)}")
    refresh = dict(DEFAULT_BEHAVIOUR["refresh"], **value)
    if refresh["status"] not in REFRESH_STATUSES:
        raise BadRequest(f"refresh status must be one of {REFRESH_STATUSES}")
    number(refresh["seconds"], "refresh.seconds")
    _flag("refresh.success_before_healthy", refresh["success_before_healthy"])
    _count(refresh["replacements_before_failure"], "refresh.replacements_before_failure")
    return refresh


def _refresh_rules(key, value):
    rules = DEFAULT_BEHAVIOUR["refresh_rules"]
    if not isinstance(value, dict) or set(value) - set(rules):
        raise BadRequest(f"refresh_rules must be an object with keys among {sorted(rules)}")
    return dict(rules, **{name: _flag(f"refresh_rules.{name}", flag) for name, flag in value.items()})


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


TARGET_HEALTH_RULE_KEYS = {"image_id", "image_tagged", "reason", "description", "state", "after_seconds"}
# state -> (default reason, default description), AWS's TargetHealth reason codes (elbv2.py)
TARGET_STATES = {
    "unhealthy": ("Target.ResponseCodeMismatch", "Health checks failed with these codes: [503]"),
    "unused": ("Target.NotInUse", "Target is in an Availability Zone that is not enabled for the load balancer"),
    "draining": ("Target.DeregistrationInProgress", "Target deregistration is in progress"),
    "unavailable": ("Elb.InternalError", "Target health is unavailable due to an internal error"),
}


def _unhealthy_rule(rule):
    if not isinstance(rule, dict) or set(rule) - TARGET_HEALTH_RULE_KEYS:
        raise BadRequest(f"each target_health.unhealthy rule is an object with keys among {sorted(TARGET_HEALTH_RULE_KEYS)}")
    if not (isinstance(rule.get("image_id"), str) or isinstance(rule.get("image_tagged"), str)):
        raise BadRequest("a target_health.unhealthy rule needs 'image_id' or 'image_tagged'")
    state = rule.get("state", "unhealthy")
    if state not in TARGET_STATES:
        raise BadRequest(f"a target_health.unhealthy rule's state must be one of {sorted(TARGET_STATES)}")
    reason, description = TARGET_STATES[state]
    return {
        "image_id": rule.get("image_id"),
        "image_tagged": rule.get("image_tagged"),
        "state": state,
        "reason": str(rule.get("reason", reason)),
        "description": str(rule.get("description", description)),
        # the target is healthy first and turns to `state` this long after it was registered
        "after_seconds": number(rule.get("after_seconds", 0), "after_seconds"),
    }


def _target_health(key, value):
    keys = set(DEFAULT_BEHAVIOUR["target_health"])
    if not isinstance(value, dict) or set(value) - keys:
        raise BadRequest(f"target_health must be an object with keys among {sorted(keys)}")
    health = dict(DEFAULT_BEHAVIOUR["target_health"], **value)
    number(health["healthy_after_seconds"], "target_health.healthy_after_seconds")
    number(health["register_after_seconds"], "target_health.register_after_seconds")
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
    "refresh_rules": _refresh_rules,
    "default_vpc": _flag,
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
            self.pending_registrations = []  # (when, target group arn, instance id), autoscaling.py
            self.reboots = {}  # instance id -> [(start, end)] of agent reboots (exit 194), ssm.py
            self.traffic_sources = {}  # (account, region, group) -> [{"Identifier", "Type"}], autoscaling.py

    def setting(self, key):
        with self.lock:
            return self.behaviour[key]


STATE = State()
