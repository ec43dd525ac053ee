//! Auto Scaling groups, instance refreshes and target health in the fake.
//!
//! The minimal semantics the release pipeline needs: a group launches from one template at a
//! version (`$Default`, `$Latest` or a number) and holds members, each launched from a version
//! number. A refresh replaces the members that do not match its target version (all of them
//! without `SkipMatching`) with new members. While it is in progress the replacements are in the
//! group beside the old members when `MaxHealthyPercentage` is above 100 (launch before
//! terminate), instead of them otherwise. The replacements' targets are `initial` for the first
//! half of the refresh, then `healthy`, or `unhealthy` with a scripted reason; an unhealthy
//! replacement fails the refresh (`RollbackSuccessful` with `AutoRollback`). A successful refresh
//! with a desired configuration leaves the group on that version number, as AWS does.

use std::time::Duration;

use tokio::time::Instant;

use super::world::{refuse, Answer, Here, Region, World};
use super::SEED_SUBNET;
use crate::aws::model::{
    AutoScalingGroup, GroupInstance, GroupTemplate, Refresh, RefreshRequest, RefreshStatus,
    TargetHealth,
};

/// A target's health state and, when not healthy, why.
#[derive(Debug, Clone, PartialEq)]
pub struct Unhealthy {
    pub reason: String,
    pub description: String,
}

pub(super) struct GroupMember {
    pub id: String,
    pub version: i64,
    /// Until then its targets are `initial` (a refresh's replacement whose health lags).
    pub healthy_from: Option<Instant>,
}

pub(super) struct GroupRecord {
    pub template_name: String,
    pub version: String,
    pub health_check_type: String,
    pub target_group_arns: Vec<String>,
    /// Traffic sources kiln cannot read the health of, as `TYPE IDENTIFIER`.
    pub other_traffic_sources: Vec<String>,
    pub members: Vec<GroupMember>,
    /// `MaxSize` once set (`None`: as many as its members).
    pub max_size: Option<i32>,
    /// Newest first.
    pub refreshes: Vec<RefreshRecord>,
}

pub(super) struct RefreshRecord {
    pub id: String,
    pub request: RefreshRequest,
    pub started: Instant,
    pub takes: Duration,
    pub outcome: RefreshStatus,
    pub reason: String,
    /// The version the refresh replaces members onto.
    pub target: i64,
    /// The members it launches, and whether their targets are unhealthy.
    pub replacements: Vec<String>,
    pub unhealthy: Option<Unhealthy>,
    /// When `RollbackInstanceRefresh` stopped it.
    pub rolled_back: Option<Instant>,
    /// A successful refresh's members have become the group's.
    pub applied: bool,
    /// How long after the refresh succeeds its replacements' targets stay `initial`.
    pub health_lag: Duration,
}

impl RefreshRecord {
    fn ended(&self, now: Instant) -> bool {
        self.rolled_back.is_some() || now >= self.started + self.takes
    }

    /// Pending for the first fifth of the refresh, then InProgress, then the outcome.
    pub fn view(&self, now: Instant) -> Refresh {
        let elapsed = now.saturating_duration_since(self.started);
        let (status, reason, percentage) = if self.rolled_back.is_some() {
            let reason = "Instance refresh rolled back by RollbackInstanceRefresh";
            (RefreshStatus::RollbackSuccessful, reason.to_owned(), 0)
        } else if elapsed >= self.takes {
            self.final_status()
        } else if elapsed < self.takes / 5 {
            (RefreshStatus::Pending, "Waiting to start".to_owned(), 0)
        } else {
            let done = elapsed.as_millis() * 100 / self.takes.as_millis().max(1);
            (
                RefreshStatus::InProgress,
                String::new(),
                done.min(99) as i32,
            )
        };
        Refresh {
            id: self.id.clone(),
            status,
            status_reason: reason,
            percentage_complete: percentage,
            desired: self.request.desired.clone(),
        }
    }

