//! `kiln rollback`: make an earlier image the launch template's default again.
//!
//! Without arguments the target is the newest version older than the latest one whose image
//! still exists and differs from the latest's image, so running rollback twice changes nothing
//! the second time. `--to N` selects a version; `--image` creates a new version (from the current
//! default) with that image, refusing images that are missing, not available, or not built by
//! kiln from this recipe unless `--allow-foreign`.
//!
//! A rollback puts a hold on the launch template (`kiln:hold`): `kiln build` then builds but does
//! not release until `kiln release` clears it. `--to N` is refused, like `--image`, when version
//! N's image was not built by kiln from this recipe, unless `--allow-foreign`.
//!
//! With a group and the `verified` strategy, rolling back is a release of the older version: the
//! group is refreshed onto it first and the default moves only once the group is healthy on it.

use serde::Serialize;

use crate::aws::{Cloud, ImageState, NewTemplateVersion, TemplateRef};
use crate::error::{Error, Result};
use crate::ledger::Ledger;
use crate::pipeline::history::{history, History, HistoryEntry};
use crate::pipeline::hold::{self, Hold};
use crate::pipeline::release::{self, LaunchTemplateRelease, RefreshOutcome, Rollout};
use crate::pipeline::rollout;
use crate::plan::{Plan, ReleaseSpec, ReleaseStrategy};
use crate::report::Reporter;
use crate::tags;

/// What to roll back to.
#[derive(Debug, Clone)]
pub enum Target {
    Previous,
    Version { version: i64, allow_foreign: bool },
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
    /// The hold the rollback put on the launch template (see [`crate::pipeline::hold`]).
    pub hold: Option<Hold>,
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
    ledger: Option<&Ledger>,
) -> Result<RollbackOutcome> {
    let found = history(cloud, spec).await?;
    let before = default_pointer(&found);
    let after_version = resolve_target(cloud, plan, &found, &before, target, ledger).await?;
    let changed = after_version != found.default_version;
    let group = spec
        .auto_scaling_group
        .as_deref()
        .filter(|_| refresh && changed);
    let verified = group.is_some() && spec.strategy == ReleaseStrategy::Verified;
    if changed && !verified {
        cloud
            .set_default_version(&found.launch_template_id, after_version)
            .await?;
    }
    let mut outcome = RollbackOutcome {
        launch_template_id: found.launch_template_id.clone(),
        launch_template_name: found.launch_template_name.clone(),
        before,
        after: Pointer {
            version: after_version,
            image_id: target_image(&found, target, after_version),
        },
        changed,
        instance_refresh: None,
        hold: None,
    };
    if let Some(group) = group {
        let how = Rollout {
            verified,
            timeout: plan.timeouts.instance_refresh,
            ledger,
        };
        let refreshed = roll(cloud, reporter, spec, group, &outcome, how).await?;
        outcome.instance_refresh = Some(refreshed);
    }
    outcome.hold = Some(place_hold(cloud, &outcome).await?);
    Ok(outcome)
}

/// The launch template's default version and its image, before the rollback.
fn default_pointer(found: &History) -> Pointer {
    Pointer {
        version: found.default_version,
        image_id: found
            .versions
            .iter()
            .find(|v| v.is_default)
            .and_then(|v| v.image_id.clone()),
    }
}

/// The launch template version `target` names (creating one for `--image`, recorded in `ledger`
/// so that an interrupted rollback removes it unless it became the default).
async fn resolve_target(
    cloud: &dyn Cloud,
    plan: &Plan,
    found: &History,
    before: &Pointer,
    target: &Target,
    ledger: Option<&Ledger>,
) -> Result<i64> {
    match target {
        Target::Previous => previous_target(found),
        Target::Version {
            version,
            allow_foreign,
        } => version_target(found, plan, *version, *allow_foreign),
        Target::Image { id, allow_foreign } => {
            image_target(cloud, plan, found, before, id, *allow_foreign, ledger).await
        }
    }
}

/// The image the rollback makes the default: `--image`'s, or that of the version it went to.
fn target_image(found: &History, target: &Target, after_version: i64) -> Option<String> {
    match target {
        Target::Image { id, .. } => Some(id.clone()),
        _ => found
            .versions
            .iter()
            .find(|v| v.version == after_version)
            .and_then(|v| v.image_id.clone()),
    }
}

