"""kiln's local AWS emulator: moto server (pinned 5.2.5) plus the behaviour kiln needs.

Run with the venv made by `scripts/emulator install`:

    python scripts/emulator.py --host 127.0.0.1 --port 0

It binds, prints exactly one line `KILN_EMULATOR_URL=http://HOST:PORT` once it is
ready to serve, then serves (threaded) until SIGTERM/SIGINT. Every AWS service goes
through moto's usual dispatch, wrapped by three layers:

1. Control API under /_kiln/ (JSON in and out; never faulted, never recorded; a bad
   body is answered 400 {"error": ...}):
   GET  /_kiln/health      -> {"ok": true}
   POST /_kiln/faults      replaces the fault settings (GET shows them). All optional:
        seed (default 0), throttle_rate, error_rate (500 or 503, half each), drop_rate
        (drop or drop_after, half each), latency_ms (added to every AWS request), and
        rules: [{action, service, fault: throttle|500|503|drop|drop_after|delay, count
        (default 1, < 0 = no limit), after (default 0), ms (delay: how long moto's answer
        is held back after moto acted, default 1000)}]. A rule counts every request it matches
        (no action/service = any) and applies to matches after+1 .. after+count; the
        first rule that applies wins over the random rates.
   POST /_kiln/behaviour   merges top-level keys into the behaviour (GET shows it);
                           unknown keys are refused
   GET  /_kiln/requests    [{service, region, action, access_key, status, fault, t}],
                           in arrival order;
                           status is what moto or the fault answered, null for "drop";
                           DELETE clears the list
   POST /_kiln/seed        creates the demo world ({"region": ...}, default us-east-1);
                           idempotent; answers its ids
   POST /_kiln/reset       empties moto, restores default faults and behaviour, clears
                           the request list (lets one emulator serve several tests)
2. Recording and fault injection for every other path (moto's own /moto-api/
   dashboard excepted): service and region from the SigV4 credential scope, action
   from `Action=` (query protocols) or `X-Amz-Target` (JSON protocols).
3. Patches on moto's classes, applied once at start-up, for the gaps below.

moto 5.2.5 gaps found, and how this launcher covers each
---------------------------------------------------------
EC2
- Instances are `running` as soon as RunInstances returns (only the RunInstances
  response says `pending`), `stopped` right after StopInstances and `terminated`
  right after TerminateInstances. -> moto's InstanceState is replaced by a timed one:
  `pending` / `stopping` / `shutting-down` are shown for instance_pending_seconds /
  instance_stopping_seconds / instance_shutting_down_seconds (all 0 by default).
- RunInstances ignores ClientToken: a retry launches a second instance.
  -> a call whose token was seen in the region returns the original reservation.
  DescribeInstances' `client-token` filter is not implemented (500). -> added.
- CreateLaunchTemplateVersion ignores SourceVersion (the new version holds only the
  request's fields) and ClientToken (a retry adds another version), and stores UserData
  as a plain string, which breaks RunInstances from that version. -> reimplemented:
  source data with the request's top-level fields laid over it, token replay, UserData
  parsed as in CreateLaunchTemplate.
- DeleteLaunchTemplateVersions is not implemented (500), and version lookups go by list
  position, so they would break once a version is gone. -> implemented; versions are
  looked up by number and new numbers never reuse a deleted one.
- Images are `available` at once after CreateImage / CopyImage and never fail.
  -> `pending` for image_pending_seconds, then `available`, or `failed` with a
  StateReason when image_fail is set.
- CreateImage accepts a name already used by an image of the account, so a retried call
  (lost answer) makes a second image. -> InvalidAMIName.Duplicate, as AWS answers.
- CreateImage with a `snapshot` TagSpecification raises NotImplementedError (500).
  -> snapshot tags are put on the AMI's snapshot.
- CopyImage ignores TagSpecifications and CopyImageTags. -> both applied.
SSM
- DescribeInstanceInformation is not implemented (500). -> the region's EC2 instances
  that have been `running` for ssm_online_after_seconds, PingStatus Online (none when
  ssm_agent is "never"); InstanceIds / PingStatus filters in both filter syntaxes.
- SendCommand with InstanceIds targets every instance of the region (an empty Targets
  list acts as a match-all EC2 filter), and accepts instances that are not online.
  -> only the listed instances; InvalidInstanceId for one that is not online in SSM.
  The response keeps moto's shape, with Status Pending as AWS answers.
- Every command is Success at once with empty output. -> each command takes the first
  behaviour `commands` rule whose regex is found in its `commands` parameter (lines
  joined with newlines): InProgress for in_progress_seconds, then the rule's status,
  stdout, stderr and exit code (default 0 for Success, 1 for Failed, -1 otherwise).
  No matching rule: Success, exit code 0, no output.
- GetCommandInvocation answers InvalidCommandId for an unknown command (AWS:
  InvocationDoesNotExist) and always reports Success. -> reimplemented.
- ListCommandInvocations and CancelCommand are not implemented (500). -> implemented
  (Details=true gives CommandPlugins with Output); ListCommands shows the same status.
Auto Scaling
- StartInstanceRefresh, DescribeInstanceRefreshes and CancelInstanceRefresh are not
  implemented (500). -> implemented: Pending for the first fifth of `refresh.seconds`,
  then InProgress with PercentageComplete rising, then the configured final status;
  one active refresh per group (InstanceRefreshInProgress otherwise); cancelling gives
  Cancelled. The group's instances are not actually replaced.
"""

import argparse
import base64
import contextlib
import copy
import datetime
import functools
import io
import json
import logging
import os
import random
import re
import signal
import socket
import sys
import threading
import time
import uuid
from urllib.parse import parse_qs

ACCOUNT_ID = "123456789012"  # moto's default account

DEFAULT_BEHAVIOUR = {
    "instance_pending_seconds": 0,
    "instance_stopping_seconds": 0,
    "instance_shutting_down_seconds": 0,
    "image_pending_seconds": 0,
    "image_fail": False,
    "ssm_agent": "online",
    "ssm_online_after_seconds": 0,
    "commands": [],
    "refresh": {"status": "Successful", "seconds": 1},
}
COMMAND_STATUSES = ("Success", "Failed", "TimedOut", "Cancelled")
REFRESH_STATUSES = ("Successful", "Failed", "Cancelled")
FAULTS = ("throttle", "500", "503", "drop", "drop_after", "delay")