    fn final_status(&self) -> (RefreshStatus, String, i32) {
        if self.unhealthy.is_some() && !self.replacements.is_empty() {
            let reason =
                "Instance refresh failed: a replacement instance failed its ELB health checks";
            let status = if self.request.auto_rollback {
                RefreshStatus::RollbackSuccessful
            } else {
                RefreshStatus::Failed
            };
            return (status, reason.to_owned(), 0);
        }
        let done = if self.outcome == RefreshStatus::Successful {
            100
        } else {
            0
        };
        (self.outcome.clone(), self.reason.clone(), done)
    }

    /// Launch the replacement before terminating the member it replaces.
    fn launches_first(&self) -> bool {
        self.request.max_healthy_percentage.unwrap_or(100) > 100
    }

    /// A replacement's target health `elapsed` into the refresh.
    fn replacement_health(&self, now: Instant) -> (&'static str, Option<&Unhealthy>) {
        let elapsed = now.saturating_duration_since(self.started);
        match &self.unhealthy {
            _ if elapsed < self.takes / 2 || !self.health_lag.is_zero() => ("initial", None),
            Some(unhealthy) => ("unhealthy", Some(unhealthy)),
            None => ("healthy", None),
        }
    }
}

impl GroupRecord {
    /// The seed's layout: `$Default` of `template_name`, ELB health checks, one target group.
    pub fn new(template_name: &str, target_group_arn: String) -> GroupRecord {
        GroupRecord {
            template_name: template_name.to_owned(),
            version: "$Default".into(),
            health_check_type: "ELB".into(),
            target_group_arns: vec![target_group_arn],
            other_traffic_sources: Vec::new(),
            members: Vec::new(),
            max_size: None,
            refreshes: Vec::new(),
        }
    }

    /// Applies refreshes that ended successfully: their replacements become the members.
    fn settle(&mut self, now: Instant) {
        let (mut members, mut version) = (None, None);
        for refresh in self.refreshes.iter_mut().rev() {
            let done = refresh.ended(now) && refresh.view(now).status == RefreshStatus::Successful;
            if refresh.applied || !done {
                continue;
            }
            refresh.applied = true;
            let replaced: Vec<GroupMember> = refresh
                .replacements
                .iter()
                .map(|id| GroupMember {
                    id: id.clone(),
                    version: refresh.target,
                    healthy_from: Some(refresh.started + refresh.takes + refresh.health_lag),
                })
                .collect();
            if !replaced.is_empty() {
                members = Some(replaced);
            }
            if refresh.request.desired.is_some() {
                version = Some(refresh.target.to_string());
            }
        }
        if let Some(members) = members {
            self.members = members;
        }
        if let Some(version) = version {
            self.version = version;
        }
    }

    fn active(&self, now: Instant) -> Option<&RefreshRecord> {
        self.refreshes.first().filter(|r| !r.ended(now))
    }

    /// The members now, each with its target state and reason.
    fn current(&self, now: Instant) -> Vec<(String, i64, &'static str, Option<&Unhealthy>)> {
        let mut current: Vec<_> = self
            .members
            .iter()
            .map(|m| {
                let lagging = m.healthy_from.is_some_and(|from| now < from);
                let state = if lagging { "initial" } else { "healthy" };
                (m.id.clone(), m.version, state, None)
            })
            .collect();
        if let Some(refresh) = self.active(now) {
            if !refresh.launches_first() {
                current.retain(|(_, version, _, _)| *version == refresh.target);
            }
            let (state, why) = refresh.replacement_health(now);
            for id in &refresh.replacements {
                current.push((id.clone(), refresh.target, state, why));
            }
        }
        current
    }
}

impl World {
    /// AttachTrafficSources (see [`super::Fake::attach_traffic_source`]).
    pub fn attach_traffic_source(
        &mut self,
        here: &Here,
        group: &str,
        kind: &str,
        identifier: &str,
    ) {
        let Ok(group) = self.group_mut(here, group) else {
            return;
        };
        if kind != "elbv2" {
            group
                .other_traffic_sources
                .push(format!("{kind} {identifier}"));
        } else if !group.target_group_arns.iter().any(|arn| arn == identifier) {
            group.target_group_arns.push(identifier.to_owned());
        }
    }

