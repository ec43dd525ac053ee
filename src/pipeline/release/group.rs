//! What an auto scaling group runs, read in one go: its launch template setting, and each
//! instance with the version it was launched from, its lifecycle state, its health and its
//! target health in every target group attached to the group.
//!
//! The release reads it to gate the default on health, to print a line on every change while a
//! refresh runs, and to say, when a release fails, what the group runs now. `kiln status` shows
//! it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::aws::{Cloud, GroupTemplate, TargetHealth};
use crate::error::Result;

/// The target state that puts an instance in service behind a load balancer.
pub const HEALTHY: &str = "healthy";
/// A target the load balancer has not finished checking yet.
const INITIAL: &str = "initial";

/// One group, as [`GroupView::read`] found it.
#[derive(Debug, Clone, Serialize)]
pub struct GroupView {
    pub name: String,
    /// The template and version setting the group launches from (`None`: a launch
    /// configuration).
    #[serde(skip)]
    pub template: Option<GroupTemplate>,
    /// `$Default`, `$Latest`, a number, or `-` without a launch template.
    pub template_version: String,
    pub health_check_type: String,
    pub desired_capacity: i32,
    pub max_size: i32,
    pub target_group_arns: Vec<String>,
    pub instances: Vec<InstanceView>,
}

/// One instance of the group.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct InstanceView {
    pub id: String,
    /// The launch template version it was launched from, when AWS says.
    pub version: Option<String>,
    pub lifecycle_state: String,
    pub health_status: String,
    /// Its target state in each target group: `healthy`, `initial`, `unhealthy`, `draining`,
    /// `unused`, `unavailable`, or `unregistered` when the target group does not list it.
    pub targets: Vec<TargetView>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TargetView {
    pub target_group_arn: String,
    pub state: String,
    pub reason: String,
    pub description: String,
}

impl GroupView {
    /// Reads `group` and the target health of its instances; `None` when it does not exist.
    pub async fn read(cloud: &dyn Cloud, group: &str) -> Result<Option<GroupView>> {
        let Some(found) = cloud.auto_scaling_group(group).await? else {
            return Ok(None);
        };
        let mut health: Vec<(String, Vec<TargetHealth>)> = Vec::new();
        for arn in &found.target_group_arns {
            health.push((arn.clone(), cloud.target_health(arn).await?));
        }
        let instances = found
            .instances
            .iter()
            .map(|i| InstanceView {
                id: i.id.clone(),
                version: i.template_version.clone(),
                lifecycle_state: i.lifecycle_state.clone(),
                health_status: i.health_status.clone(),
                targets: health
                    .iter()
                    .map(|(arn, all)| target_view(arn, all, &i.id))
                    .collect(),
            })
            .collect();
        Ok(Some(GroupView {
            name: found.name,
            template_version: found
                .launch_template
                .as_ref()
                .map_or_else(|| "-".to_owned(), |t| t.version.clone()),
            template: found.launch_template,
            health_check_type: found.health_check_type,
            desired_capacity: found.desired_capacity,
            max_size: found.max_size,
            target_group_arns: found.target_group_arns,
            instances,
        }))
    }

    /// The instances launched from `version`.
    fn on(&self, version: i64) -> impl Iterator<Item = &InstanceView> {
        let wanted = version.to_string();
        self.instances
            .iter()
            .filter(move |i| i.version.as_deref() == Some(wanted.as_str()))
    }

    /// At least one instance runs `version`, and each that does is `InService` and healthy in
    /// every target group.
    pub fn healthy_on(&self, version: i64) -> bool {
        self.on(version).next().is_some() && self.on(version).all(InstanceView::in_service)
    }

    /// The first instance on `version` whose target is neither healthy nor still being checked
    /// (`unhealthy`, `draining`, `unused`, `unavailable`), in words.
    pub fn problem(&self, version: i64) -> Option<String> {
        self.on(version).find_map(|i| {
            let t = i
                .targets
                .iter()
                .find(|t| t.state != HEALTHY && t.state != INITIAL && t.state != "unregistered")?;
            Some(format!(
                "instance {} is {} in target group {} ({}: {})",
                i.id,
                t.state,
                t.target_group_arn,
                t.reason,
                t.description.trim_end_matches('.')
            ))
        })
    }

    /// `i-1 InService healthy, i-2 Pending initial` for the instances on `version`.
    pub fn summary(&self, version: i64) -> String {
        let parts: Vec<String> = self
            .on(version)
            .map(|i| format!("{} {} {}", i.id, i.lifecycle_state, i.target_state()))
            .collect();
        if parts.is_empty() {
            "no instance on the new version yet".into()
        } else {
            parts.join(", ")
        }
    }

    /// What changed since `before`, one line each: instances launched, in service, healthy,
    /// terminating, gone.
    pub fn changes_since(&self, before: &GroupView) -> Vec<String> {
        let mut lines = Vec::new();
        for now in &self.instances {
            let version = now.version.as_deref().unwrap_or("?");
            match before.instances.iter().find(|b| b.id == now.id) {
                None => lines.push(format!(
                    "instance {} launched (version {version}): {}, target {}",
                    now.id,
                    now.lifecycle_state,
                    now.target_state()
                )),
                Some(was) => {
                    if was.lifecycle_state != now.lifecycle_state {
                        lines.push(format!(
                            "instance {} (version {version}): {} → {}",
                            now.id, was.lifecycle_state, now.lifecycle_state
                        ));
                    }
                    if was.target_state() != now.target_state() {
                        lines.push(format!(
                            "instance {} (version {version}): target {} → {}",
                            now.id,
                            was.target_state(),
                            now.target_state()
                        ));
                    }
                }
            }
        }
        for was in &before.instances {
            if !self.instances.iter().any(|i| i.id == was.id) {
                lines.push(format!("instance {} left the group", was.id));
            }
        }
        lines
    }