class BadRequest(Exception):
    """A control API request that cannot be applied (answered 400)."""


# --------------------------------------------------------------------------------------
# Emulator state: behaviour, faults, recorded requests. One lock guards all of it.
# --------------------------------------------------------------------------------------


def _number(value, key):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise BadRequest(f"{key} must be a number >= 0")
    return value


def _rate(value, key):
    if _number(value, key) > 1:
        raise BadRequest(f"{key} must be between 0 and 1")
    return value


def _command_rule(rule):
    if not isinstance(rule, dict) or not isinstance(rule.get("match"), str):
        raise BadRequest("each commands rule needs a string 'match'")
    unknown = set(rule) - {"match", "status", "in_progress_seconds", "stdout", "stderr", "exit_code"}
    if unknown:
        raise BadRequest(f"unknown commands rule field(s): {sorted(unknown)}")
    try:
        re.compile(rule["match"])
    except re.error as err:
        raise BadRequest(f"bad regex {rule['match']!r}: {err}") from None
    status = rule.get("status", "Success")
    if status not in COMMAND_STATUSES:
        raise BadRequest(f"commands status must be one of {COMMAND_STATUSES}")
    exit_code = rule.get("exit_code")
    if exit_code is None:  # a plausible code for the status unless one is given
        exit_code = {"Success": 0, "Failed": 1}.get(status, -1)
    elif isinstance(exit_code, bool) or not isinstance(exit_code, int):
        raise BadRequest("exit_code must be an integer")
    return {
        "match": rule["match"],
        "status": status,
        "in_progress_seconds": _number(rule.get("in_progress_seconds", 0), "in_progress_seconds"),
        "stdout": str(rule.get("stdout", "")),
        "stderr": str(rule.get("stderr", "")),
        "exit_code": exit_code,
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
        if key.endswith("_seconds"):
            merged[key] = _number(value, key)
        elif key == "image_fail":
            if not isinstance(value, bool):
                raise BadRequest("image_fail must be true or false")
            merged[key] = value
        elif key == "ssm_agent":
            if value not in ("online", "never"):
                raise BadRequest("ssm_agent must be 'online' or 'never'")
            merged[key] = value
        elif key == "commands":
            if not isinstance(value, list):
                raise BadRequest("commands must be a list")
            merged[key] = [_command_rule(rule) for rule in value]
        elif key == "refresh":
            if not isinstance(value, dict) or set(value) - {"status", "seconds"}:
                raise BadRequest("refresh must be an object with 'status' and/or 'seconds'")
            refresh = dict(DEFAULT_BEHAVIOUR["refresh"], **value)
            if refresh["status"] not in REFRESH_STATUSES:
                raise BadRequest(f"refresh status must be one of {REFRESH_STATUSES}")
            _number(refresh["seconds"], "refresh.seconds")
            merged[key] = refresh
    return merged


class Faults:
    """Seeded random rates plus counted rules; `pick` decides one request's fault."""

    def __init__(self, config=None):
        config = config or {}
        if not isinstance(config, dict):
            raise BadRequest("faults must be a JSON object")
        unknown = set(config) - {"seed", "throttle_rate", "error_rate", "drop_rate", "latency_ms", "rules"}
        if unknown:
            raise BadRequest(f"unknown faults key(s): {sorted(unknown)}")
        self.config = config
        self.rng = random.Random(config.get("seed", 0))
        self.throttle_rate = _rate(config.get("throttle_rate", 0), "throttle_rate")
        self.error_rate = _rate(config.get("error_rate", 0), "error_rate")
        self.drop_rate = _rate(config.get("drop_rate", 0), "drop_rate")
        self.latency_ms = _number(config.get("latency_ms", 0), "latency_ms")
        self.rules = []
        for rule in config.get("rules", []):
            if not isinstance(rule, dict) or rule.get("fault") not in FAULTS:
                raise BadRequest(f"each rule needs 'fault', one of {FAULTS}")
            unknown = set(rule) - {"action", "service", "fault", "count", "after", "ms"}
            if unknown:
                raise BadRequest(f"unknown rule field(s): {sorted(unknown)}")
            count, after = rule.get("count", 1), rule.get("after", 0)
            if not isinstance(count, int) or not isinstance(after, int) or after < 0:
                raise BadRequest("rule count and after must be integers (count < 0: no limit)")
            ms = rule.get("ms", 1000)
            if not isinstance(ms, (int, float)) or ms < 0:
                raise BadRequest("rule ms must be a number >= 0")
            self.rules.append(dict(rule, count=count, after=after, ms=ms, seen=0))

    def pick(self, service, action):
        """Rules first (each counts every request it matches), then the random rates."""
        chosen = None
        for rule in self.rules:
            if rule.get("action") not in (None, action) or rule.get("service") not in (None, service):
                continue
            rule["seen"] += 1
            nth = rule["seen"] - rule["after"]
            if chosen is None and nth >= 1 and (rule["count"] < 0 or nth <= rule["count"]):
                chosen = rule["fault"]
                self.delay_ms = rule["ms"]
        if chosen or not (self.throttle_rate or self.error_rate or self.drop_rate):
            return chosen
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


class State:
    def __init__(self):
        self.lock = threading.RLock()
        self.reset()

    def reset(self):
        with self.lock:
            self.behaviour = copy.deepcopy(DEFAULT_BEHAVIOUR)
            self.faults = Faults()
            self.requests = []
            self.refreshes = {}  # (account, region, group) -> [Refresh], newest first

    def setting(self, key):
        with self.lock:
            return self.behaviour[key]


STATE = State()


# --------------------------------------------------------------------------------------
# Patches on moto's classes (applied once by patch_moto()).
# --------------------------------------------------------------------------------------

INSTANCE_CODES = {"pending": 0, "running": 16, "shutting-down": 32, "terminated": 48, "stopping": 64, "stopped": 80}
# settled state moto sets -> (state shown before it, behaviour key giving how long)
INSTANCE_TRANSITIONS = {
    "running": ("pending", "instance_pending_seconds"),
    "stopped": ("stopping", "instance_stopping_seconds"),
    "terminated": ("shutting-down", "instance_shutting_down_seconds"),
}


def _utc(ts):
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc)


