"""Patches on moto's Auto Scaling: instance refreshes that really replace instances.

moto 5.2.5 gaps, and how this module covers each:

- StartInstanceRefresh, DescribeInstanceRefreshes, CancelInstanceRefresh and
  RollbackInstanceRefresh are not implemented (500). -> implemented, one active refresh per
  group (InstanceRefreshInProgress otherwise). A refresh is Pending for the first fifth of
  `refresh.seconds`, then InProgress. It replaces, one at a time, the group's instances that do
  not run its target version (all of them without SkipMatching): the DesiredConfiguration's
  version, else the group's own launch template setting resolved at the start. So a group that
  pins a version number, or uses a launch configuration, refreshes to Successful replacing
  nothing, as on AWS. With MaxHealthyPercentage above 100 the replacement is launched first and
  the old instance terminated once the replacement is healthy in every target group of the
  group (elbv2.py); otherwise the old one is terminated first. A replacement that turns
  `unhealthy` fails the refresh with its reason; with AutoRollback the refresh terminates what
  it launched, relaunches what it terminated from the previous version, and ends
  RollbackSuccessful. A successful refresh with a DesiredConfiguration leaves the group on that
  version, as AWS does. A scripted `refresh.status` of Failed or Cancelled ends the refresh that
  way after `refresh.seconds` without replacing anything.
- Preferences are not validated. -> MaxHealthyPercentage must be 100-200 and at most 100 above
  MinHealthyPercentage; AutoRollback needs a DesiredConfiguration whose version is a number.
- Instances report the group template's default version, not the one they were launched from.
  -> the version each instance was launched from (STATE.instance_versions; else the oldest
  version whose image it runs).

Not modelled: instance warm-up, bake time and alarms (accepted), the target group's
deregistration delay (a terminated instance leaves its target groups at once), checkpoints.

The refreshes live in STATE.refreshes; a background thread advances them every TICK_SECONDS.

Imports moto: imported by server.patch_moto(), which then calls patch().
"""

import threading
import time
import uuid

from moto.autoscaling.models import InstanceState
from moto.autoscaling.responses import AutoScalingResponse as ASG
from moto.core.responses import ActionResult

from . import elbv2
from .common import service_error, utc
from .state import STATE

TICK_SECONDS = 0.05
ACTIVE = ("Pending", "InProgress", "RollbackInProgress")


def patch():
    ASG.start_instance_refresh = start_instance_refresh
    ASG.describe_instance_refreshes = describe_instance_refreshes
    ASG.cancel_instance_refresh = cancel_instance_refresh
    ASG.rollback_instance_refresh = rollback_instance_refresh
    InstanceState.launch_template = property(_instance_launch_template)
    threading.Thread(target=_tick_forever, name="kiln-refreshes", daemon=True).start()


# --- versions ---------------------------------------------------------------------------


def _version_number(template, version):
    """The number `version` ($Default, $Latest or a number) names in `template`."""
    text = str(version)
    if text == "$Default":
        return template.default_version_number
    if text == "$Latest":
        return template.latest_version_number
    return int(text)


def _version(template, number):
    return next((v for v in template.versions if v.number == number), None)


def instance_version(group, instance):
    """The launch template version an instance of `group` was launched from."""
    known = STATE.instance_versions.get(instance.id)
    if known is not None or group.ec2_launch_template is None:
        return known
    matching = [v.number for v in group.ec2_launch_template.versions if v.image_id == instance.image_id]
    # launched before any later version with the same image existed
    return min(matching) if matching else group.ec2_launch_template.default_version_number


def _instance_launch_template(self):
    group = self.auto_scaling_group
    if group is None or group.ec2_launch_template is None:
        return None
    template = group.ec2_launch_template
    return {
        "LaunchTemplateId": template.id,
        "LaunchTemplateName": template.name,
        "Version": str(instance_version(group, self.instance)),
    }


# --- launching and terminating group instances ------------------------------------------


def _target_groups(group):
    backend = group.autoscaling_backend.elbv2_backend
    return [backend.target_groups[arn] for arn in group.target_group_arns if arn in backend.target_groups]


def launch(group, number):
    """Launches one instance of `group` from version `number`; registers it in the target groups."""
    saved = group.launch_template_version
    group.launch_template_version = str(number)
    before = {s.instance.id for s in group.instance_states}
    try:
        group.replace_autoscaling_group_instances(1, group.get_propagated_tags())
    finally:
        group.launch_template_version = saved
    new = next(s.instance for s in group.instance_states if s.instance.id not in before)
    STATE.instance_versions[new.id] = number
    for target_group in _target_groups(group):
        target_group.targets[new.id] = {"Id": new.id, "Port": target_group.port}
        elbv2.registered(target_group.arn, new.id)
    return new.id


