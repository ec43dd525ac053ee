//! Moving an auto scaling group onto a launch template version: the group preflight, the
//! refresh requests of the two strategies, and following a refresh to its end.
//!
//! - [`check_group`], the preflight (before a builder is launched, and before any release): the
//!   group exists and launches from the release's launch template. For `default-then-refresh` it
//!   must follow `$Default` or `$Latest`: a refresh without `DesiredConfiguration` replaces
//!   instances onto the group's own setting, so a group that pins a version number, uses another
//!   template or a launch configuration would "succeed" having rolled out nothing. It warns when
//!   target groups are attached but the group's health check type is not `ELB` (the group would
//!   then call a running but broken instance healthy).
//! - [`start_refresh`]: `StartInstanceRefresh`, with `InstanceRefreshInProgress` refused clearly.
//! - [`follow`]: follows a refresh until it ends, printing a line on every change of the group
//!   (an instance launched, in service, healthy, terminating). With a health gate (the
//!   `verified` strategy: `DesiredConfiguration` = the new version, min 100 / max 200 %,
//!   `AutoRollback`), a `Successful` refresh counts only once each instance on the new version
//!   is `InService` and `healthy` in every target group attached to the group: AWS may report
//!   success before the load balancer has checked the new target. A problem names the instance,
//!   the target group, and the state, reason and description AWS gave.

use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

use crate::aws::poll::{wait_until, Probe, Wait};
use crate::aws::{
    AutoScalingGroup, Cloud, DesiredVersion, Meaning, RefreshRequest, RefreshStatus,
    TemplateVersion,
};
use crate::error::{Error, Result};
use crate::pipeline::release::group::GroupView;
use crate::plan::{
    ReleaseSpec, ReleaseStrategy, VERIFIED_MAX_HEALTHY_PERCENTAGE, VERIFIED_MIN_HEALTHY_PERCENTAGE,
};

/// How an instance refresh ended.
#[derive(Debug, Clone, Serialize)]
pub struct RefreshOutcome {
    pub auto_scaling_group: String,
    pub refresh_id: String,
    pub status: RefreshStatus,
    /// AWS's `StatusReason`, then kiln's own finding (an unhealthy target), if any.
    pub reason: String,
}

impl RefreshOutcome {
    pub fn succeeded(&self) -> bool {
        self.status == RefreshStatus::Successful
    }

    /// What the refresh's end means, in words that claim no more than AWS said.
    pub fn meaning(&self) -> String {
        let id = &self.refresh_id;
        let group = &self.auto_scaling_group;
        let reason = if self.reason.is_empty() {
            "AWS gave no reason".to_owned()
        } else {
            format!("AWS says: {}", self.reason)
        };
        let status = &self.status;
        let what = match status {
            RefreshStatus::Successful => "it succeeded",
            RefreshStatus::RollbackSuccessful => {
                "it failed and AWS rolled it back: the instances it replaced are back on the previous configuration"
            }
            RefreshStatus::RollbackFailed => {
                "it failed and so did its rollback: the group is NOT back on its previous configuration"
            }
            RefreshStatus::Cancelled => {
                "it was cancelled, which is not a rollback: instances it already replaced stay on the new version"
            }
            RefreshStatus::Failed => {
                "it failed and was not rolled back: instances it already replaced stay on the new version"
            }
            _ => "it has not ended",
        };
        format!("instance refresh {id} of {group} ended {status}: {what} ({reason})")
    }
}

/// Checks that a refresh of `group` would roll out `template`'s versions; returns warnings.
/// The subnet a tester launched from `template` takes: none when the template names one, else
/// the first of the group's `VPCZoneIdentifier` (without a group: none, and the recipe names
/// `tester.subnet_id`, as validation requires).
pub async fn tester_subnet(
    cloud: &dyn Cloud,
    group: Option<&str>,
    template: &TemplateVersion,
) -> Result<Option<String>> {
    if template.subnet_id.is_some() {
        return Ok(None);
    }
    let Some(group) = group else {
        return Ok(None);
    };
    Ok(cloud
        .auto_scaling_group(group)
        .await?
        .and_then(|g| g.subnet_ids.into_iter().next()))
}