def _iso(ts):
    return _utc(ts).strftime("%Y-%m-%dT%H:%M:%S.") + f"{_utc(ts).microsecond // 1000:03d}Z"


@functools.lru_cache(maxsize=None)
def _error_class():
    from moto.core.exceptions import ServiceException

    class EmulatorError(ServiceException):
        """An AWS error answered by the emulator's own code. (It must live outside the
        moto package: moto looks up a moto-module exception's service by its module.)"""

    return EmulatorError


def _service_error(code, message):
    return _error_class()(code, message)


def _patch_instances():
    from moto.core.responses import ActionResult
    from moto.ec2 import utils as ec2_utils
    from moto.ec2.models import instances
    from moto.ec2.responses.instances import InstanceResponse

    class TimedInstanceState(instances.InstanceState):
        """moto jumps straight to the settled state; show the transitional one first."""

        def __init__(self, name="pending", code=0):
            self._settled = None
            self.reached_at = 0.0  # when the settled state is (or was) reached
            self.name = name

        @property
        def name(self):
            if self._settled in INSTANCE_TRANSITIONS and time.time() < self.reached_at:
                return INSTANCE_TRANSITIONS[self._settled][0]
            return self._settled

        @name.setter
        def name(self, value):
            if value == self._settled:  # e.g. a reboot: no transition
                return
            delay = STATE.setting(INSTANCE_TRANSITIONS[value][1]) if value in INSTANCE_TRANSITIONS else 0
            self._settled, self.reached_at = value, time.time() + delay

        @property
        def code(self):
            return INSTANCE_CODES.get(self.name, 0)

        @code.setter
        def code(self, value):
            pass  # derived from the name

    instances.InstanceState = TimedInstanceState  # used by Instance.__init__
    ec2_utils.filter_dict_attribute_mapping.setdefault("client-token", "client_token")

    run_lock = threading.Lock()
    moto_run_instances = InstanceResponse.run_instances

    def run_instances(self):
        token = self._get_param("ClientToken")
        if not token:
            return moto_run_instances(self)
        with run_lock:  # a token seen before in this region replays its reservation
            for reservation in self.ec2_backend.reservations.values():
                if any(i.client_token == token for i in reservation.instances):
                    return ActionResult(reservation)
            return moto_run_instances(self)

    InstanceResponse.run_instances = run_instances


def _patch_images():
    from moto.ec2.models.amis import Ami, AmiBackend
    from moto.ec2.responses.amis import AmisResponse

    def get_state(ami):
        settled = ami.__dict__.get("_kiln_state", "available")
        ready_at = ami.__dict__.get("_kiln_ready_at")
        if ready_at is None or settled != "available":
            return settled
        if time.time() < ready_at:
            return "pending"
        return "failed" if ami.__dict__.get("_kiln_fail") else settled

    def set_state(ami, value):
        ami.__dict__["_kiln_state"] = value

    def state_reason(ami):
        if ami.state == "failed":
            return {
                "Code": "Server.InternalError",
                "Message": "Server.InternalError: Internal error (kiln emulator image_fail)",
            }
        return None

    Ami.state = property(get_state, set_state)
    Ami.state_reason = property(state_reason)

    def start_clock(ami):
        ami.__dict__["_kiln_ready_at"] = time.time() + STATE.setting("image_pending_seconds")
        ami.__dict__["_kiln_fail"] = STATE.setting("image_fail")
        return ami

    moto_create_image = AmiBackend.create_image
    moto_copy_image = AmiBackend.copy_image

    def create_image(self, instance_id, name, description, tag_specifications):
        # AWS refuses a second image of the same name in an account and region; moto makes one.
        if any(ami.name == name and ami.owner_id == self.account_id for ami in self.amis.values()):
            raise _service_error("InvalidAMIName.Duplicate", f"AMI name {name} is already in use by AMI")
        specs = tag_specifications or []
        snapshot_tags = [t for s in specs if s.get("ResourceType") == "snapshot" for t in s.get("Tags", [])]
        specs = [s for s in specs if s.get("ResourceType") != "snapshot"]
        ami = moto_create_image(self, instance_id, name, description, tag_specifications=specs)
        for tag in snapshot_tags:
            ami.ebs_snapshot.add_tag(tag["Key"], tag["Value"])
        return start_clock(ami)

    def copy_image(self, *args, **kwargs):
        return start_clock(moto_copy_image(self, *args, **kwargs))

    AmiBackend.create_image = create_image
    AmiBackend.copy_image = copy_image

    moto_copy_image_response = AmisResponse.copy_image

    def copy_image_response(self):
        result = moto_copy_image_response(self)
        ami = self.ec2_backend.amis[result.result["ImageId"]]
        if self._get_bool_param("CopyImageTags", False):
            from moto.ec2.models import ec2_backends

            source_backend = ec2_backends[self.current_account][self._get_param("SourceRegion")]
            source = source_backend.describe_images(ami_ids=[self._get_param("SourceImageId")])[0]
            for tag in source.get_tags():
                ami.add_tag(tag["key"], tag["value"])
        for spec in self._get_param("TagSpecifications", []):
            if spec.get("ResourceType") in ("image", None):
                for tag in spec.get("Tags", []):
                    ami.add_tag(tag["Key"], tag["Value"])
        return result

    AmisResponse.copy_image = copy_image_response