def terminate(group, instance_id):
    """Takes an instance out of its target groups and the group, and terminates it (the record of
    healthy targets sees the change at once)."""
    for target_group in _target_groups(group):
        target_group.targets.pop(instance_id, None)
    group.instance_states = [s for s in group.instance_states if s.instance.id != instance_id]
    group.autoscaling_backend.ec2_backend.terminate_instances([instance_id])
    elbv2.sample(time.time())


def health(group, instance_id, now):
    """`healthy`, `unhealthy` (with reason and description) or `initial`, over every target
    group of `group` (healthy at once when it has none)."""
    instance = group.autoscaling_backend.ec2_backend.get_instance_by_id(instance_id)
    worst = ("healthy", None, None)
    for target_group in _target_groups(group):
        state = elbv2.target_state(target_group.arn, instance, group.autoscaling_backend.ec2_backend, now)
        if state[0] == "unhealthy":
            return state + (target_group.arn,)
        if state[0] != "healthy":
            worst = state
    return worst + (None,)


# --- the refresh ------------------------------------------------------------------------


class Refresh:
    """An emulated instance refresh (see the module docstring)."""

    def __init__(self, key, group, request, outcome):
        self.id = str(uuid.uuid4())
        self.key = key  # (account, region, group name)
        self.preferences = request["preferences"]
        self.desired = request["desired"]
        self.target = request["target"]
        self.previous = group.launch_template_version
        self.scripted = outcome
        self.started_at = time.time()
        self.status = "Pending"
        self.reason = "Waiting to start"
        self.ended_at = None
        self.queue = request["to_replace"]
        self.total = len(self.queue)
        self.current = None  # (old instance id, new instance id)
        self.launched, self.terminated = [], []

    def active(self):
        return self.status in ACTIVE

    def launches_first(self):
        return int(self.preferences.get("MaxHealthyPercentage") or 100) > 100

    def end(self, status, reason, now):
        self.status, self.reason, self.ended_at = status, reason, now

    def tick(self, group, now):
        if not self.active():
            return
        if self.status == "Pending":
            if now < self.started_at + 0.2 * self.scripted["seconds"]:
                return
            self.status, self.reason = "InProgress", ""
        if self.scripted["status"] != "Successful":
            if now >= self.started_at + self.scripted["seconds"]:
                reason = {"Failed": "Instance refresh failed (kiln emulator: scripted)"}
                self.end(self.scripted["status"], reason.get(self.scripted["status"], "Instance refresh cancelled"), now)
            return
        if self.current is None:
            self._next(group, now)
        else:
            self._watch(group, now)

    def _next(self, group, now):
        if not self.queue:
            if self.desired is not None:
                group.launch_template_version = str(self.target)
                group.provided_launch_template_version = str(self.target)
            self.end("Successful", "", now)
            return
        old = self.queue.pop(0)
        if not self.launches_first():
            terminate(group, old)
            self.terminated.append(old)
        new = launch(group, self.target)
        self.launched.append(new)
        self.current = (old, new)

    def _watch(self, group, now):
        old, new = self.current
        state, reason, description, arn = health(group, new, now)
        if state == "unhealthy":
            why = (
                f"Instance refresh failed: instance {new} failed the health check of target group {arn}: "
                f"{reason}: {description}"
            )
            if self.preferences.get("AutoRollback"):
                self.roll_back(group, now, why)
            else:
                self.end("Failed", why, now)
            return
        if state != "healthy":
            return
        if self.launches_first():
            elbv2.sample(now)  # the moment both are healthy is in the record, however short
            terminate(group, old)
            self.terminated.append(old)
        self.current = None

    def roll_back(self, group, now, why):
        """Terminates what the refresh launched and relaunches what it terminated."""
        for instance_id in self.launched:
            terminate(group, instance_id)
        template = group.ec2_launch_template
        for _ in self.terminated:
            launch(group, _version_number(template, self.previous) if template else self.target)
        group.launch_template_version = self.previous
        self.end("RollbackSuccessful", why, now)

    def percentage(self):
        if self.status == "Successful" or self.total == 0:
            return 100 if self.status == "Successful" else 0
        done = self.total - len(self.queue) - (1 if self.current else 0)
        return int(100 * done / self.total)

    def describe(self):
        item = {
            "InstanceRefreshId": self.id,
            "AutoScalingGroupName": self.key[2],
            "Status": self.status,
            "StartTime": utc(self.started_at),
            "Preferences": self.preferences,
            "PercentageComplete": self.percentage(),
            "InstancesToUpdate": len(self.queue) + (1 if self.current else 0),
        }
        if self.reason:
            item["StatusReason"] = self.reason
        if self.ended_at is not None:
            item["EndTime"] = utc(self.ended_at)
        return item


def _group(key):
    from moto.backends import get_backend

    account, region, name = key
    return get_backend("autoscaling")[account][region].autoscaling_groups.get(name)


def _tick_forever():
    while True:
        time.sleep(TICK_SECONDS)
        now = time.time()
        with STATE.lock:
            for key, refreshes in list(STATE.refreshes.items()):
                group = _group(key)
                for refresh in refreshes:
                    if group is not None and refresh.active():
                        try:
                            refresh.tick(group, now)
                        except Exception as err:  # never let one refresh stop the thread
                            refresh.end("Failed", f"kiln emulator: {type(err).__name__}: {err}", now)


