"""Patches on moto's Elastic Load Balancing v2: target health that changes over time, and a
record of how many healthy targets each target group had.

moto 5.2.5 gaps, and how this module covers each:

- DescribeTargetHealth answers `healthy` for every running target at once. -> a target is
  `initial` (Elb.RegistrationInProgress) for `target_health.healthy_after_seconds` after it
  was registered, then `healthy`, or `unhealthy` with the reason and description of the first
  `target_health.unhealthy` rule whose `image_id` is the instance's image (or whose
  `image_tagged` tag key the instance's image carries). Targets registered before the emulator
  saw them (the seed's) count as registered long ago.
- No history of target health. -> a background thread samples, every `SAMPLE_SECONDS`, the
  number of healthy targets of each target group (once the record was first asked for, or a
  refresh started); GET /_kiln/target-health answers each
  target group's transitions and its seconds without a healthy target since the record was
  cleared (DELETE /_kiln/target-health) and since it first had a healthy target.

- DescribeTargetHealth knows only `initial`, `healthy`, `unhealthy`. -> a `target_health.unhealthy`
  rule may name any of AWS's other states, with their reason codes: `unused`
  (Target.NotInUse: "The target group is not used by any load balancer or the target is in an
  Availability Zone that is not enabled for its load balancer."), `draining`
  (Target.DeregistrationInProgress), `unavailable` (Elb.InternalError, Target.HealthCheckDisabled);
  the reason codes and their states are the ones the ELBv2 API reference lists under
  TargetHealth.Reason. A rule's `after_seconds` makes the target `healthy` first and turn to
  the rule's state that long after it was registered (an instance that turns unhealthy after
  its warm-up, after the refresh already succeeded).

Registration times live in STATE.registered, the record in STATE.health_record.

Imports moto: imported by server.patch_moto(), which then calls patch().
"""

import threading
import time

from moto.core.responses import ActionResult
from moto.elbv2.responses import ELBV2Response

from .state import STATE

SAMPLE_SECONDS = 0.05
ACCOUNT_ID = "123456789012"


def patch():
    ELBV2Response.describe_target_health = describe_target_health
    threading.Thread(target=_sample_forever, name="kiln-target-health", daemon=True).start()


def registered(arn, instance_id, at=None):
    """Notes that `instance_id` was registered in target group `arn` now (or `at`)."""
    with STATE.lock:
        STATE.registered[(arn, instance_id)] = time.time() if at is None else at


def _backends():
    from moto.backends import get_backend

    for region, backend in get_backend("elbv2")[ACCOUNT_ID].items():
        yield region, backend


def _image_tags(ec2, image_id):
    return set(ec2.tags.get(image_id, {}))


def _unhealthy_rule(ec2, instance, rules):
    for rule in rules:
        if rule.get("image_id") == instance.image_id:
            return rule
        if rule.get("image_tagged") and rule["image_tagged"] in _image_tags(ec2, instance.image_id):
            return rule
    return None


def target_state(arn, instance, ec2, now):
    """(state, reason, description) of one registered, running target."""
    behaviour = STATE.behaviour["target_health"]
    since = STATE.registered.get((arn, instance.id), 0)
    rule = _unhealthy_rule(ec2, instance, behaviour["unhealthy"])
    if rule is not None and rule["state"] in ("unused", "unavailable") and not rule["after_seconds"]:
        return rule["state"], rule["reason"], rule["description"]  # never health-checked at all
    if now < since + behaviour["healthy_after_seconds"]:
        return "initial", "Elb.RegistrationInProgress", "Target registration is in progress"
    if rule is not None and now >= since + rule["after_seconds"]:
        return rule["state"], rule["reason"], rule["description"]
    return "healthy", None, None


def _describe_group(backend, arn, now):
    group = backend.target_groups.get(arn)
    if group is None:
        return None
    found = []
    for target in list(group.targets.values()):
        instance = backend.ec2_backend.get_instance_by_id(target["Id"]) if target["Id"].startswith("i-") else None
        if instance is None or instance.state != "running":
            continue
        state, reason, description = target_state(arn, instance, backend.ec2_backend, now)
        health = {"State": state}
        if reason:
            health.update({"Reason": reason, "Description": description})
        found.append(
            {
                "Target": {"Id": target["Id"], "Port": target.get("Port", group.port)},
                "HealthCheckPort": str(group.health_check_port or group.port),
                "TargetHealth": health,
            }
        )
    return found


def describe_target_health(self):
    from .common import service_error

    arn = self._get_param("TargetGroupArn")
    with STATE.lock:
        found = _describe_group(self.elbv2_backend, arn, time.time())
    if found is None:
        raise service_error("TargetGroupNotFound", f"Target groups '{arn}' not found")
    return ActionResult({"TargetHealthDescriptions": found})


def _sample_forever():
    while True:
        time.sleep(SAMPLE_SECONDS)
        if not STATE.health_sampling:  # nobody asked: cost nothing (moto's ELB is not even loaded)
            continue
        try:
            sample(time.time())
        except Exception:  # a reset in the middle of a sample: the next one is fine
            continue


def sample(now):
    """Appends each target group's healthy count when it changed."""
    with STATE.lock:
        for _, backend in _backends():
            for arn in list(backend.target_groups):
                found = _describe_group(backend, arn, now) or []
                healthy = sum(1 for t in found if t["TargetHealth"]["State"] == "healthy")
                record = STATE.health_record.setdefault(arn, [])
                if not record or record[-1][1] != healthy:
                    record.append((now, healthy))


def seconds_without_healthy(record, now):
    """Seconds with 0 healthy targets, from the first sample with a healthy target to now."""
    total, start = 0.0, None
    seen_healthy = False
    for at, healthy in record:
        if healthy and start is not None:
            total += at - start
            start = None
        if healthy:
            seen_healthy = True
        elif seen_healthy and start is None:
            start = at
    if start is not None:
        total += now - start
    return total


def report(method):
    """GET: each target group's record; DELETE: clears the record (each group's present count
    is its first sample again)."""
    with STATE.lock:
        STATE.health_sampling = True
        if method == "DELETE":
            STATE.health_record = {}
        now = time.time()
        return {
            arn: {
                "samples": [[at, healthy] for at, healthy in record],
                "seconds_without_healthy": round(seconds_without_healthy(record, now), 3),
            }
            for arn, record in STATE.health_record.items()
        }