def _patch_launch_templates():
    from moto.core.responses import ActionResult
    from moto.ec2.exceptions import InvalidLaunchTemplateVersionNotFound, MissingParameterError
    from moto.ec2.models.launch_templates import LaunchTemplate, LaunchTemplateVersion
    from moto.ec2.responses.launch_templates import LaunchTemplates
    from moto.ec2.utils import parse_user_data

    # Versions are looked up by number (moto uses list positions), numbers never reused.
    def create_version(self, data, description):
        number = self.__dict__.get("_kiln_last_number", 0) + 1
        self.__dict__["_kiln_last_number"] = number
        version = LaunchTemplateVersion(self, number, data, description)
        self.versions.append(version)
        return version

    def get_version(self, num):
        key = str(num).lower()
        if key == "$latest":
            return self.versions[-1]
        if key == "$default":
            return self.default_version()
        for version in self.versions:
            if str(version.number) == str(num):
                return version
        raise InvalidLaunchTemplateVersionNotFound(template_id=self.id, version=num)

    def default_version(self):
        return self.get_version(self.default_version_number)

    LaunchTemplate.create_version = create_version
    LaunchTemplate.get_version = get_version
    LaunchTemplate.default_version = default_version

    token_lock = threading.Lock()

    def find_template(response):
        template_id = response._get_param("LaunchTemplateId")
        name = response._get_param("LaunchTemplateName")
        if template_id:
            return response.ec2_backend.get_launch_template(template_id)
        if name:
            return response.ec2_backend.get_launch_template_by_name(name)
        raise MissingParameterError("launch template ID or launch template name")

    def create_launch_template_version(self):
        template = find_template(self)
        data = self._get_param("LaunchTemplateData", {})
        if data.get("UserData") is not None:
            data["UserData"] = parse_user_data(data["UserData"])
        source = self._get_param("SourceVersion")
        if source is not None:  # source data, request's top-level fields laid over it
            data = dict(copy.deepcopy(template.get_version(source).data), **data)
        token = self._get_param("ClientToken")
        self.error_on_dryrun()
        with token_lock:
            tokens = template.__dict__.setdefault("_kiln_tokens", {})
            version = tokens.get(token) if token else None
            if version is None:
                version = template.create_version(data, self._get_param("VersionDescription"))
                if token:
                    tokens[token] = version
        return ActionResult(
            {
                "LaunchTemplateVersion": {
                    "CreateTime": version.create_time,
                    "CreatedBy": f"arn:{self.partition}:iam::{self.current_account}:root",
                    "DefaultVersion": template.is_default(version),
                    "LaunchTemplateData": version.data,
                    "LaunchTemplateId": template.id,
                    "LaunchTemplateName": template.name,
                    "VersionDescription": version.description,
                    "VersionNumber": version.number,
                }
            }
        )

    def delete_launch_template_versions(self):
        template = find_template(self)
        self.error_on_dryrun()
        deleted, failed = [], []
        for requested in self._get_param("Versions", []):
            item = {"LaunchTemplateId": template.id, "LaunchTemplateName": template.name}
            match = [v for v in template.versions if str(v.number) == str(requested)]
            if not match:
                error = ("launchTemplateVersionDoesNotExist", "The specified launch template version does not exist.")
            elif template.is_default(match[0]):
                error = ("unexpectedError", "You cannot delete the default version of a launch template.")
            else:
                template.versions.remove(match[0])
                deleted.append(dict(item, VersionNumber=match[0].number))
                continue
            number = int(requested) if str(requested).isdigit() else 0
            failed.append(dict(item, VersionNumber=number, ResponseError={"Code": error[0], "Message": error[1]}))
        return ActionResult(
            {
                "SuccessfullyDeletedLaunchTemplateVersions": deleted,
                "UnsuccessfullyDeletedLaunchTemplateVersions": failed,
            }
        )

    LaunchTemplates.create_launch_template_version = create_launch_template_version
    LaunchTemplates.delete_launch_template_versions = delete_launch_template_versions


def ssm_online_instances(account_id, region):
    """EC2 instances the emulated SSM agent has registered: running long enough."""
    from moto.backends import get_backend

    with STATE.lock:
        if STATE.behaviour["ssm_agent"] == "never":
            return []
        after = STATE.behaviour["ssm_online_after_seconds"]
    now = time.time()
    online = []
    for instance in get_backend("ec2")[account_id][region].all_instances():
        state = instance._state
        if state.name == "running" and now - state.reached_at >= after:
            online.append(instance)
    return online


class CommandRun:
    """What the emulated agent does with one SendCommand, per instance."""

    PLUGIN = "aws:runShellScript"
    DETAILS = {"Success": "Success", "Failed": "Failed", "TimedOut": "ExecutionTimedOut", "Cancelled": "Cancelled"}

    def __init__(self, text, rule):
        self.text = text
        self.rule = rule
        self.sent_at = time.time()
        self.cancelled_at = {}  # instance id -> time of CancelCommand

    def outcome(self, instance_id):
        now = time.time()
        done_at = self.sent_at + self.rule["in_progress_seconds"]
        cancelled_at = self.cancelled_at.get(instance_id)
        result = {"start": self.sent_at, "end": None, "stdout": "", "stderr": "", "code": -1}
        if cancelled_at is not None and cancelled_at < done_at:
            return dict(result, status="Cancelled", details="Cancelled", end=cancelled_at)
        if now < done_at:
            return dict(result, status="InProgress", details="InProgress")
        status = self.rule["status"]
        return dict(
            result,
            status=status,
            details=self.DETAILS[status],
            end=done_at,
            stdout=self.rule["stdout"],
            stderr=self.rule["stderr"],
            code=self.rule["exit_code"],
        )