# --- the API ----------------------------------------------------------------------------


def _refreshes(response, group):
    """The group's refreshes, newest first (call with STATE.lock held)."""
    return STATE.refreshes.setdefault((response.current_account, response.region, group), [])


def _flag(value):
    return value is True or str(value).lower() == "true"


def _preferences(raw):
    """The request's preferences, validated as AWS does."""
    prefs = dict(raw or {})
    low = prefs.get("MinHealthyPercentage")
    low = 90 if low is None else int(low)  # AWS's default
    high = prefs.get("MaxHealthyPercentage")
    if high is not None:
        high = int(high)
        if not 100 <= high <= 200 or high < low or high - low > 100:
            raise service_error(
                "ValidationError",
                "MaxHealthyPercentage must be between 100 and 200, at least MinHealthyPercentage "
                "and at most 100 above it",
            )
        prefs["MaxHealthyPercentage"] = high
    prefs["MinHealthyPercentage"] = low
    prefs["SkipMatching"] = _flag(prefs.get("SkipMatching"))
    prefs["AutoRollback"] = _flag(prefs.get("AutoRollback"))
    return prefs


def _plan(group, prefs, desired):
    """The target version and the instances to replace."""
    template = group.ec2_launch_template
    if desired is not None:
        version = str((desired.get("LaunchTemplate") or {}).get("Version") or "$Default")
        if prefs["AutoRollback"] and version in ("$Default", "$Latest"):
            raise service_error(
                "ValidationError",
                "AutoRollback needs a DesiredConfiguration with a specific launch template version, "
                "not $Default or $Latest",
            )
    elif prefs["AutoRollback"]:
        raise service_error("ValidationError", "AutoRollback needs a DesiredConfiguration")
    else:
        version = group.launch_template_version
    if template is None:  # a launch configuration: nothing kiln can compare
        return None, []
    target = _version_number(template, version)
    if _version(template, target) is None:
        raise service_error("ValidationError", f"launch template {template.id} has no version {version}")
    to_replace = [
        s.instance.id
        for s in group.instance_states
        if not prefs["SkipMatching"] or instance_version(group, s.instance) != target
    ]
    return target, to_replace


def start_instance_refresh(self):
    name = self._get_param("AutoScalingGroupName")
    group = self.autoscaling_backend.autoscaling_groups.get(name)
    if group is None:
        raise service_error("ValidationError", f"AutoScalingGroup name not found - AutoScalingGroup '{name}' not found")
    with STATE.lock:
        existing = _refreshes(self, name)
        if any(r.active() for r in existing):
            raise service_error(
                "InstanceRefreshInProgress",
                "An Instance Refresh is already in progress and blocks the execution of this Instance Refresh.",
            )
        prefs = _preferences(self._get_param("Preferences"))
        desired = self._get_param("DesiredConfiguration")
        target, to_replace = _plan(group, prefs, desired)
        request = {"preferences": prefs, "desired": desired, "target": target, "to_replace": to_replace}
        key = (self.current_account, self.region, name)
        refresh = Refresh(key, group, request, STATE.behaviour["refresh"])
        existing.insert(0, refresh)
        STATE.health_sampling = True
    return ActionResult({"InstanceRefreshId": refresh.id})


def describe_instance_refreshes(self):
    ids = self._get_param("InstanceRefreshIds", [])
    with STATE.lock:
        found = [r for r in _refreshes(self, self._get_param("AutoScalingGroupName")) if not ids or r.id in ids]
        items = [r.describe() for r in found[: self._get_int_param("MaxRecords", 50)]]
    return ActionResult({"InstanceRefreshes": items})


def _active(response, name):
    active = [r for r in _refreshes(response, name) if r.active()]
    if not active:
        raise service_error(
            "ActiveInstanceRefreshNotFound",
            f"No in progress or pending Instance Refresh found for Auto Scaling group {name}",
        )
    return active[0]


def cancel_instance_refresh(self):
    name = self._get_param("AutoScalingGroupName")
    with STATE.lock:
        refresh = _active(self, name)
        refresh.end("Cancelled", "Instance refresh cancelled", time.time())
    return ActionResult({"InstanceRefreshId": refresh.id})


def rollback_instance_refresh(self):
    name = self._get_param("AutoScalingGroupName")
    with STATE.lock:
        refresh = _active(self, name)
        if refresh.desired is None:
            raise service_error(
                "IrreversibleInstanceRefresh",
                "The instance refresh cannot be rolled back: it has no DesiredConfiguration",
            )
        group = self.autoscaling_backend.autoscaling_groups[name]
        refresh.roll_back(group, time.time(), "Instance refresh rolled back by RollbackInstanceRefresh")
    return ActionResult({"InstanceRefreshId": refresh.id})