    pub(super) fn group_mut(&mut self, here: &Here, name: &str) -> Answer<&mut GroupRecord> {
        match self.region(&here.region).groups.get_mut(name) {
            Some(group) => {
                group.settle(here.now);
                Ok(group)
            }
            None => refuse(
                "ValidationError",
                format!("AutoScalingGroup name not found - AutoScalingGroup '{name}' not found"),
            ),
        }
    }

    pub fn start_refresh(&mut self, here: &Here, request: &RefreshRequest) -> Answer<String> {
        let (outcome, reason) = self.refresh_outcome.clone();
        let unhealthy = self.unhealthy_targets.clone();
        let takes = self.timings.refresh;
        let health_lag = self.health_lag;
        let id = self.new_uuid();
        let group = self.group_mut(here, &request.group)?;
        if group.active(here.now).is_some() {
            return refuse(
                "InstanceRefreshInProgress",
                "An Instance Refresh is already in progress and blocks the execution of this Instance Refresh.",
            );
        }
        let template_name = group.template_name.clone();
        let group_version = group.version.clone();
        // RollbackInstanceRefresh (API reference): "A rollback is not supported in the following
        // situations: There is no desired configuration specified for the instance refresh. [...]
        // The Auto Scaling group uses the launch template's $Latest or $Default version." The
        // emulator refuses AutoRollback on such a group at start, as here.
        if request.auto_rollback && request.desired.is_none() {
            return refuse(
                "ValidationError",
                "The request isn't valid. The AutoRollback parameter cannot be set to true when the DesiredConfiguration parameter is empty.",
            );
        }
        if request.auto_rollback && matches!(group_version.as_str(), "$Default" | "$Latest") {
            return refuse(
                "ValidationError",
                format!("AutoRollback is not supported for Auto Scaling group {}: it uses the launch template's {group_version} version", request.group),
            );
        }
        let target = match &request.desired {
            Some(desired) => desired.version,
            None => {
                let region = self.region(&here.region);
                resolve_version(region, &template_name, &group_version).unwrap_or(0)
            }
        };
        let stale = {
            let group = self.group_mut(here, &request.group)?;
            group
                .members
                .iter()
                .filter(|m| !request.skip_matching || m.version != target)
                .count()
        };
        let replacements = (0..stale).map(|_| self.new_id("i")).collect();
        let group = self.group_mut(here, &request.group)?;
        group.refreshes.insert(
            0,
            RefreshRecord {
                id: id.clone(),
                request: request.clone(),
                started: here.now,
                takes,
                outcome,
                reason,
                target,
                replacements,
                unhealthy,
                rolled_back: None,
                applied: false,
                health_lag,
            },
        );
        Ok(id)
    }

    pub fn refresh(&mut self, here: &Here, group: &str, id: &str) -> Answer<Option<Refresh>> {
        let Some(record) = self.region(&here.region).groups.get_mut(group) else {
            return Ok(None);
        };
        record.settle(here.now);
        Ok(record
            .refreshes
            .iter()
            .find(|r| r.id == id)
            .map(|r| r.view(here.now)))
    }

    pub fn active_refresh(&mut self, here: &Here, group: &str) -> Answer<Option<Refresh>> {
        let now = here.now;
        let record = self.group_mut(here, group)?;
        Ok(record.active(now).map(|r| r.view(now)))
    }

    pub fn auto_scaling_groups(&mut self, here: &Here) -> Answer<Vec<AutoScalingGroup>> {
        let names: Vec<String> = self.region(&here.region).groups.keys().cloned().collect();
        let mut all = Vec::new();
        for name in names {
            all.extend(self.auto_scaling_group(here, &name)?);
        }
        Ok(all)
    }

    pub fn set_group_launch_template(
        &mut self,
        here: &Here,
        name: &str,
        template_id: &str,
        version: &str,
    ) -> Answer<()> {
        let Some(template) = self
            .region(&here.region)
            .templates
            .values()
            .find(|t| t.id == template_id)
            .map(|t| t.name.clone())
        else {
            return refuse(
                "ValidationError",
                format!("The specified launch template, with template ID {template_id}, does not exist."),
            );
        };
        let group = self.group_mut(here, name)?;
        group.template_name = template;
        group.version = version.to_owned();
        Ok(())
    }

