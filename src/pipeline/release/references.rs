//! Which versions of a launch template something still launches from, so that nothing kiln
//! does (a failed release, teardown, `prune`, `gc`) deletes one of them.
//!
//! A version is in use when it is the template's default (and, for a group on `$Latest`, the
//! latest), when an auto scaling group's launch template setting names it, when an instance of a
//! group was launched from it, or when a group's active instance refresh replaces instances onto
//! it (`DesiredConfiguration`). Deleting such a version would leave the group unable to launch:
//! its next scale-out, health replacement or refresh fails.
//!
//! Reading the references is part of every command's preflight; it costs one
//! `DescribeAutoScalingGroups` listing plus one `DescribeInstanceRefreshes` per group that
//! launches from the template.

use std::collections::BTreeMap;

use crate::aws::{Cloud, LaunchTemplate};
use crate::error::Result;

/// Why each version of one template must stay, by version number.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InUse(BTreeMap<i64, Vec<String>>);

impl InUse {
    /// Reads every reference to `template`'s versions in its region.
    pub async fn read(cloud: &dyn Cloud, template: &LaunchTemplate) -> Result<InUse> {
        let mut in_use = InUse::default();
        in_use.add(template.default_version, "it is the default version".into());
        for group in cloud.auto_scaling_groups().await? {
            let Some(uses) = &group.launch_template else {
                continue;
            };
            if uses.id != template.id && uses.name != template.name {
                continue;
            }
            let name = &group.name;
            match uses.version.as_str() {
                "$Default" => {}
                "$Latest" => in_use.add(
                    template.latest_version,
                    format!("auto scaling group {name} launches from $Latest"),
                ),
                number => {
                    if let Ok(number) = number.parse() {
                        in_use.add(
                            number,
                            format!("auto scaling group {name} launches from it"),
                        );
                    }
                }
            }
            for instance in &group.instances {
                let version = match instance.template_version.as_deref() {
                    Some("$Default") => Some(template.default_version),
                    Some("$Latest") => Some(template.latest_version),
                    Some(number) => number.parse().ok(),
                    None => None,
                };
                if let Some(version) = version {
                    in_use.add(
                        version,
                        format!("instance {} of group {name} runs it", instance.id),
                    );
                }
            }
            if let Some(refresh) = cloud.active_refresh(name).await? {
                if let Some(desired) = refresh.desired.filter(|d| d.template_id == template.id) {
                    in_use.add(
                        desired.version,
                        format!(
                            "instance refresh {} of group {name} ({}) replaces instances onto it",
                            refresh.id, refresh.status
                        ),
                    );
                }
            }
        }
        Ok(in_use)
    }

    fn add(&mut self, version: i64, why: String) {
        self.0.entry(version).or_default().push(why);
    }

    /// Why `version` must stay, in one line; `None` when nothing uses it.
    pub fn why(&self, version: i64) -> Option<String> {
        self.0.get(&version).map(|reasons| reasons.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_for_a_version_is_kept_and_others_are_free() {
        let mut in_use = InUse::default();
        in_use.add(3, "it is the default version".into());
        in_use.add(3, "instance i-1 of group web runs it".into());
        in_use.add(5, "auto scaling group web launches from it".into());
        assert_eq!(
            in_use.why(3).as_deref(),
            Some("it is the default version; instance i-1 of group web runs it")
        );
        assert!(in_use.why(5).is_some());
        assert_eq!(in_use.why(4), None);
    }
}
