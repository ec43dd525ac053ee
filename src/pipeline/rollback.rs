//! `kiln rollback`: make an earlier image the launch template's default again.
//!
//! Without arguments the target is the newest version older than the latest one whose image
//! still exists and differs from the latest's image, so running rollback twice changes nothing
//! the second time. `--to N` selects a version; `--image` creates a new version (from the current
//! default) with that image, refusing images that are missing, not available, or not built by
//! kiln from this recipe unless `--allow-foreign`.

use serde::Serialize;

use crate::aws::sdk::ec2;
use crate::aws::sdk::Sdk as Cloud;
use crate::error::{Error, Result};
use crate::pipeline::history::{history, HistoryEntry};
use crate::pipeline::release::{self, RefreshOutcome};
use crate::plan::{Plan, ReleaseSpec};
use crate::report::Reporter;
use crate::tags;

/// What to roll back to.
#[derive(Debug, Clone)]
pub enum Target {
    Previous,
    Version(i64),
    Image { id: String, allow_foreign: bool },
}

#[derive(Debug, Clone, Serialize)]
pub struct Pointer {
    pub version: i64,
    pub image_id: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RollbackOutcome {
    pub launch_template_id: String,
    pub launch_template_name: String,
    pub before: Pointer,
    pub after: Pointer,
    pub changed: bool,
    pub instance_refresh: Option<RefreshOutcome>,
}

/// Picks the version the default `rollback` goes to (pure; `versions` newest first).
pub fn previous_version(versions: &[HistoryEntry]) -> Option<&HistoryEntry> {
    let latest = versions.first()?;
    versions.iter().skip(1).find(|v| {
        v.image_exists
            && v.image_state == "available"
            && v.image_id.is_some()
            && v.image_id != latest.image_id
    })
}

pub async fn rollback(
    cloud: &Cloud,
    reporter: &dyn Reporter,
    plan: &Plan,
    spec: &ReleaseSpec,
    target: &Target,
    refresh: bool,
) -> Result<RollbackOutcome> {
    let found = history(cloud, spec).await?;
    let current = found.versions.iter().find(|v| v.is_default);
    let before = Pointer {
        version: found.default_version,
        image_id: current.and_then(|v| v.image_id.clone()),
    };
    let after_version = match target {
        Target::Previous => previous_version(&found.versions).map(|v| v.version).ok_or_else(|| {
            Error::Refused(format!(
                "launch template {} has no earlier version whose image still exists: nothing to roll back to",
                found.launch_template_name
            ))
        })?,
        Target::Version(n) => {
            let entry = found.versions.iter().find(|v| v.version == *n).ok_or_else(|| {
                Error::Refused(format!("launch template {} has no version {n} (see `kiln history`)", found.launch_template_name))
            })?;
            if !entry.image_exists {
                return Err(Error::Refused(format!(
                    "version {n} of {} points at {}, which no longer exists",
                    found.launch_template_name,
                    entry.image_id.as_deref().unwrap_or("no image")
                )));
            }
            *n
        }
        Target::Image { id, allow_foreign } => {
            let image = ec2::find_image(cloud, id).await?.ok_or_else(|| Error::Refused(format!("image {id} does not exist in {}", cloud.region)))?;
            if image.state != "available" {
                return Err(Error::Refused(format!("image {id} is {}, not available", image.state)));
            }
            let recipe = image.tags.get(tags::RECIPE);
            if !allow_foreign && recipe != Some(&plan.name) {
                return Err(Error::Refused(format!(
                    "image {id} was not built by kiln from recipe {} (its kiln:recipe tag is {}): pass --allow-foreign to use it anyway",
                    plan.name,
                    recipe.map(|r| format!("{r:?}")).unwrap_or_else(|| "missing".into())
                )));
            }
            if before.image_id.as_deref() == Some(id.as_str()) {
                found.default_version
            } else {
                let description = format!("kiln rollback to {id}");
                let token = format!("kiln-rollback-{}-{}", found.default_version, id);
                ec2::create_template_version(cloud, &found.launch_template_id, found.default_version, id, &description, &token).await?
            }
        }
    };
    let changed = after_version != found.default_version;
    if changed {
        ec2::set_default_version(cloud, &found.launch_template_id, after_version).await?;
    }
    let after_image = match target {
        Target::Image { id, .. } => Some(id.clone()),
        _ => found
            .versions
            .iter()
            .find(|v| v.version == after_version)
            .and_then(|v| v.image_id.clone()),
    };
    let mut outcome = RollbackOutcome {
        launch_template_id: found.launch_template_id.clone(),
        launch_template_name: found.launch_template_name.clone(),
        before,
        after: Pointer {
            version: after_version,
            image_id: after_image,
        },
        changed,
        instance_refresh: None,
    };
    if let (true, true, Some(group)) = (changed, refresh, &spec.auto_scaling_group) {
        let phase = format!("instance refresh of {group}");
        reporter.phase_started(&phase);
        let timeout = plan.timeouts.instance_refresh;
        let refreshed =
            release::refresh_group(cloud, reporter, &phase, spec, group, timeout).await?;
        reporter.phase_finished(&phase, &refreshed.status);
        outcome.instance_refresh = Some(refreshed.clone());
        release::ensure_refreshed(&refreshed, &cloud.region)?;
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(version: i64, image: &str, exists: bool) -> HistoryEntry {
        HistoryEntry {
            version,
            is_default: false,
            image_id: Some(image.into()),
            image_name: None,
            image_state: if exists {
                "available".into()
            } else {
                "missing".into()
            },
            image_exists: exists,
            recipe: None,
            recipe_version: None,
            build_id: None,
            fingerprint: None,
            created_at: None,
            description: String::new(),
        }
    }

    #[test]
    fn previous_skips_missing_images_and_the_latest_image() {
        let versions = vec![
            entry(5, "ami-e", true),
            entry(4, "ami-e", true),
            entry(3, "ami-c", false),
            entry(2, "ami-b", true),
            entry(1, "ami-a", true),
        ];
        assert_eq!(previous_version(&versions).map(|v| v.version), Some(2));
        assert!(previous_version(&versions[..3]).is_none());
    }
}
