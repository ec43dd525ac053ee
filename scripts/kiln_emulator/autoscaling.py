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

- DescribeInstanceRefreshes leaves out DesiredConfiguration. -> returned as the request gave it.
- Launch-first or terminate-first. RefreshPreferences.MaxHealthyPercentage (API reference):
  "Explicitly setting MaxHealthyPercentage to 100 is not equivalent to omitting it. When
  MaxHealthyPercentage is explicitly set and it is mathematically impossible to replace
  instances while honoring both MinHealthyPercentage and MaxHealthyPercentage bounds
  simultaneously, Auto Scaling launches a new instance before terminating an old one
  (temporarily exceeding the desired capacity). When MaxHealthyPercentage is omitted, Auto
  Scaling terminates an instance and launches its replacement simultaneously." -> omitted:
  terminate first; set: launch first when the bound above the desired capacity leaves room for
  one instance or neither bound does, terminate first when only the bound below does.
- A launch from a version that no longer exists (DeleteLaunchTemplateVersions after the refresh
  started, or a group on a deleted version) -> the refresh fails with EC2's error for it, the
  EC2 API's error code list: "InvalidLaunchTemplateId.VersionNotFound: The specified launch
  template version does not exist." (AWS's exact wording of the scaling activity was not
  found; the StatusReason is the emulator's, naming that code); AutoRollback then rolls back.
- AttachTrafficSources, DetachTrafficSources, DescribeTrafficSources are not implemented (500).
  -> implemented for `elbv2` target groups: an attached target group gets the group's new
  instances and counts in the refresh's health. DescribeLoadBalancerTargetGroups (API
  reference): "You can use this operation to describe target groups that were attached by
  using AttachLoadBalancerTargetGroups, but not for target groups that were attached by using
  AttachTrafficSources." Such a target group is shown in the group's TrafficSources and by
  DescribeTrafficSources (state InService), not in TargetGroupARNs (AWS does not say; the
  emulator takes the stricter reading).
- `refresh.success_before_healthy` (issue 15): the refresh counts a replacement done as soon as
  it is launched, so it reports Successful while the new target is still `initial`, or, with
  `target_health.register_after_seconds`, not registered in its target groups yet.

