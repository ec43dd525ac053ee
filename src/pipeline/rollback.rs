//! `kiln rollback`: make an earlier image the launch template's default again.
//!
//! Without arguments the target is the newest version older than the latest one whose image
//! still exists and differs from the latest's image, so running rollback twice changes nothing
//! the second time. `--to N` selects a version; `--image` creates a new version (from the current
//! default) with that image, refusing images that are missing, not available, or not built by
//! kiln from this recipe unless `--allow-foreign`.

use serde::Serialize;

use crate::aws::{Cloud, ImageState, NewTemplateVersion};
use crate::error::{Error, Result};
use crate::pipeline::history::{history, History, HistoryEntry};
use crate::pipeline::release::{self, RefreshOutcome};
use crate::plan::{Plan, ReleaseSpec};
use crate::report::{Phase, Reporter};
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
    versions
        .iter()
        .skip(1)
        .find(|v| v.image_usable() && v.image_id.is_some() && v.image_id != latest.image_id)
}

pub async fn rollback(
    cloud: &dyn Cloud,
    reporter: &dyn Reporter,
    plan: &Plan,
    spec: &ReleaseSpec,
    target: &Target,
    refresh: bool,
) -> Result<RollbackOutcome> {
    let found = history(cloud, spec).await?;
    let before = Pointer {
        version: found.default_version,
        image_id: found
            .versions
            .iter()
            .find(|v| v.is_default)
            .and_then(|v| v.image_id.clone()),
    };
    let after_version = match target {
        Target::Previous => previous_target(&found)?,
        Target::Version(n) => version_target(&found, *n)?,
        Target::Image { id, allow_foreign } => {
            image_target(cloud, plan, &found, &before, id, *allow_foreign).await?
        }
    };
    let changed = after_version != found.default_version;
    if changed {
        cloud
            .set_default_version(&found.launch_template_id, after_version)
            .await?;
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
        let refreshed = follow_refresh(cloud, reporter, plan, spec, group).await?;
        outcome.instance_refresh = Some(refreshed.clone());
        release::ensure_refreshed(&refreshed, cloud.region())?;
    }
    Ok(outcome)
}

fn previous_target(found: &History) -> Result<i64> {
    previous_version(&found.versions)
        .map(|v| v.version)
        .ok_or_else(|| {
            Error::Refused(format!(
                "launch template {} has no earlier version whose image still exists: nothing to roll back to",
                found.launch_template_name
            ))
        })
}

fn version_target(found: &History, n: i64) -> Result<i64> {
    let name = &found.launch_template_name;
    let entry = found
        .versions
        .iter()
        .find(|v| v.version == n)
        .ok_or_else(|| {
            Error::Refused(format!(
                "launch template {name} has no version {n} (see `kiln history`)"
            ))
        })?;
    if !entry.image_exists {
        return Err(Error::Refused(format!(
            "version {n} of {name} points at {}, which no longer exists",
            entry.image_id.as_deref().unwrap_or("no image")
        )));
    }
    Ok(n)
}

/// The version that uses image `id`: the default if it already does, else a new version.
async fn image_target(
    cloud: &dyn Cloud,
    plan: &Plan,
    found: &History,
    before: &Pointer,
    id: &str,
    allow_foreign: bool,
) -> Result<i64> {
    let image = cloud.images(&[id.to_owned()]).await?.pop().ok_or_else(|| {
        Error::Refused(format!("image {id} does not exist in {}", cloud.region()))
    })?;
    if image.state != ImageState::Available {
        return Err(Error::Refused(format!(
            "image {id} is {}, not available",
            image.state
        )));
    }
    let recipe = image.tags.get(tags::RECIPE);
    if !allow_foreign && recipe != Some(&plan.name) {
        return Err(Error::Refused(format!(
            "image {id} was not built by kiln from recipe {} (its kiln:recipe tag is {}): pass --allow-foreign to use it anyway",
            plan.name,
            recipe.map(|r| format!("{r:?}")).unwrap_or_else(|| "missing".into())
        )));
    }
    if before.image_id.as_deref() == Some(id) {
        return Ok(found.default_version);
    }
    cloud
        .create_template_version(&NewTemplateVersion {
            template_id: found.launch_template_id.clone(),
            source_version: found.default_version,
            image_id: id.to_owned(),
            description: format!("kiln rollback to {id}"),
            client_token: format!("kiln-rollback-{}-{id}", found.default_version),
        })
        .await
}

async fn follow_refresh(
    cloud: &dyn Cloud,
    reporter: &dyn Reporter,
    plan: &Plan,
    spec: &ReleaseSpec,
    group: &str,
) -> Result<RefreshOutcome> {
    let phase = Phase::InstanceRefresh {
        group: group.to_owned(),
    };
    reporter.phase_started(&phase);
    let timeout = plan.timeouts.instance_refresh;
    let on_state = |state: &str| reporter.phase_progress(&phase, state);
    let refreshed = release::refresh_group(cloud, spec, group, timeout, on_state).await?;
    reporter.phase_finished(&phase, refreshed.status.as_str());
    Ok(refreshed)
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