def _patch_ssm():
    from moto.core.responses import ActionResult
    from moto.ssm.models import Command, SimpleSystemManagerBackend
    from moto.ssm.responses import SimpleSystemManagerResponse as SSM

    moto_targets = Command._get_instance_ids_from_targets

    def instance_ids_from_targets(self):
        return moto_targets(self) if self.targets else []  # no Targets: no extra instances

    Command._get_instance_ids_from_targets = instance_ids_from_targets

    moto_send = SimpleSystemManagerBackend.send_command

    def send_command(self, **kwargs):
        command = moto_send(self, **kwargs)
        text = "\n".join(str(line) for line in (kwargs.get("parameters") or {}).get("commands", []))
        with STATE.lock:
            rules = STATE.behaviour["commands"]
        rule = next((r for r in rules if re.search(r["match"], text)), None)
        command.kiln = CommandRun(text, rule or _command_rule({"match": ""}))
        return command

    SimpleSystemManagerBackend.send_command = send_command

    def command_status(command):
        """(status, completed, errors) of a command over its instances."""
        outcomes = [command.kiln.outcome(i)["status"] for i in command.instance_ids]
        finished = [s for s in outcomes if s != "InProgress"]
        errors = sum(s in ("Failed", "TimedOut") for s in finished)
        if len(finished) < len(outcomes):
            return "InProgress", len(finished), errors
        for status in ("Failed", "TimedOut", "Cancelled"):
            if status in finished:
                return status, len(finished), errors
        return "Success", len(finished), errors

    moto_response_object = Command.response_object

    def response_object(self):
        obj = moto_response_object(self)
        if hasattr(self, "kiln"):
            status, completed, errors = command_status(self)
            obj.update(Status=status, StatusDetails=status, CompletedCount=completed, ErrorCount=errors)
        return obj

    Command.response_object = response_object

    def find_command(response, command_id):
        for command in response.ssm_backend._commands:
            if command.command_id == command_id and hasattr(command, "kiln"):
                return command
        return None

    moto_send_response = SSM.send_command

    def send_command_response(self):
        online = {i.id for i in ssm_online_instances(self.current_account, self.region)}
        offline = [i for i in self._get_param("InstanceIds", []) if i not in online]
        if offline:
            raise _service_error(
                "InvalidInstanceId",
                f"Instances [[{', '.join(offline)}]] not in a valid state for account {self.current_account}",
            )
        result = moto_send_response(self)
        result.result["Command"].update(Status="Pending", StatusDetails="Pending", CompletedCount=0, ErrorCount=0)
        return result

    def get_command_invocation(self):
        command = find_command(self, self._get_param("CommandId"))
        instance_id = self._get_param("InstanceId")
        if command is None or instance_id not in command.instance_ids:
            raise _service_error("InvocationDoesNotExist", "The command invocation does not exist.")
        out = command.kiln.outcome(instance_id)
        end = out["end"] if out["end"] is not None else time.time()
        return ActionResult(
            {
                "CommandId": command.command_id,
                "InstanceId": instance_id,
                "Comment": command.comment,
                "DocumentName": command.document_name,
                "DocumentVersion": "$DEFAULT",
                "PluginName": self._get_param("PluginName") or CommandRun.PLUGIN,
                "ResponseCode": out["code"],
                "ExecutionStartDateTime": _iso(out["start"]),
                "ExecutionElapsedTime": f"PT{end - out['start']:.3f}S",
                "ExecutionEndDateTime": _iso(out["end"]) if out["end"] is not None else "",
                "Status": out["status"],
                "StatusDetails": out["details"],
                "StandardOutputContent": out["stdout"][:24000],
                "StandardOutputUrl": "",
                "StandardErrorContent": out["stderr"][:8000],
                "StandardErrorUrl": "",
                "CloudWatchOutputConfig": {"CloudWatchLogGroupName": "", "CloudWatchOutputEnabled": False},
            }
        )

    def list_command_invocations(self):
        command_id = self._get_param("CommandId")
        instance_filter = self._get_param("InstanceId")
        details = self._get_bool_param("Details", False)
        commands = [c for c in self.ssm_backend._commands if hasattr(c, "kiln")]
        if command_id:
            commands = [c for c in commands if c.command_id == command_id]
            if not commands:
                raise _service_error("InvalidCommandId", "Invalid command id.")
        invocations = []
        for command in reversed(commands):  # newest first, as AWS lists them
            for instance_id in command.instance_ids:
                if instance_filter and instance_id != instance_filter:
                    continue
                out = command.kiln.outcome(instance_id)
                plugins = []
                if details:
                    output = out["stdout"]
                    if out["stderr"]:
                        output += "\n----------ERROR-------\n" + out["stderr"]
                    plugins.append(
                        {
                            "Name": CommandRun.PLUGIN,
                            "Status": out["status"],
                            "StatusDetails": out["details"],
                            "ResponseCode": out["code"],
                            "ResponseStartDateTime": _utc(out["start"]),
                            "ResponseFinishDateTime": _utc(out["end"]) if out["end"] is not None else None,
                            "Output": output[:2500],
                            "StandardOutputUrl": "",
                            "StandardErrorUrl": "",
                            "OutputS3Region": command.output_s3_region or self.region,
                            "OutputS3BucketName": command.output_s3_bucket_name,
                            "OutputS3KeyPrefix": command.output_s3_key_prefix,
                        }
                    )
                invocations.append(
                    {
                        "CommandId": command.command_id,
                        "InstanceId": instance_id,
                        "InstanceName": "",
                        "Comment": command.comment,
                        "DocumentName": command.document_name,
                        "DocumentVersion": "$DEFAULT",
                        "RequestedDateTime": command.requested_date_time,
                        "Status": out["status"],
                        "StatusDetails": out["details"],
                        "TraceOutput": "",
                        "StandardOutputUrl": "",
                        "StandardErrorUrl": "",
                        "CommandPlugins": plugins,
                        "ServiceRole": command.service_role_arn,
                        "CloudWatchOutputConfig": {"CloudWatchLogGroupName": "", "CloudWatchOutputEnabled": False},
                    }
                )
        return ActionResult({"CommandInvocations": invocations})

    def cancel_command(self):
        command = find_command(self, self._get_param("CommandId"))
        if command is None:
            raise _service_error("InvalidCommandId", "Invalid command id.")
        now = time.time()
        for instance_id in self._get_param("InstanceIds") or command.instance_ids:
            command.kiln.cancelled_at.setdefault(instance_id, now)
        return ActionResult({})

    def describe_instance_information(self):
        wanted, ping = None, None
        filters = [(f.get("Key"), f.get("Values", [])) for f in self._get_param("Filters", [])]
        filters += [(f.get("key"), f.get("valueSet", [])) for f in self._get_param("InstanceInformationFilterList", [])]
        for key, values in filters:
            if key == "InstanceIds":
                wanted = set(values) if wanted is None else wanted & set(values)
            elif key == "PingStatus":
                ping = set(values)
        now = _utc(time.time())
        items = []
        if ping is None or "Online" in ping:
            for instance in ssm_online_instances(self.current_account, self.region):
                if wanted is not None and instance.id not in wanted:
                    continue
                items.append(
                    {
                        "InstanceId": instance.id,
                        "PingStatus": "Online",
                        "LastPingDateTime": now,
                        "AgentVersion": "3.3.1142.0",
                        "IsLatestVersion": True,
                        "PlatformType": "Linux",
                        "PlatformName": "Amazon Linux",
                        "PlatformVersion": "2023",
                        "ResourceType": "EC2Instance",
                        "IPAddress": instance.private_ip,
                        "ComputerName": instance.private_dns_name,
                        "SourceId": instance.id,
                        "SourceType": "AWS::EC2::Instance",
                    }
                )
        return ActionResult({"InstanceInformationList": items})

    SSM.send_command = send_command_response
    SSM.get_command_invocation = get_command_invocation
    SSM.list_command_invocations = list_command_invocations
    SSM.cancel_command = cancel_command
    SSM.describe_instance_information = describe_instance_information


