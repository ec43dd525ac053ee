//! `kiln rollback`: make an earlier release the launch template's default again, through the
//! one release path, and hold releases until `kiln release`.
//!
//! [`choose`] decides the target before anything moves (the CLI prints it, and asks on a
//! terminal); [`rollback`] carries it out.
//!
//! Without arguments the target comes from the release history: the newest image that is older
//! than the current default's image, was released before (kiln made it a default: its
//! `kiln:released` tag), did not fail its test phase, still exists and is available; the newest
//! version that uses it. Never a version that was never released or that failed, and never an
//! image newer than the current default's, so a second rollback goes further back, never
//! forward onto the release the first one left. `--to N` and `--image` go anywhere else
//! explicitly; they refuse images that are gone, not kiln's for this recipe (unless
//! `--allow-foreign`) or that failed their test (unless `--allow-failed-test`).

use serde::Serialize;

use crate::aws::Cloud;
use crate::error::{Error, Result};
use crate::ledger::Ledger;
use crate::pipeline::history::{history, History, HistoryEntry};
use crate::pipeline::images::{self, failed_its_test};
use crate::pipeline::release::{self, Command, Hold, Parameter, Released, Target as Move};
use crate::pipeline::release::{RefreshOutcome, SsmParameterWrite};
use crate::pipeline::Context;
use crate::plan::{Plan, ReleaseSpec};

/// What to roll back to.
#[derive(Debug, Clone)]
pub enum Target {
    Previous,
    Version { version: i64, allowed: Allowed },
    Image { id: String, allowed: Allowed },
}

