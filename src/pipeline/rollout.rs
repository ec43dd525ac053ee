//! Moving an auto scaling group onto a launch template version.
//!
//! - [`check_group`], the preflight (before a builder is launched, and before any release): the
//!   group exists and launches from the release's launch template. For `default-then-refresh` it
//!   must follow `$Default` or `$Latest`: a refresh without `DesiredConfiguration` replaces
//!   instances onto the group's own setting, so a group that pins a version number, uses another
//!   template or a launch configuration would "succeed" having rolled out nothing. It warns when
//!   target groups are attached but the group's health check type is not `ELB` (the group would
//!   then call a running but broken instance healthy).
//! - [`start_refresh`]: `StartInstanceRefresh`, with `InstanceRefreshInProgress` refused clearly.
//! - [`follow_verified`]: follows a `verified` refresh (`DesiredConfiguration` = the new version,
//!   min 100 / max 200 %, `AutoRollback`) until it ends, watching the target health of the group's
//!   instances on the new version; it succeeds only when the refresh succeeded and each of them
//!   is `InService` and `healthy` in every target group attached to the group. A failure names
//!   the instance, the target group, and the health reason and description AWS gave.

use std::sync::Mutex;
use std::time::Duration;

use crate::aws::poll::{wait_until, Probe, Wait};
use crate::aws::{
    AutoScalingGroup, Cloud, DesiredVersion, RefreshRequest, RefreshStatus, TargetHealth,
    TemplateVersion,
};
use crate::error::{Error, Result};
use crate::pipeline::release::RefreshOutcome;
use crate::plan::{
    ReleaseSpec, ReleaseStrategy, VERIFIED_MAX_HEALTHY_PERCENTAGE, VERIFIED_MIN_HEALTHY_PERCENTAGE,
};

/// The target state that makes an instance part of the service.
const HEALTHY: &str = "healthy";

/// Checks that a refresh of `group` would roll out `template`'s versions; returns warnings.
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
    if group.target_group_arns.is_empty() || group.health_check_type == "ELB" {
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
        Err(e) if e.aws_code() == Some("InstanceRefreshInProgress") => Err(Error::Refused(format!(
            "auto scaling group {} in {} already has an instance refresh in progress: wait for it to end \
             (aws autoscaling describe-instance-refreshes --auto-scaling-group-name {}) or cancel it, then run kiln again",
            request.group,
            cloud.region(),
            request.group
        ))),
        other => other,
    }
}

/// Follows a `verified` refresh until it ends and the group's instances on `version` are
/// healthy everywhere (see the module doc).
pub async fn follow_verified(
    cloud: &dyn Cloud,
    group: &str,
    refresh_id: &str,
    version: i64,
    timeout: Duration,
    on_state: impl FnMut(&str),
) -> Result<RefreshOutcome> {
    let problem = Mutex::new(None::<String>);
    let wait = Wait {
        phase: "waiting for the verified instance refresh",
        resource: &format!("instance refresh {refresh_id} of {group}"),
        region: cloud.region(),
        timeout,
        hint: "the new instance did not get healthy in the target group in time: look at its target health and the group's activity history",
    };
    wait_until(wait, on_state, || async {
        let Some(refresh) = cloud.refresh(group, refresh_id).await? else {
            return Ok(Probe::Pending("not visible yet".into()));
        };
        let health = GroupHealth::read(cloud, group, version).await?;
        if let Some(p) = health.problem() {
            *problem.lock().expect("not poisoned") = Some(p);
        }
        let state = format!(
            "{} {}%: {}",
            refresh.status,
            refresh.percentage_complete,
            health.summary()
        );
        if !refresh.status.is_finished()
            || (refresh.status == RefreshStatus::Successful && !health.all_healthy())
        {
            return Ok(Probe::Pending(state));
        }
        let mut reason = refresh.status_reason;
        if let Some(p) = problem.lock().expect("not poisoned").as_ref() {
            reason = format!("{reason}; {p}").trim_start_matches("; ").to_owned();
        }
        Ok(Probe::Done(RefreshOutcome {
            auto_scaling_group: group.to_owned(),
            refresh_id: refresh_id.to_owned(),
            status: refresh.status,
            reason,
        }))
    })
    .await
}

/// The target health of a group's instances on one version, in every attached target group.
struct GroupHealth {
    instances: Vec<InstanceHealth>,
}

struct InstanceHealth {
    id: String,
    lifecycle: String,
    /// Per target group ARN, the instance's target health (`None`: not registered yet).
    targets: Vec<(String, Option<TargetHealth>)>,
}

impl GroupHealth {
    async fn read(cloud: &dyn Cloud, group: &str, version: i64) -> Result<GroupHealth> {
        let Some(found) = cloud.auto_scaling_group(group).await? else {
            return Ok(GroupHealth {
                instances: Vec::new(),
            });
        };
        let mut targets = Vec::new();
        for arn in &found.target_group_arns {
            targets.push((arn.clone(), cloud.target_health(arn).await?));
        }
        let wanted = version.to_string();
        let instances = found
            .instances
            .iter()
            .filter(|i| i.template_version.as_deref() == Some(wanted.as_str()))
            .map(|i| {
                let health = targets
                    .iter()
                    .map(|(arn, all)| {
                        let mine = all.iter().find(|t| t.instance_id == i.id).cloned();
                        (arn.clone(), mine)
                    })
                    .collect();
                InstanceHealth {
                    id: i.id.clone(),
                    lifecycle: i.lifecycle_state.clone(),
                    targets: health,
                }
            })
            .collect();
        Ok(GroupHealth { instances })
    }

    fn all_healthy(&self) -> bool {
        !self.instances.is_empty()
            && self.instances.iter().all(|i| {
                i.lifecycle == "InService"
                    && i.targets
                        .iter()
                        .all(|(_, t)| t.as_ref().is_some_and(|t| t.state == HEALTHY))
            })
    }

    /// The first target that is unhealthy, in words: instance, target group, reason, description.
    fn problem(&self) -> Option<String> {
        self.instances.iter().find_map(|i| {
            i.targets.iter().find_map(|(arn, t)| {
                let t = t.as_ref().filter(|t| t.state == "unhealthy")?;
                Some(format!(
                    "instance {} failed the health check of target group {arn}: {} ({}: {})",
                    i.id, t.state, t.reason, t.description
                ))
            })
        })
    }

    fn summary(&self) -> String {
        if self.instances.is_empty() {
            return "no instance on the new version yet".into();
        }
        let parts: Vec<String> = self
            .instances
            .iter()
            .map(|i| {
                let states: Vec<&str> = i
                    .targets
                    .iter()
                    .map(|(_, t)| t.as_ref().map_or("unregistered", |t| t.state.as_str()))
                    .collect();
                format!("{} {} {}", i.id, i.lifecycle, states.join("/"))
            })
            .collect();
        parts.join(", ")
    }
}