class Refresh:
    """An emulated instance refresh: Pending, InProgress, then the configured outcome."""

    def __init__(self, group, desired, preferences, outcome):
        self.id = str(uuid.uuid4())
        self.group = group
        self.desired = desired
        self.preferences = preferences
        self.final = outcome["status"]
        self.seconds = outcome["seconds"]
        self.started_at = time.time()
        self.cancelled_at = None

    def progress(self, now):
        if self.seconds <= 0:
            return 100
        return max(0, min(99, int(100 * (now - self.started_at) / self.seconds)))

    def status(self, now=None):
        now = time.time() if now is None else now
        if self.cancelled_at is not None and self.cancelled_at < self.started_at + self.seconds:
            return "Cancelled"
        if now >= self.started_at + self.seconds:
            return self.final
        return "Pending" if now < self.started_at + 0.2 * self.seconds else "InProgress"

    def active(self):
        return self.status() in ("Pending", "InProgress")

    def describe(self):
        now = time.time()
        status = self.status(now)
        item = {
            "InstanceRefreshId": self.id,
            "AutoScalingGroupName": self.group,
            "Status": status,
            "StartTime": _utc(self.started_at),
            "Preferences": self.preferences,
        }
        if status == "Pending":
            item.update(PercentageComplete=0, InstancesToUpdate=self.desired, StatusReason="Waiting to start")
        elif status == "InProgress":
            done = self.progress(now)
            item.update(PercentageComplete=done, InstancesToUpdate=round(self.desired * (100 - done) / 100))
        elif status == "Successful":
            item.update(PercentageComplete=100, InstancesToUpdate=0, EndTime=_utc(self.started_at + self.seconds))
        elif status == "Failed":
            item.update(
                PercentageComplete=0,
                InstancesToUpdate=self.desired,
                EndTime=_utc(self.started_at + self.seconds),
                StatusReason="Instance refresh failed: a replacement instance failed its health checks (kiln emulator)",
            )
        else:  # Cancelled, by CancelInstanceRefresh or by the configured outcome
            ended = self.cancelled_at if self.cancelled_at is not None else self.started_at + self.seconds
            item.update(
                PercentageComplete=self.progress(ended) if self.cancelled_at is not None else 0,
                InstancesToUpdate=self.desired,
                EndTime=_utc(ended),
                StatusReason="Instance refresh cancelled",
            )
        return item


def _patch_autoscaling():
    from moto.autoscaling.responses import AutoScalingResponse as ASG
    from moto.core.responses import ActionResult

    def refreshes(response, group):
        return STATE.refreshes.setdefault((response.current_account, response.region, group), [])

    def start_instance_refresh(self):
        name = self._get_param("AutoScalingGroupName")
        group = self.autoscaling_backend.autoscaling_groups.get(name)
        if group is None:
            raise _service_error(
                "ValidationError", f"AutoScalingGroup name not found - AutoScalingGroup '{name}' not found"
            )
        with STATE.lock:
            existing = refreshes(self, name)
            if any(r.active() for r in existing):
                raise _service_error(
                    "InstanceRefreshInProgress",
                    "An Instance Refresh is already in progress and blocks the execution of this Instance Refresh.",
                )
            refresh = Refresh(
                name, group.desired_capacity or 0, self._get_param("Preferences") or {}, STATE.behaviour["refresh"]
            )
            existing.insert(0, refresh)
        return ActionResult({"InstanceRefreshId": refresh.id})

    def describe_instance_refreshes(self):
        ids = self._get_param("InstanceRefreshIds", [])
        with STATE.lock:
            found = [r for r in refreshes(self, self._get_param("AutoScalingGroupName")) if not ids or r.id in ids]
            items = [r.describe() for r in found[: self._get_int_param("MaxRecords", 50)]]
        return ActionResult({"InstanceRefreshes": items})

    def cancel_instance_refresh(self):
        name = self._get_param("AutoScalingGroupName")
        with STATE.lock:
            active = [r for r in refreshes(self, name) if r.active()]
            if not active:
                raise _service_error(
                    "ActiveInstanceRefreshNotFound",
                    f"No in progress or pending Instance Refresh found for Auto Scaling group {name}",
                )
            active[0].cancelled_at = time.time()
        return ActionResult({"InstanceRefreshId": active[0].id})

    ASG.start_instance_refresh = start_instance_refresh
    ASG.describe_instance_refreshes = describe_instance_refreshes
    ASG.cancel_instance_refresh = cancel_instance_refresh


@contextlib.contextmanager
def _shared_boto3_session():
    """moto.ec2 creates three boto3 Sessions at import time just to list regions, and
    each one re-reads botocore's endpoint data (about 0.1 s each). While that import
    runs, let them share one botocore session: a third of the emulator's start-up."""
    import boto3
    import botocore.session

    shared, real_session = botocore.session.get_session(), boto3.Session

    def session(*args, **kwargs):
        kwargs.setdefault("botocore_session", shared)
        return real_session(*args, **kwargs)

    boto3.Session = session
    try:
        yield
    finally:
        boto3.Session = real_session


def patch_moto():
    with _shared_boto3_session():
        import moto.ec2.models  # noqa: F401
    _patch_instances()
    _patch_images()
    _patch_launch_templates()
    _patch_ssm()
    _patch_autoscaling()