    /// What the group runs, for a message or `kiln status`: its setting, then one line per
    /// instance with its version, that version's image (from `images`), and its health.
    pub fn describe(&self, images: &BTreeMap<i64, String>) -> String {
        let mut out = format!(
            "auto scaling group {} launches from version {} ({} health checks, desired {}, max {})",
            self.name,
            self.template_version,
            self.health_check_type,
            self.desired_capacity,
            self.max_size
        );
        if self.instances.is_empty() {
            out.push_str("; it has no instance");
        }
        for i in &self.instances {
            let version = i.version.as_deref().unwrap_or("?");
            let image = version
                .parse::<i64>()
                .ok()
                .and_then(|v| images.get(&v))
                .map_or("image unknown", String::as_str);
            let _ = write!(
                out,
                "\n    instance {}: version {version} ({image}), {}, {}, target {}",
                i.id,
                i.lifecycle_state,
                i.health_status,
                i.target_state()
            );
        }
        if self.target_group_arns.is_empty() {
            out.push_str(
                "\n    no target group: kiln's health gate can only use the group's own health checks",
            );
        }
        out
    }
}

impl InstanceView {
    /// `InService` and healthy in every target group.
    fn in_service(&self) -> bool {
        self.lifecycle_state == "InService" && self.targets.iter().all(|t| t.state == HEALTHY)
    }

    /// One word for its target health across target groups: `healthy` when healthy in all, else
    /// the first other state; `-` without target groups.
    pub fn target_state(&self) -> &str {
        if self.targets.is_empty() {
            return "-";
        }
        self.targets
            .iter()
            .find(|t| t.state != HEALTHY)
            .map_or(HEALTHY, |t| t.state.as_str())
    }
}

fn target_view(arn: &str, all: &[TargetHealth], instance: &str) -> TargetView {
    match all.iter().find(|t| t.instance_id == instance) {
        Some(t) => TargetView {
            target_group_arn: arn.to_owned(),
            state: t.state.clone(),
            reason: t.reason.clone(),
            description: t.description.clone(),
        },
        None => TargetView {
            target_group_arn: arn.to_owned(),
            state: "unregistered".into(),
            reason: String::new(),
            description: String::new(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(id: &str, version: &str, lifecycle: &str, target: &str) -> InstanceView {
        InstanceView {
            id: id.into(),
            version: Some(version.into()),
            lifecycle_state: lifecycle.into(),
            health_status: "Healthy".into(),
            targets: vec![TargetView {
                target_group_arn: "arn:tg".into(),
                state: target.into(),
                reason: if target == HEALTHY {
                    String::new()
                } else {
                    "Target.NotInUse".into()
                },
                description: "Target is in an Availability Zone that is not enabled.".into(),
            }],
        }
    }

    fn group(instances: Vec<InstanceView>) -> GroupView {
        GroupView {
            name: "web".into(),
            template: None,
            template_version: "$Default".into(),
            health_check_type: "ELB".into(),
            desired_capacity: 1,
            max_size: 1,
            target_group_arns: vec!["arn:tg".into()],
            instances,
        }
    }

    #[test]
    fn the_gate_opens_only_when_every_instance_on_the_version_is_in_service_and_healthy() {
        let g = group(vec![
            instance("i-old", "1", "InService", "healthy"),
            instance("i-new", "2", "InService", "initial"),
        ]);
        assert!(!g.healthy_on(2));
        assert!(g.healthy_on(1));
        assert!(!g.healthy_on(3), "no instance on the version");
        assert_eq!(g.problem(2), None, "initial is not a problem yet");
    }

    #[test]
    fn unused_draining_and_unavailable_targets_are_named_like_unhealthy_ones() {
        for state in ["unhealthy", "unused", "draining", "unavailable"] {
            let g = group(vec![instance("i-new", "2", "InService", state)]);
            let problem = g.problem(2).expect(state);
            assert!(
                problem.contains(&format!("is {state} in target group")),
                "{problem}"
            );
        }
    }

    #[test]
    fn changes_name_launches_state_changes_and_departures() {
        let before = group(vec![instance("i-old", "1", "InService", "healthy")]);
        let during = group(vec![
            instance("i-old", "1", "InService", "healthy"),
            instance("i-new", "2", "Pending", "initial"),
        ]);
        let after = group(vec![instance("i-new", "2", "InService", "healthy")]);
        assert_eq!(
            during.changes_since(&before),
            vec!["instance i-new launched (version 2): Pending, target initial"]
        );
        assert_eq!(
            after.changes_since(&during),
            vec![
                "instance i-new (version 2): Pending → InService",
                "instance i-new (version 2): target initial → healthy",
                "instance i-old left the group",
            ]
        );
    }
}