    pub fn rollback_refresh(&mut self, here: &Here, name: &str) -> Answer<()> {
        let now = here.now;
        let group = self.group_mut(here, name)?;
        match group.refreshes.first_mut().filter(|r| !r.ended(now)) {
            Some(refresh) => {
                refresh.rolled_back = Some(now);
                Ok(())
            }
            None => refuse(
                "ActiveInstanceRefreshNotFound",
                format!("No in progress or pending Instance Refresh found for Auto Scaling group {name}"),
            ),
        }
    }

    pub fn auto_scaling_group(
        &mut self,
        here: &Here,
        name: &str,
    ) -> Answer<Option<AutoScalingGroup>> {
        if !self.region(&here.region).groups.contains_key(name) {
            return Ok(None);
        }
        let group = self.group_mut(here, name)?;
        let instances = group
            .current(here.now)
            .into_iter()
            .map(|(id, version, _, _)| GroupInstance {
                id,
                lifecycle_state: "InService".into(),
                health_status: "Healthy".into(),
                template_version: Some(version.to_string()),
            })
            .collect();
        let (template_name, version) = (group.template_name.clone(), group.version.clone());
        let mut found = AutoScalingGroup {
            name: name.to_owned(),
            launch_template: None,
            health_check_type: group.health_check_type.clone(),
            target_group_arns: group.target_group_arns.clone(),
            other_traffic_sources: group.other_traffic_sources.clone(),
            subnet_ids: vec![SEED_SUBNET.to_owned()],
            desired_capacity: group.members.len() as i32,
            max_size: group.max_size.unwrap_or(group.members.len() as i32),
            instances,
        };
        let region = self.region(&here.region);
        found.launch_template = region
            .templates
            .values()
            .find(|t| t.name == template_name)
            .map(|t| GroupTemplate {
                id: t.id.clone(),
                name: t.name.clone(),
                version,
            });
        Ok(Some(found))
    }

    pub fn target_health(&mut self, here: &Here, arn: &str) -> Answer<Vec<TargetHealth>> {
        let now = here.now;
        let region = self.region(&here.region);
        let mut found = Vec::new();
        for group in region.groups.values_mut() {
            group.settle(now);
            if !group.target_group_arns.iter().any(|a| a == arn) {
                continue;
            }
            for (id, _, state, why) in group.current(now) {
                found.push(TargetHealth {
                    instance_id: id,
                    state: state.to_owned(),
                    reason: why.map(|u| u.reason.clone()).unwrap_or_default(),
                    description: why.map(|u| u.description.clone()).unwrap_or_default(),
                });
            }
        }
        if found.is_empty()
            && !region
                .groups
                .values()
                .any(|g| g.target_group_arns.iter().any(|a| a == arn))
        {
            return refuse(
                "TargetGroupNotFound",
                format!("Target groups '{arn}' not found"),
            );
        }
        Ok(found)
    }

    pub fn refresh_requests(&mut self, here: &Here) -> Vec<RefreshRequest> {
        let region = self.region(&here.region);
        let mut records: Vec<&RefreshRecord> =
            region.groups.values().flat_map(|g| &g.refreshes).collect();
        records.sort_by_key(|r| (r.started, r.id.clone()));
        records.into_iter().map(|r| r.request.clone()).collect()
    }
}

/// The number a group's version setting names now (`$Default`, `$Latest` or a number).
fn resolve_version(region: &Region, template_name: &str, version: &str) -> Option<i64> {
    let template = region
        .templates
        .values()
        .find(|t| t.name == template_name)?;
    match version {
        "$Default" => Some(template.default_version),
        "$Latest" => template.versions.keys().next_back().copied(),
        number => number.parse().ok(),
    }
}

/// The seed target group's ARN in `region`.
pub(super) fn seed_target_group(region: &str, name: &str) -> String {
    format!(
        "arn:aws:elasticloadbalancing:{region}:{}:targetgroup/{name}/0123456789abcdef",
        super::ACCOUNT_ID
    )
}