# --------------------------------------------------------------------------------------
# The demo world (POST /_kiln/seed), made directly in moto's backends.
# --------------------------------------------------------------------------------------

SEED_NAME = "rudder-dataplane"
BUILDER_PROFILE = "kiln-builder"
EC2_TRUST_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}],
}
SEED_USER_DATA = "#!/bin/bash\nsystemctl enable --now rudder-server\n"
SEED_LOCK = threading.Lock()


def seed_world(region):
    from moto.backends import get_backend
    from moto.ec2.utils import parse_user_data

    iam = get_backend("iam")[ACCOUNT_ID]["global"]
    role = next((r for r in iam.get_roles() if r.name == BUILDER_PROFILE), None)
    if role is None:
        role = iam.create_role(
            role_name=BUILDER_PROFILE,
            assume_role_policy_document=json.dumps(EC2_TRUST_POLICY),
            path="/",
            permissions_boundary=None,
            description="kiln builder instances (emulator seed)",
            tags=[],
            max_session_duration=None,
        )
    profile = next((p for p in iam.get_instance_profiles() if p.name == BUILDER_PROFILE), None)
    if profile is None:
        profile = iam.create_instance_profile(name=BUILDER_PROFILE, path="/", role_names=[BUILDER_PROFILE])

    ec2 = get_backend("ec2")[ACCOUNT_ID][region]
    vpc = ec2.get_default_vpc()
    subnets = sorted(s.id for s in ec2.describe_subnets() if s.vpc_id == vpc.id and s.default_for_az)
    group = next((g for g in ec2.describe_security_groups() if g.name == SEED_NAME and g.vpc_id == vpc.id), None)
    if group is None:
        group = ec2.create_security_group(SEED_NAME, "rudder dataplane (kiln emulator seed)", vpc_id=vpc.id)

    template = next((t for t in ec2.launch_templates.values() if t.name == SEED_NAME), None)
    if template is None:
        images = ec2.describe_images(owners=["amazon"], filters={"name": ["al2023-ami-2023.*-x86_64"]})
        if not images:
            raise BadRequest(f"no al2023-ami-2023.*-x86_64 image owned by amazon in {region}")
        image = max(images, key=lambda i: (str(i.creation_date), i.name))
        data = {
            "ImageId": image.id,
            "InstanceType": "t3.large",
            "SecurityGroupIds": [group.id],
            "UserData": parse_user_data(base64.b64encode(SEED_USER_DATA.encode()).decode()),
            "TagSpecifications": [{"ResourceType": "instance", "Tags": [{"Key": "app", "Value": "rudder"}]}],
            "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled"},
            "BlockDeviceMappings": [
                {
                    "DeviceName": "/dev/xvda",
                    "Ebs": {"VolumeSize": 30, "VolumeType": "gp3", "Encrypted": True, "DeleteOnTermination": True},
                }
            ],
        }
        template = ec2.create_launch_template(SEED_NAME, "seeded by the kiln emulator", data, {})

    target_group_arn = None
    try:
        elb = get_backend("elbv2")[ACCOUNT_ID][region]
        target = next((t for t in elb.target_groups.values() if t.name == SEED_NAME), None)
        if target is None:
            target = elb.create_target_group(
                SEED_NAME,
                vpc_id=vpc.id,
                protocol="HTTP",
                port=8080,
                healthcheck_protocol="HTTP",
                healthcheck_port="8080",
                healthcheck_path="/health",
                target_type="instance",
            )
        target_group_arn = target.arn
    except Exception as err:  # optional part of the world
        logging.getLogger("kiln-emulator").warning("seed: no target group: %s", err)

    scaling = get_backend("autoscaling")[ACCOUNT_ID][region]
    if SEED_NAME not in scaling.autoscaling_groups:
        scaling.create_auto_scaling_group(
            name=SEED_NAME,
            availability_zones=[],
            desired_capacity=1,
            max_size=1,
            min_size=1,
            launch_config_name=None,
            launch_template={"LaunchTemplateName": SEED_NAME, "Version": "$Default"},
            vpc_zone_identifier=",".join(subnets),
            default_cooldown=None,
            health_check_period=None,
            health_check_type=None,
            load_balancers=[],
            target_group_arns=[target_group_arn] if target_group_arn else [],
            placement_group=None,
            termination_policies=[],
            tags=[],
        )
    return {
        "region": region,
        "instance_profile": profile.name,
        "instance_profile_arn": profile.arn,
        "role_arn": role.arn,
        "vpc_id": vpc.id,
        "subnet_ids": subnets,
        "security_group_id": group.id,
        "image_id": template.default_version().data["ImageId"],
        "launch_template_id": template.id,
        "launch_template_name": template.name,
        "auto_scaling_group": SEED_NAME,
        "target_group_arn": target_group_arn,
    }


# --------------------------------------------------------------------------------------
# The WSGI layer: control API, recording, faults.
# --------------------------------------------------------------------------------------

SCOPE_RE = re.compile(r"Credential=[^/,\s]+/\d{8}/([^/]+)/([^/]+)/aws4_request")
ACCESS_KEY_RE = re.compile(r"Credential=([^/,\s]+)/")


class DropConnection(ConnectionAbortedError):
    """Raised after the socket is shut: werkzeug treats it as a dropped connection."""


def _drop(environ):
    sock = environ.get("werkzeug.socket")
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    raise DropConnection("connection dropped by a kiln emulator fault")


def _buffer_body(environ):
    """Read the whole body and put it back so moto can read it again."""
    length = environ.get("CONTENT_LENGTH")
    stream = environ["wsgi.input"]
    if length:
        body = stream.read(int(length))
    elif environ.get("wsgi.input_terminated"):
        body = stream.read()
        environ.pop("HTTP_TRANSFER_ENCODING", None)
    else:
        body = b""
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    return body


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