pub async fn check_group(
    cloud: &dyn Cloud,
    spec: &ReleaseSpec,
    group: &str,
    template: &TemplateVersion,
) -> Result<Vec<String>> {
    let region = cloud.region();
    let found = cloud.auto_scaling_group(group).await?.ok_or_else(|| {
        Error::Refused(format!(
            "auto scaling group {group} does not exist in {region}: fix release.auto_scaling_group, or remove it to release to the launch template only"
        ))
    })?;
    let Some(uses) = &found.launch_template else {
        return Err(Error::Refused(format!(
            "auto scaling group {group} in {region} launches from a launch configuration, not a launch template: a refresh would never use kiln's image; move the group to launch template {}",
            template.template_name
        )));
    };
    if uses.id != template.template_id && uses.name != template.template_name {
        return Err(Error::Refused(format!(
            "auto scaling group {group} in {region} launches from launch template {} ({}), not {} ({}): a refresh would roll out nothing kiln released; fix release.launch_template or release.auto_scaling_group",
            uses.name, uses.id, template.template_name, template.template_id
        )));
    }
    let follows_default = matches!(uses.version.as_str(), "$Default" | "$Latest");
    if spec.strategy == ReleaseStrategy::DefaultThenRefresh && !follows_default {
        return Err(Error::Refused(format!(
            "auto scaling group {group} in {region} pins version {} of {}: a refresh onto the group's own setting would replace nothing and still report success; \
             use release.strategy: verified (it refreshes onto the exact new version), or put the group on $Default",
            uses.version, template.template_name
        )));
    }
    Ok(health_check_warning(&found).into_iter().collect())
}

fn health_check_warning(group: &AutoScalingGroup) -> Option<String> {
    if !group.other_traffic_sources.is_empty() {
        return Some(format!(
            "auto scaling group {} has traffic sources whose health kiln cannot read ({}): the release's health gate uses its target groups and the group's {} health check only",
            group.name,
            group.other_traffic_sources.join(", "),
            group.health_check_type
        ));
    }
    if group.target_group_arns.is_empty() {
        return Some(format!(
            "auto scaling group {} has no target group: the release's health gate is the group's {} health check only (a running instance whose service is down passes it)",
            group.name, group.health_check_type
        ));
    }
    if group.health_check_type == "ELB" {
        return None;
    }
    Some(format!(
        "auto scaling group {} has target groups but health check type {}: it will keep an instance that runs but fails the load balancer's check; \
         set `--health-check-type ELB` (aws autoscaling update-auto-scaling-group)",
        group.name, group.health_check_type
    ))
}

/// The refresh request of the `verified` strategy, onto exactly `desired`.
pub fn verified_request(
    spec: &ReleaseSpec,
    group: &str,
    desired: DesiredVersion,
) -> RefreshRequest {
    RefreshRequest {
        group: group.to_owned(),
        min_healthy_percentage: VERIFIED_MIN_HEALTHY_PERCENTAGE,
        max_healthy_percentage: Some(VERIFIED_MAX_HEALTHY_PERCENTAGE),
        instance_warmup_secs: secs(spec.instance_warmup),
        skip_matching: true,
        desired: Some(desired),
        auto_rollback: true,
        bake_time_secs: spec.bake_time.map(secs),
        alarms: spec.alarms.clone(),
    }
}

/// The refresh request of the `default-then-refresh` strategy: onto the group's own setting.
pub fn default_request(spec: &ReleaseSpec, group: &str) -> RefreshRequest {
    RefreshRequest {
        group: group.to_owned(),
        min_healthy_percentage: spec.min_healthy_percentage,
        max_healthy_percentage: None,
        instance_warmup_secs: secs(spec.instance_warmup),
        skip_matching: true,
        desired: None,
        auto_rollback: false,
        bake_time_secs: None,
        alarms: Vec::new(),
    }
}

fn secs(duration: Duration) -> i32 {
    i32::try_from(duration.as_secs()).unwrap_or(i32::MAX)
}

