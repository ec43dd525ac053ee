"""Patches on moto's Auto Scaling: instance refreshes.

moto 5.2.5 gaps, and how this module covers each:

- StartInstanceRefresh, DescribeInstanceRefreshes and CancelInstanceRefresh are not
  implemented (500). -> implemented: Pending for the first fifth of `refresh.seconds`,
  then InProgress with PercentageComplete rising, then the configured final status;
  one active refresh per group (InstanceRefreshInProgress otherwise); cancelling gives
  Cancelled. The group's instances are not actually replaced.

The refreshes live in STATE.refreshes (a reset forgets them).

Imports moto: imported by server.patch_moto(), which then calls patch().
"""

import time
import uuid

from moto.autoscaling.responses import AutoScalingResponse as ASG
from moto.core.responses import ActionResult

from .common import service_error, utc
from .state import STATE


def patch():
    ASG.start_instance_refresh = start_instance_refresh
    ASG.describe_instance_refreshes = describe_instance_refreshes
    ASG.cancel_instance_refresh = cancel_instance_refresh


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
            "StartTime": utc(self.started_at),
            "Preferences": self.preferences,
        }
        item.update(self._status_fields(status, now))
        return item

    def _status_fields(self, status, now):
        """PercentageComplete, InstancesToUpdate, and EndTime / StatusReason where the status has them."""
        if status == "Pending":
            return {"PercentageComplete": 0, "InstancesToUpdate": self.desired, "StatusReason": "Waiting to start"}
        if status == "InProgress":
            done = self.progress(now)
            return {"PercentageComplete": done, "InstancesToUpdate": round(self.desired * (100 - done) / 100)}
        ended = self.started_at + self.seconds
        if status == "Successful":
            return {"PercentageComplete": 100, "InstancesToUpdate": 0, "EndTime": utc(ended)}
        if status == "Failed":
            return {
                "PercentageComplete": 0,
                "InstancesToUpdate": self.desired,
                "EndTime": utc(ended),
                "StatusReason": (
                    "Instance refresh failed: a replacement instance failed its health checks (kiln emulator)"
                ),
            }
        # Cancelled, by CancelInstanceRefresh or by the configured outcome
        if self.cancelled_at is not None:
            ended = self.cancelled_at
        return {
            "PercentageComplete": self.progress(ended) if self.cancelled_at is not None else 0,
            "InstancesToUpdate": self.desired,
            "EndTime": utc(ended),
            "StatusReason": "Instance refresh cancelled",
        }


def _refreshes(response, group):
    """The group's refreshes, newest first (call with STATE.lock held)."""
    return STATE.refreshes.setdefault((response.current_account, response.region, group), [])


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
        preferences = self._get_param("Preferences") or {}
        refresh = Refresh(name, group.desired_capacity or 0, preferences, STATE.behaviour["refresh"])
        existing.insert(0, refresh)
    return ActionResult({"InstanceRefreshId": refresh.id})


def describe_instance_refreshes(self):
    ids = self._get_param("InstanceRefreshIds", [])
    with STATE.lock:
        found = [r for r in _refreshes(self, self._get_param("AutoScalingGroupName")) if not ids or r.id in ids]
        items = [r.describe() for r in found[: self._get_int_param("MaxRecords", 50)]]
    return ActionResult({"InstanceRefreshes": items})


def cancel_instance_refresh(self):
    name = self._get_param("AutoScalingGroupName")
    with STATE.lock:
        active = [r for r in _refreshes(self, name) if r.active()]
        if not active:
            raise service_error(
                "ActiveInstanceRefreshNotFound",
                f"No in progress or pending Instance Refresh found for Auto Scaling group {name}",
            )
        active[0].cancelled_at = time.time()
    return ActionResult({"InstanceRefreshId": active[0].id})