def fault_response(protocol, fault):
    """(status line, headers, body) answering as AWS would for this protocol."""
    request_id = str(uuid.uuid4())
    status, code, message, kind = {
        "throttle": (None, None, None, "Sender"),
        "500": ("500 Internal Server Error", "InternalError", "An internal error has occurred", "Receiver"),
        "503": ("503 Service Unavailable", "ServiceUnavailable", "Service is unavailable", "Receiver"),
    }[fault]
    if protocol == "json":
        if fault == "throttle":
            status, code, message = "400 Bad Request", "ThrottlingException", "Rate exceeded"
        elif fault == "500":
            code = "InternalServerError"  # the modeled name in JSON services such as SSM
        body = json.dumps({"__type": code, "message": message})
        return status, [("Content-Type", "application/x-amz-json-1.1"), ("x-amzn-RequestId", request_id)], body
    if protocol == "ec2":
        if fault == "throttle":
            status, code, message = "503 Service Unavailable", "RequestLimitExceeded", "Request limit exceeded."
        body = (
            f"<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors>"
            f"<RequestID>{request_id}</RequestID></Response>"
        )
        return status, [("Content-Type", "text/xml;charset=UTF-8")], body
    if fault == "throttle":
        status, code, message = "400 Bad Request", "Throttling", "Rate exceeded"
    body = (
        f"<ErrorResponse><Error><Type>{kind}</Type><Code>{code}</Code><Message>{message}</Message></Error>"
        f"<RequestId>{request_id}</RequestId></ErrorResponse>"
    )
    return status, [("Content-Type", "text/xml"), ("x-amzn-RequestId", request_id)], body


class KilnApp:
    def __init__(self, moto_app):
        self.moto_app = moto_app

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == "/_kiln" or path.startswith("/_kiln/"):
            return self.control(environ, start_response)
        if path.startswith("/moto-api"):
            return self.moto_app(environ, start_response)
        return self.aws(environ, start_response)

    # ---- AWS requests ------------------------------------------------------------

    def aws(self, environ, start_response):
        body = _buffer_body(environ)
        service, region, action, protocol = identify(environ, body)
        access_key = ACCESS_KEY_RE.search(environ.get("HTTP_AUTHORIZATION", ""))
        record = {
            "service": service,
            "region": region,
            "action": action,
            # Tells apart callers sharing one emulator (kiln, and a test checking its work).
            "access_key": access_key.group(1) if access_key else None,
            "status": None,
            "fault": None,
            "t": time.time(),
        }
        with STATE.lock:
            STATE.requests.append(record)
            record["fault"] = fault = STATE.faults.pick(service, action)
            latency = STATE.faults.latency_ms
            delay_ms = getattr(STATE.faults, "delay_ms", 0)
        if latency:
            time.sleep(latency / 1000)
        if fault in ("throttle", "500", "503"):
            status, headers, text = fault_response(protocol, fault)
            record["status"] = int(status.split()[0])
            payload = text.encode()
            start_response(status, headers + [("Content-Length", str(len(payload)))])
            return [payload]
        if fault == "drop":
            _drop(environ)

        def capture(status, headers, exc_info=None):
            record["status"] = int(status.split()[0])
            return start_response(status, headers, exc_info)

        if fault == "delay":  # let moto do the work, then hold the answer back for a while
            held = {}

            def hold(status, headers, exc_info=None):
                record["status"] = int(status.split()[0])
                held["status"], held["headers"] = status, headers
                return lambda data: None

            result = self.moto_app(environ, hold)
            try:
                body = b"".join(result)
            finally:
                if hasattr(result, "close"):
                    result.close()
            time.sleep(delay_ms / 1000)
            start_response(held["status"], held["headers"])
            return [body]
        if fault == "drop_after":  # let moto do the work, then hang up without answering

            def swallow(status, headers, exc_info=None):
                record["status"] = int(status.split()[0])
                return lambda data: None

            result = self.moto_app(environ, swallow)
            try:
                for _ in result:
                    pass
            finally:
                if hasattr(result, "close"):
                    result.close()
            _drop(environ)
        return self.moto_app(environ, capture)

    # ---- control API -------------------------------------------------------------

    def control(self, environ, start_response):
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "").rstrip("/")
        try:
            body = _buffer_body(environ)
            payload = json.loads(body) if body.strip() else {}
            status, answer = self.route(method, path, payload)
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

    def route(self, method, path, payload):
        ok = "200 OK"
        if (method, path) == ("GET", "/_kiln/health"):
            return ok, {"ok": True}
        if path == "/_kiln/faults" and method in ("GET", "POST"):
            with STATE.lock:
                if method == "POST":
                    STATE.faults = Faults(payload)
                return ok, STATE.faults.config
        if path == "/_kiln/behaviour" and method in ("GET", "POST"):
            with STATE.lock:
                if method == "POST":
                    STATE.behaviour = merge_behaviour(STATE.behaviour, payload)
                return ok, STATE.behaviour
        if path == "/_kiln/requests" and method in ("GET", "DELETE"):
            with STATE.lock:
                if method == "DELETE":
                    STATE.requests = []
                return ok, list(STATE.requests)
        if (method, path) == ("POST", "/_kiln/seed"):
            if not isinstance(payload, dict):
                raise BadRequest("seed body must be a JSON object")
            with SEED_LOCK:
                return ok, seed_world(payload.get("region") or "us-east-1")
        if (method, path) == ("POST", "/_kiln/reset"):
            from moto.moto_api._internal.models import moto_api_backend

            with SEED_LOCK:
                moto_api_backend.reset()
                STATE.reset()
            return ok, {"ok": True}
        return "404 Not Found", {"error": f"no control endpoint {method} {path}"}


# --------------------------------------------------------------------------------------
# Server
# --------------------------------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(description="kiln's local AWS emulator (moto + patches + faults)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5055, help="0 picks a free port")
    parser.add_argument("--log-requests", action="store_true", help="log each HTTP request to stderr")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if not args.log_requests:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)

    from werkzeug.serving import make_server

    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app

    patch_moto()
    app = KilnApp(DomainDispatcherApplication(create_backend_app))
    server = make_server(args.host, args.port, app, threaded=True, request_handler=MotoRequestHandler)
    port = server.socket.getsockname()[1]

    def stop(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"KILN_EMULATOR_URL=http://{args.host}:{port}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        logging.shutdown()
        sys.stdout.flush()
        # Nothing is kept on disk; skip the interpreter's teardown of moto's large
        # in-memory state, which takes over a second.
        os._exit(0)


if __name__ == "__main__":
    main()