/// What an explicit target may be that kiln otherwise refuses.
#[derive(Debug, Clone, Copy, Default)]
pub struct Allowed {
    /// An image kiln did not build for this recipe identity.
    pub foreign: bool,
    /// An image that failed its test phase.
    pub failed_test: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Pointer {
    /// `None`: a new version from the current default (`--image`).
    pub version: Option<i64>,
    pub image_id: Option<String>,
}

/// What a rollback will do, decided before anything moves.
#[derive(Debug, Clone, Serialize)]
pub struct Choice {
    pub launch_template_id: String,
    pub launch_template_name: String,
    pub before: Pointer,
    pub after: Pointer,
    /// Why this target.
    pub why: String,
}

impl Choice {
    /// Whether the default is already the target.
    pub fn changes_nothing(&self) -> bool {
        self.after == self.before
            || (self.after.version.is_none() && self.after.image_id == self.before.image_id)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RollbackOutcome {
    pub launch_template_id: String,
    pub launch_template_name: String,
    pub before: Pointer,
    pub after: Pointer,
    pub changed: bool,
    pub instance_refresh: Option<RefreshOutcome>,
    pub ssm_parameters: Vec<SsmParameterWrite>,
    /// The hold the rollback put on the launch template (see [`crate::pipeline::release::hold`]).
    pub hold: Option<Hold>,
}

/// Decides the rollback's target (see the module doc); nothing changes in AWS.
pub async fn choose(
    cloud: &dyn Cloud,
    plan: &Plan,
    spec: &ReleaseSpec,
    target: &Target,
) -> Result<Choice> {
    let found = history(cloud, spec).await?;
    let default = found.versions.iter().find(|v| v.is_default);
    let before = Pointer {
        version: Some(found.default_version),
        image_id: default.and_then(|v| v.image_id.clone()),
    };
    let (after, why) = match target {
        Target::Previous => {
            let entry = previous_release(&found.versions).ok_or_else(|| nothing_earlier(&found))?;
            let why = format!(
                "the newest earlier release: image {} ({}), released {}, created {}",
                entry.image_id.as_deref().unwrap_or("-"),
                entry.image_name.as_deref().unwrap_or("unnamed"),
                entry.released_at.as_deref().unwrap_or("?"),
                entry.image_created_at.as_deref().unwrap_or("?"),
            );
            (pointer(entry), why)
        }
        Target::Version { version, allowed } => {
            let entry = version_target(&found, plan, *version, *allowed)?;
            (
                pointer(entry),
                format!("version {version}, as asked (--to)"),
            )
        }
        Target::Image { id, allowed } => {
            image_target(cloud, plan, id, *allowed).await?;
            let after = match &before.image_id {
                Some(image) if image == id => before.clone(),
                _ => Pointer {
                    version: None,
                    image_id: Some(id.clone()),
                },
            };
            (after, format!("image {id}, as asked (--image)"))
        }
    };
    Ok(Choice {
        launch_template_id: found.launch_template_id,
        launch_template_name: found.launch_template_name,
        before,
        after,
        why,
    })
}

fn pointer(entry: &HistoryEntry) -> Pointer {
    Pointer {
        version: Some(entry.version),
        image_id: entry.image_id.clone(),
    }
}

/// Carries out `choice`: the one release path with the rollback's target, then the hold.
pub async fn rollback(
    ctx: &Context<'_>,
    plan: &Plan,
    spec: &ReleaseSpec,
    choice: &Choice,
    refresh: bool,
    journal: &Ledger,
    release_hint: String,
) -> Result<RollbackOutcome> {
    let target = match choice.after.version {
        Some(number) => Move::Version {
            number,
            image_id: choice.after.image_id.clone(),
        },
        None => Move::Image {
            id: choice.after.image_id.clone().unwrap_or_default(),
        },
    };
    let parameter = match (&plan.image.ssm_parameter, &choice.after.image_id) {
        (Some(name), Some(image)) => Some(Parameter {
            name: name.clone(),
            images: vec![(ctx.cloud.region().to_owned(), image.clone())],
            description: format!("{} (kiln rollback)", plan.name),
        }),
        _ => None,
    };
    let request = release::Request {
        command: Command::Rollback,
        spec,
        recipe: &plan.name,
        recipe_version: &plan.version,
        release_hint,
        target,
        refresh,
        refresh_timeout: plan.timeouts.instance_refresh,
        parameter,
        journal,
    };
    let released: Released = release::release(ctx, &request).await?;
    let lt = &released.launch_template;
    Ok(RollbackOutcome {
        launch_template_id: lt.id.clone(),
        launch_template_name: lt.name.clone(),
        before: choice.before.clone(),
        after: Pointer {
            version: Some(lt.default_version),
            image_id: released.image_id.clone(),
        },
        changed: lt.default_version != lt.previous_default_version,
        instance_refresh: released.instance_refresh,
        ssm_parameters: released.ssm_parameters,
        hold: released.hold,
    })
}

/// The default rollback's target among `versions` (newest first): see the module doc. Pure.
pub fn previous_release(versions: &[HistoryEntry]) -> Option<&HistoryEntry> {
    let default = versions.iter().find(|v| v.is_default)?;
    let current_image = default.image_id.as_deref();
    // Images made in the same second are ordered by the versions that use them.
    let current = (default.image_created_at.as_deref(), default.version);
    versions
        .iter()
        .filter(|v| v.image_usable() && !v.test_failed && v.was_released())
        .filter(|v| v.image_id.is_some() && v.image_id.as_deref() != current_image)
        .filter(|v| match (v.image_created_at.as_deref(), current) {
            (Some(created), (Some(now), version)) => (created, v.version) < (now, version),
            // The current default's image is gone: any earlier release is older.
            (_, (None, _)) => true,
            (None, (Some(_), _)) => false,
        })
        .max_by(|a, b| {
            (a.image_created_at.as_deref(), a.version)
                .cmp(&(b.image_created_at.as_deref(), b.version))
        })
}

/// Why the default rollback found nothing, with what was passed over.
fn nothing_earlier(found: &History) -> Error {
    let passed: Vec<String> = found
        .versions
        .iter()
        .filter(|v| !v.is_default)
        .map(|v| {
            let why = if !v.image_usable() {
                "image gone or not available"
            } else if v.test_failed {
                "image failed its test phase"
            } else if !v.was_released() {
                "image never released by kiln"
            } else {
                "image not older than the current default's"
            };
            format!("{} ({why})", v.version)
        })
        .collect();
    Error::Refused(format!(
        "launch template {} has no earlier release to roll back to: no version uses an image that is older than the default's, was released before, passed its test and still exists{}; \
         name one explicitly with --to VERSION or --image AMI_ID (see `kiln history`)",
        found.launch_template_name,
        if passed.is_empty() {
            String::new()
        } else {
            format!(" (versions passed over: {})", passed.join(", "))
        }
    ))
}

fn version_target<'h>(
    found: &'h History,
    plan: &Plan,
    n: i64,
    allowed: Allowed,
) -> Result<&'h HistoryEntry> {
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
    let image = entry.image_id.as_deref().unwrap_or("no image");
    if !entry.image_usable() {
        return Err(Error::Refused(format!(
            "version {n} of {name} points at {image}, which is {}: launching from it would fail; nothing was changed",
            if entry.image_exists { &entry.image_state } else { "deregistered" }
        )));
    }
    let own = entry.recipe.as_deref() == Some(plan.name.as_str())
        && entry
            .identity
            .as_deref()
            .is_none_or(|id| id == plan.identity());
    if !allowed.foreign && !own {
        return Err(images::foreign(image, plan, entry.recipe.as_deref()));
    }
    if entry.test_failed && !allowed.failed_test {
        return Err(failed_test(image));
    }
    Ok(entry)
}

fn failed_test(image_id: &str) -> Error {
    Error::Refused(format!(
        "image {image_id} failed its test phase (tag kiln:test=failed): pass --allow-failed-test to use it anyway"
    ))
}

async fn image_target(cloud: &dyn Cloud, plan: &Plan, id: &str, allowed: Allowed) -> Result<()> {
    let image = images::usable_image(cloud, plan, id, allowed.foreign).await?;
    if failed_its_test(&image) && !allowed.failed_test {
        return Err(failed_test(id));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(version: i64, image: &str, created: &str) -> HistoryEntry {
        HistoryEntry {
            version,
            is_default: false,
            image_id: Some(image.into()),
            image_name: None,
            image_state: "available".into(),
            image_exists: true,
            recipe: None,
            identity: None,
            recipe_version: None,
            image_created_at: Some(created.into()),
            test_failed: false,
            released_at: Some("2026-01-01T00:00:00Z".into()),
            build_id: None,
            fingerprint: None,
            created_at: None,
            description: String::new(),
        }
    }

    #[test]
    fn previous_is_the_newest_older_release_that_passed_and_still_exists() {
        let mut versions = vec![
            entry(7, "ami-g", "2026-07"),
            entry(6, "ami-f", "2026-06"),
            entry(5, "ami-e", "2026-05"),
            entry(4, "ami-d", "2026-04"),
            entry(3, "ami-c", "2026-03"),
            entry(2, "ami-b", "2026-02"),
            entry(1, "ami-a", "2026-01"),
        ];
        versions[2].is_default = true; // 5: ami-e
        versions[3].released_at = None; // 4: never released
        versions[4].test_failed = true; // 3: failed its test
        versions[5].image_exists = false; // 2: deregistered
        versions[5].image_state = "missing".into();
        // Never forward onto 6 or 7 (newer images), whatever was released.
        assert_eq!(previous_release(&versions).map(|v| v.version), Some(1));
        versions[3].released_at = Some("2026-04-02T00:00:00Z".into());
        assert_eq!(previous_release(&versions).map(|v| v.version), Some(4));
    }

    #[test]
    fn a_second_rollback_goes_further_back_never_forward() {
        let mut versions = vec![
            entry(3, "ami-c", "2026-03"),
            entry(2, "ami-b", "2026-02"),
            entry(1, "ami-a", "2026-01"),
        ];
        versions[0].is_default = true;
        assert_eq!(previous_release(&versions).map(|v| v.version), Some(2));
        versions[0].is_default = false;
        versions[1].is_default = true;
        assert_eq!(previous_release(&versions).map(|v| v.version), Some(1));
        versions[1].is_default = false;
        versions[2].is_default = true;
        assert_eq!(previous_release(&versions).map(|v| v.version), None);
    }

    #[test]
    fn images_made_in_the_same_second_are_ordered_by_their_versions() {
        let mut versions = vec![
            entry(3, "ami-b", "2026-02-01T00:00:00.000Z"),
            entry(2, "ami-a", "2026-02-01T00:00:00.000Z"),
        ];
        versions[0].is_default = true;
        assert_eq!(previous_release(&versions).map(|v| v.version), Some(2));
        versions[0].is_default = false;
        versions[1].is_default = true;
        assert_eq!(previous_release(&versions).map(|v| v.version), None);
    }

    #[test]
    fn the_newest_version_of_the_chosen_image_is_taken() {
        let mut versions = vec![
            entry(4, "ami-c", "2026-03"),
            entry(3, "ami-b", "2026-02"),
            entry(2, "ami-b", "2026-02"),
            entry(1, "ami-a", "2026-01"),
        ];
        versions[0].is_default = true;
        assert_eq!(previous_release(&versions).map(|v| v.version), Some(3));
    }
}