/// `StartInstanceRefresh`; a refresh already running is refused with what to do.
pub async fn start_refresh(cloud: &dyn Cloud, request: &RefreshRequest) -> Result<String> {
    match cloud.start_refresh(request).await {
        Err(e) if e.meaning() == Some(Meaning::Busy) => Err(Error::Refused(format!(
            "auto scaling group {} in {} already has an instance refresh in progress: wait for it to end \
             (aws autoscaling describe-instance-refreshes --auto-scaling-group-name {}) or cancel it, then run kiln again",
            request.group,
            cloud.region(),
            request.group
        ))),
        other => other,
    }
}

/// Follows refresh `refresh_id` of `group` until it ends (see the module doc); with
/// `gate: Some(version)`, a `Successful` refresh ends the wait only once the group's instances on
/// `version` are in service and healthy. `changed` hears one line per change of the group.
pub async fn follow(
    cloud: &dyn Cloud,
    group: &str,
    refresh_id: &str,
    gate: Option<i64>,
    timeout: Duration,
    on_state: impl FnMut(&str),
    changed: &(dyn Fn(&str) + Sync),
) -> Result<RefreshOutcome> {
    let problem = Mutex::new(None::<String>);
    let last_view = Mutex::new(None::<GroupView>);
    let wait = Wait {
        phase: "waiting for the instance refresh",
        resource: &format!("instance refresh {refresh_id} of {group}"),
        region: cloud.region(),
        timeout,
        hint: "the new instance did not get healthy in time: look at its target health and the group's activity history",
    };
    let followed = wait_until(wait, on_state, || async {
        let Some(refresh) = cloud.refresh(group, refresh_id).await? else {
            return Ok(Probe::Pending("not visible yet".into()));
        };
        let view = GroupView::read(cloud, group).await?;
        let mut state = format!("{} {}%", refresh.status, refresh.percentage_complete);
        if let Some(view) = &view {
            let mut last = last_view.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(before) = last.as_ref() {
                for line in view.changes_since(before) {
                    changed(&line);
                }
            }
            *last = Some(view.clone());
            if let Some(version) = gate {
                if let Some(p) = view.problem(version) {
                    *problem.lock().unwrap_or_else(|p| p.into_inner()) = Some(p);
                }
                state = format!("{state}: {}", view.summary(version));
            }
        }
        if !refresh.status.is_finished()
            || (refresh.status == RefreshStatus::Successful && !gate_open(gate, view.as_ref()))
        {
            return Ok(Probe::Pending(state));
        }
        let mut reason = refresh.status_reason;
        if let Some(p) = problem.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            reason = format!("{reason}; {p}").trim_start_matches("; ").to_owned();
        }
        Ok(Probe::Done(RefreshOutcome {
            auto_scaling_group: group.to_owned(),
            refresh_id: refresh_id.to_owned(),
            status: refresh.status,
            reason,
        }))
    })
    .await;
    with_problem(
        followed,
        problem.into_inner().unwrap_or_else(|p| p.into_inner()),
    )
}

/// A wait that ran out says what was wrong with the new target, as AWS said it.
fn with_problem(
    followed: Result<RefreshOutcome>,
    problem: Option<String>,
) -> Result<RefreshOutcome> {
    match (followed, problem) {
        (
            Err(Error::Timeout {
                phase,
                resource,
                region,
                waited,
                last_state,
                hint,
            }),
            Some(p),
        ) => Err(Error::Timeout {
            phase,
            resource,
            region,
            waited,
            last_state: format!("{last_state}; {p}"),
            hint,
        }),
        (followed, _) => followed,
    }
}

/// Whether the health gate lets a `Successful` refresh end the wait: every instance on `gate`'s
/// version healthy; a group scaled to zero has no instance to verify (the refresh's own end
/// decides); without a gate, always.
fn gate_open(gate: Option<i64>, view: Option<&GroupView>) -> bool {
    match (gate, view) {
        (None, _) => true,
        (Some(version), Some(view)) => view.healthy_on(version) || view.desired_capacity == 0,
        (Some(_), None) => false,
    }
}