/// Holds the default where the rollback put it: builds leave it there until `kiln release`.
async fn place_hold(cloud: &dyn Cloud, outcome: &RollbackOutcome) -> Result<Hold> {
    let held = Hold::now(
        outcome.after.image_id.as_deref().unwrap_or_default(),
        outcome.after.version,
    );
    hold::place(cloud, &outcome.launch_template_id, &held).await?;
    Ok(held)
}

/// Refreshes the group onto the rollback's version with the release strategy: with `verified`
/// the default moves (to `outcome.after`) only once the group is healthy on it; otherwise it
/// already moved.
async fn roll(
    cloud: &dyn Cloud,
    reporter: &dyn Reporter,
    spec: &ReleaseSpec,
    group: &str,
    outcome: &RollbackOutcome,
    how: Rollout<'_>,
) -> Result<RefreshOutcome> {
    let template = TemplateRef::Id(outcome.launch_template_id.clone());
    let preflight = cloud.default_template_version(&template).await?;
    for warning in rollout::check_group(cloud, spec, group, &preflight).await? {
        reporter.warning(&warning);
    }
    let mut release = LaunchTemplateRelease {
        id: outcome.launch_template_id.clone(),
        name: outcome.launch_template_name.clone(),
        previous_default_version: outcome.before.version,
        default_version: outcome.after.version,
        created_version: None,
    };
    if how.verified {
        release.default_version = outcome.before.version;
    }
    let target = (&mut release, outcome.after.version);
    release::roll_group(cloud, reporter, spec, group, target, how).await
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

fn version_target(found: &History, plan: &Plan, n: i64, allow_foreign: bool) -> Result<i64> {
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
    if !allow_foreign && entry.recipe.as_deref() != Some(plan.name.as_str()) {
        return Err(foreign(
            entry.image_id.as_deref().unwrap_or("no image"),
            &plan.name,
            entry.recipe.as_deref(),
        ));
    }
    Ok(n)
}

/// The refusal of an image kiln did not build from this recipe.
fn foreign(image_id: &str, recipe: &str, tagged: Option<&str>) -> Error {
    Error::Refused(format!(
        "image {image_id} was not built by kiln from recipe {recipe} (its kiln:recipe tag is {}): pass --allow-foreign to use it anyway",
        tagged.map(|r| format!("{r:?}")).unwrap_or_else(|| "missing".into())
    ))
}

/// Image `id`, refused unless it exists, is available and (without `allow_foreign`) was built by
/// kiln from `plan`'s recipe.
pub async fn usable_image(
    cloud: &dyn Cloud,
    plan: &Plan,
    id: &str,
    allow_foreign: bool,
) -> Result<crate::aws::Image> {
    let image = cloud.images(&[id.to_owned()]).await?.pop().ok_or_else(|| {
        Error::Refused(format!("image {id} does not exist in {}", cloud.region()))
    })?;
    if image.state != ImageState::Available {
        return Err(Error::Refused(format!(
            "image {id} is {}, not available",
            image.state
        )));
    }
    let recipe = image.tags.get(tags::RECIPE).map(String::as_str);
    if !allow_foreign && recipe != Some(plan.name.as_str()) {
        return Err(foreign(id, &plan.name, recipe));
    }
    Ok(image)
}

/// The version that uses image `id`: the default if it already does, else a new version.
async fn image_target(
    cloud: &dyn Cloud,
    plan: &Plan,
    found: &History,
    before: &Pointer,
    id: &str,
    allow_foreign: bool,
    ledger: Option<&Ledger>,
) -> Result<i64> {
    usable_image(cloud, plan, id, allow_foreign).await?;
    if before.image_id.as_deref() == Some(id) {
        return Ok(found.default_version);
    }
    let new_version = NewTemplateVersion {
        template_id: found.launch_template_id.clone(),
        source_version: found.default_version,
        image_id: id.to_owned(),
        description: format!("kiln rollback to {id}"),
        client_token: format!("kiln-rollback-{}-{id}", found.default_version),
    };
    release::create_version(cloud, &new_version, ledger).await
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