AWS rules behind `refresh_rules` (POST /_kiln/behaviour {"refresh_rules": {...}}):
`irreversible` is on by default (kiln pins a group on $Default/$Latest to a number before a
verified refresh, src/pipeline/release/pin.rs); `max_size`, `elb_grace_period` and
`instance_warmup` are off by default (the emulator's earlier behaviour) and switched on by the tests that exercise them:

- `irreversible`. RollbackInstanceRefresh (API reference): "A rollback is not supported in the
  following situations: There is no desired configuration specified for the instance refresh.
  The Auto Scaling group has a launch template that uses an AWS Systems Manager parameter
  instead of an AMI ID for the ImageId property. The Auto Scaling group uses the launch
  template's $Latest or $Default version." and IrreversibleInstanceRefresh: "The request failed
  because a desired configuration was not found or an incompatible launch template (uses a
  Systems Manager parameter instead of an AMI ID) or launch template version ($Latest or
  $Default) is present on the Auto Scaling group." The same list is in RefreshPreferences
  .AutoRollback, and StartInstanceRefresh's documented errors do not include
  IrreversibleInstanceRefresh. -> StartInstanceRefresh with AutoRollback on such a group
  answers ValidationError (400) at start (the message is the emulator's: AWS's text for this
  case was not found); RollbackInstanceRefresh of a refresh started on such a group answers
  IrreversibleInstanceRefresh. (AutoRollback without a DesiredConfiguration is refused always,
  with the message AWS gives, as reported in terraform-provider-aws issue 29830.)
- `max_size`: no AWS sentence found that lets a refresh exceed the group's MaxSize, nor one
  that forbids it (the instance maintenance policy guide: "The maximum healthy percentage is
  the percentage of its desired capacity that your Auto Scaling group can increase to when
  replacing instances."; only rebalancing "can exceed your group's size limits by up to 10
  percent of its maximum capacity"). Off: launch first past MaxSize (the emulator's earlier
  behaviour). On: never above MaxSize, so a group at its maximum terminates first.
- `elb_grace_period`. Set the health check grace period (user guide): "When an Amazon EC2 Auto
  Scaling health check determines that an InService instance is unhealthy, it replaces it with
  a new instance. The health check grace period specifies the minimum amount of time (in
  seconds) to keep a new instance in service before terminating it if it's found to be
  unhealthy." -> a replacement whose target is `unhealthy` does not fail the refresh: before
  the group's HealthCheckGracePeriod it is waited for; after it, with HealthCheckType ELB, the
  group terminates it and launches another; the refresh fails (or rolls back) only after
  `refresh.replacements_before_failure` (default 2) such replacements (AWS documents no
  number). With HealthCheckType EC2 the group never looks at target health: the replacement is
  done once running, and the refresh succeeds with a target that is `unhealthy` or `unused`.
  Off: the first `unhealthy` report fails the refresh at once, whatever the health check type.

- `instance_warmup`. RefreshPreferences.InstanceWarmup (API reference): "A time period, in
  seconds, during which an instance refresh waits before moving on to replacing the next
  instance after a new instance enters the InService state." -> a replacement counts done, and
  the last one ends the refresh Successful, only InstanceWarmup seconds after the group first
  saw it healthy (the old instance of a launch-first replacement is terminated at that first
  moment). A target can turn unhealthy within that time: with HealthCheckType EC2 the refresh
  still succeeds, on an instance the load balancer no longer calls healthy. Off: done at once
  (kiln's default warm-up is 60 s; the tests that need it switch it on).

Not modelled: bake time and alarms (accepted), the target group's
deregistration delay (a terminated instance leaves its target groups at once), checkpoints,
ProgressDetails and RollbackDetails, the group replacing an unhealthy instance outside a
refresh.

The refreshes live in STATE.refreshes; a background thread advances them every TICK_SECONDS.

Imports moto: imported by server.patch_moto(), which then calls patch().
"""

import threading
import time
import uuid

from moto.autoscaling.models import FakeAutoScalingGroup, InstanceState
from moto.autoscaling.responses import AutoScalingResponse as ASG
from moto.core.responses import ActionResult

from . import elbv2
from .common import service_error, utc
from .state import STATE

TICK_SECONDS = 0.05
ACTIVE = ("Pending", "InProgress", "RollbackInProgress")


def patch():
    ASG.attach_traffic_sources = attach_traffic_sources
    ASG.detach_traffic_sources = detach_traffic_sources
    ASG.describe_traffic_sources = describe_traffic_sources
    FakeAutoScalingGroup.traffic_sources = property(lambda self: list(STATE.traffic_sources.get(_key(self), [])))
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


def _rules():
    return STATE.behaviour["refresh_rules"]


class LaunchFailed(Exception):
    """A group instance could not be launched (the reason is AWS's error for it)."""


def _irreversible(group):
    """Why a rollback of a refresh of `group` (as it is now) is not supported, or None."""
    template = group.ec2_launch_template
    if template is None:
        return "the group uses a launch configuration"
    version = str(group.launch_template_version or "$Default")
    if version in ("$Default", "$Latest"):
        return f"the group uses the launch template's {version} version"
    found = _version(template, _version_number(template, version))
    if found is not None and str(found.data.get("ImageId", "")).startswith("resolve:ssm:"):
        return "the group's launch template uses a Systems Manager parameter for ImageId"
    return None


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


def _key(group):
    return (group.autoscaling_backend.account_id, group.autoscaling_backend.region_name, group.name)


def traffic_source_arns(group):
    """The elbv2 target groups attached to `group` by AttachTrafficSources."""
    sources = STATE.traffic_sources.get(_key(group), [])
    return [t["Identifier"] for t in sources if t.get("Type", "elbv2") == "elbv2"]


def _target_groups(group):
    backend = group.autoscaling_backend.elbv2_backend
    arns = list(group.target_group_arns) + [a for a in traffic_source_arns(group) if a not in group.target_group_arns]
    return [backend.target_groups[arn] for arn in arns if arn in backend.target_groups]


def launch(group, number):
    """Launches one instance of `group` from version `number`; registers it in the target groups
    (after `target_health.register_after_seconds`). LaunchFailed when the version is gone."""
    template = group.ec2_launch_template
    if template is not None and _version(template, number) is None:
        raise LaunchFailed(
            f"Launching a new EC2 instance failed: InvalidLaunchTemplateId.VersionNotFound: "
            f"The specified launch template version does not exist. (version {number} of {template.id})"
        )
    saved = group.launch_template_version
    group.launch_template_version = str(number)
    before = {s.instance.id for s in group.instance_states}
    try:
        group.replace_autoscaling_group_instances(1, group.get_propagated_tags())
    finally:
        group.launch_template_version = saved
    new = next(s.instance for s in group.instance_states if s.instance.id not in before)
    STATE.instance_versions[new.id] = number
    delay = STATE.behaviour["target_health"]["register_after_seconds"]
    for target_group in _target_groups(group):
        if delay:
            STATE.pending_registrations.append((time.time() + delay, target_group.arn, new.id))
        else:
            register(target_group, new.id)
    return new.id


def register(target_group, instance_id, at=None):
    target_group.targets[instance_id] = {"Id": instance_id, "Port": target_group.port}
    elbv2.registered(target_group.arn, instance_id, at)


def _register_due(now):
    """Registers the targets whose registration was held back (register_after_seconds)."""
    from moto.backends import get_backend

    due = [p for p in STATE.pending_registrations if p[0] <= now]
    if not due:
        return
    STATE.pending_registrations = [p for p in STATE.pending_registrations if p[0] > now]
    for at, arn, instance_id in due:
        for _, backend in get_backend("elbv2")[elbv2.ACCOUNT_ID].items():
            target_group = backend.target_groups.get(arn)
            instance = backend.ec2_backend.get_instance_by_id(instance_id) if target_group else None
            if target_group is not None and instance is not None and instance.state != "terminated":
                register(target_group, instance_id, at)


def terminate(group, instance_id):
    """Takes an instance out of its target groups and the group, and terminates it (the record of
    healthy targets sees the change at once)."""
    for target_group in _target_groups(group):
        target_group.targets.pop(instance_id, None)
    STATE.pending_registrations = [p for p in STATE.pending_registrations if p[2] != instance_id]
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
        self.irreversible = _irreversible(group)  # why a rollback is not supported, or None
        self.scripted = outcome
        self.started_at = time.time()
        self.healthy_since = None  # when the group first saw the current replacement healthy
        self.status = "Pending"
        self.reason = "Waiting to start"
        self.ended_at = None
        self.queue = request["to_replace"]
        self.total = len(self.queue)
        self.current = None  # (old instance id, new instance id)
        self.launched_at = 0.0  # when the current replacement was launched
        self.replaced = 0  # replacements the group terminated as unhealthy (elb_grace_period)
        self.launched, self.terminated = [], []

    def active(self):
        return self.status in ACTIVE

    def launches_first(self, group):
        """Whether the next replacement is launched before the old instance is terminated (see
        the module docstring: MaxHealthyPercentage omitted or set, and `refresh_rules.max_size`)."""
        high = self.preferences.get("MaxHealthyPercentage")
        if high is None:
            return False
        desired = int(group.desired_capacity or 0)
        above = desired * int(high) // 100 - desired
        below = desired - -(-desired * int(self.preferences["MinHealthyPercentage"]) // 100)
        first = above >= 1 or below < 1
        if first and _rules()["max_size"] and len(group.instance_states) >= int(group.max_size):
            return False
        return first

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
        try:
            if self.current is None:
                self._next(group, now)
            else:
                self._watch(group, now)
        except LaunchFailed as err:
            self.fail(group, now, f"Instance refresh failed: {err}")

    def fail(self, group, now, why):
        if self.preferences.get("AutoRollback"):
            self.roll_back(group, now, why)
        else:
            self.end("Failed", why, now)

    def _launch(self, group, now):
        new = launch(group, self.target)
        self.launched.append(new)
        self.launched_at = now
        return new

    def _next(self, group, now):
        if not self.queue:
            if self.desired is not None:
                group.launch_template_version = str(self.target)
                group.provided_launch_template_version = str(self.target)
            self.end("Successful", "", now)
            return
        old = self.queue[0]
        first = self.launches_first(group)
        if not first:
            terminate(group, old)
            self.terminated.append(old)
        self.queue.pop(0)
        self.current = (old, None, first)
        self.current = (old, self._launch(group, now), first)

    def _watch(self, group, now):
        old, new, first = self.current
        if self.scripted.get("success_before_healthy"):
            state = "healthy"  # issue 15: done once launched, whatever its target says
        else:
            state, reason, description, arn = health(group, new, now)
            state = self._as_group_sees(group, state, now)
        if state == "unhealthy":
            why = (
                f"Instance refresh failed: instance {new} failed the health check of target group {arn}: "
                f"{reason}: {description}"
            )
            if _rules()["elb_grace_period"] and self.replaced < self.scripted["replacements_before_failure"]:
                self.replaced += 1  # the group replaces it; the refresh goes on
                self.healthy_since = None
                terminate(group, new)
                self.current = (old, self._launch(group, now), first)
                return
            self.fail(group, now, why)
            return
        if state != "healthy":
            return
        if first and old not in self.terminated:
            elbv2.sample(now)  # the moment both are healthy is in the record, however short
            terminate(group, old)
            self.terminated.append(old)
        if _rules()["instance_warmup"]:
            if self.healthy_since is None:
                self.healthy_since = now
            if now < self.healthy_since + float(self.preferences.get("InstanceWarmup") or 0):
                return
        self.healthy_since = None
        self.current = None

    def _as_group_sees(self, group, state, now):
        """The target state as it counts for the refresh (`refresh_rules.elb_grace_period`)."""
        if not _rules()["elb_grace_period"]:
            return state
        if str(group.health_check_type).upper() != "ELB":
            return "healthy"  # EC2 health checks: a running instance is healthy
        if state == "unhealthy" and now < self.launched_at + float(group.health_check_grace_period or 0):
            return "initial"  # within the grace period the group does not act on it
        if state in ("unused", "draining", "unavailable"):
            return "healthy"  # not reported unhealthy: the group keeps it
        return state

    def roll_back(self, group, now, why):
        """Terminates what the refresh launched and relaunches what it terminated."""
        for instance_id in self.launched:
            terminate(group, instance_id)
        template = group.ec2_launch_template
        group.launch_template_version = self.previous
        try:
            for _ in self.terminated:
                launch(group, _version_number(template, self.previous) if template else self.target)
        except LaunchFailed as err:
            self.end("RollbackFailed", f"{why}; rollback failed: {err}", now)
            return
        self.end("RollbackSuccessful", why, now)

    def percentage(self):
        if self.status == "Successful" or self.total == 0:
            return 100 if self.status == "Successful" else 0
        done = self.total - len(self.queue) - (1 if self.current else 0)
        done = max(done, 0)
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
        if self.desired is not None:
            item["DesiredConfiguration"] = self.desired
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
            try:
                _register_due(now)
            except Exception:  # a reset in the middle: nothing left to register
                STATE.pending_registrations = []
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
        raise service_error(
            "ValidationError",
            "The request isn't valid. The AutoRollback parameter cannot be set to true when the "
            "DesiredConfiguration parameter is empty. Set AutoRollback to false or specify a desired "
            "configuration and try again.",
        )
    else:
        version = group.launch_template_version
    why = _irreversible(group)
    if prefs["AutoRollback"] and why and _rules()["irreversible"]:
        raise service_error(
            "ValidationError",
            f"AutoRollback is not supported for Auto Scaling group {group.name}: {why} "
            "(kiln emulator wording; AWS: a rollback is not supported when the group uses $Latest or $Default "
            "or a launch template with a Systems Manager parameter for ImageId)",
        )
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
        if refresh.desired is None or (refresh.irreversible and _rules()["irreversible"]):
            raise service_error(
                "IrreversibleInstanceRefresh",
                "The instance refresh cannot be rolled back: "
                + (refresh.irreversible if refresh.desired is not None else "it has no DesiredConfiguration"),
            )
        group = self.autoscaling_backend.autoscaling_groups[name]
        refresh.roll_back(group, time.time(), "Instance refresh rolled back by RollbackInstanceRefresh")
    return ActionResult({"InstanceRefreshId": refresh.id})


# --- traffic sources ----------------------------------------------------------------------


def _named_group(response):
    name = response._get_param("AutoScalingGroupName")
    group = response.autoscaling_backend.autoscaling_groups.get(name)
    if group is None:
        raise service_error("ValidationError", f"AutoScalingGroup name not found - AutoScalingGroup '{name}' not found")
    return group


def attach_traffic_sources(self):
    group = _named_group(self)
    with STATE.lock:
        sources = STATE.traffic_sources.setdefault(_key(group), [])
        for source in self._get_param("TrafficSources", []):
            item = {"Identifier": source["Identifier"], "Type": source.get("Type") or "elbv2"}
            if item not in sources:
                sources.append(item)
                target_group = group.autoscaling_backend.elbv2_backend.target_groups.get(item["Identifier"])
                if item["Type"] == "elbv2" and target_group is not None:
                    for state in group.instance_states:
                        register(target_group, state.instance.id, at=0)
    return ActionResult({})


def detach_traffic_sources(self):
    group = _named_group(self)
    with STATE.lock:
        gone = [{"Identifier": s["Identifier"], "Type": s.get("Type") or "elbv2"} for s in self._get_param("TrafficSources", [])]
        STATE.traffic_sources[_key(group)] = [s for s in STATE.traffic_sources.get(_key(group), []) if s not in gone]
        for item in gone:
            target_group = group.autoscaling_backend.elbv2_backend.target_groups.get(item["Identifier"])
            if target_group is not None and item["Identifier"] not in group.target_group_arns:
                for state in group.instance_states:
                    target_group.targets.pop(state.instance.id, None)
    return ActionResult({})


def describe_traffic_sources(self):
    group = _named_group(self)
    wanted = self._get_param("TrafficSourceType")
    with STATE.lock:
        sources = [s for s in STATE.traffic_sources.get(_key(group), []) if not wanted or s["Type"] == wanted]
    items = [
        {"TrafficSource": s["Identifier"], "State": "InService", "Identifier": s["Identifier"], "Type": s["Type"]}
        for s in sources
    ]
    return ActionResult({"TrafficSources": items})
