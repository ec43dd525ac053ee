//! Teardown: removes what a build created and did not keep, in the reverse order of creation,
//! and says what it did as values ([`Cleanup`], [`Outcome`]) that `build` and `gc` share.
//!
//! Besides the ledger, it searches AWS for what a call whose answer never came may have created:
//! instances and images tagged with the build id, and launch template versions whose description
//! names the build. A new resource can be missing from searches for a while (AWS's eventual
//! consistency), so while a create call that never answered may have made something, the search
//! is repeated.

use std::fmt;
use std::time::{Duration, SystemTime};

use serde::{Serialize, Serializer};
use tokio::time::Instant;

use crate::aws::poll::{jittered, wait_until, Probe, Wait};
use crate::aws::{Cloud, ImageQuery, InstanceQuery, Meaning, TemplateRef};
use crate::error::Result;
use crate::ledger::{Ledger, Making, Resource};
use crate::pipeline::consistency::{self, Removal};
use crate::pipeline::images::Deletion;
use crate::pipeline::instances::{terminate_and_wait, TERMINATE_WAIT};
use crate::pipeline::release::{pin, staged};
use crate::pipeline::{first_line, images};
use crate::tags;

/// What was done, or not, about one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Removed; `with` names what went with it (an image's snapshots).
    Removed { with: Vec<String> },
    /// A launch template version that became the default: that release completed, so it stays.
    KeptAsDefault,
    /// An instance refresh: rolled back (the group goes back to its previous configuration).
    RolledBack,
    /// An instance refresh that had already ended.
    AlreadyEnded,
    /// A group's pinned launch template setting, set back to what it was.
    Restored,
    /// `--dry-run`: would be removed.
    WouldRemove,
    /// Left alone on purpose, with the reason.
    Spared(String),
    /// Already gone when looked at (a terminated instance, a deregistered image): nothing to do.
    AlreadyGone,
    /// Removing it failed, with the first line of the error.
    Failed(String),
}

impl Outcome {
    pub fn is_failure(&self) -> bool {
        matches!(self, Outcome::Failed(_))
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Removed { with } if with.is_empty() => f.write_str("removed"),
            Outcome::Removed { with } => {
                write!(f, "removed with its snapshots {}", with.join(", "))
            }
            Outcome::KeptAsDefault => f.write_str("kept: it is the default version"),
            Outcome::RolledBack => {
                f.write_str("rolled back: the group returns to its previous configuration")
            }
            Outcome::AlreadyEnded => f.write_str("had already ended"),
            Outcome::Restored => f.write_str("set back"),
            Outcome::WouldRemove => f.write_str("would remove"),
            Outcome::Spared(reason) => write!(f, "spared: {reason}"),
            Outcome::AlreadyGone => f.write_str("already gone"),
            Outcome::Failed(error) => write!(f, "FAILED: {error}"),
        }
    }
}

impl Serialize for Outcome {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// One resource and what teardown did about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cleanup {
    pub resource: Resource,
    pub outcome: Outcome,
}

impl fmt::Display for Cleanup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let resource = &self.resource;
        match &self.outcome {
            Outcome::Removed { with } if with.is_empty() => write!(f, "removed {resource}"),
            Outcome::Removed { with } => {
                write!(
                    f,
                    "removed {resource} and its snapshots {}",
                    with.join(", ")
                )
            }
            Outcome::KeptAsDefault => write!(f, "kept {resource}: it is the default version"),
            Outcome::RolledBack => write!(
                f,
                "rolled back {resource}: the group returns to its previous configuration"
            ),
            Outcome::AlreadyEnded => write!(f, "{resource} had already ended"),
            Outcome::Restored => write!(f, "set back {resource}"),
            Outcome::WouldRemove => write!(f, "would remove {resource}"),
            Outcome::Spared(reason) => write!(f, "spared {resource}: {reason}"),
            Outcome::AlreadyGone => write!(f, "{resource} was already gone"),
            Outcome::Failed(error) => write!(
                f,
                "FAILED to remove {resource}: {error} (remove it by hand, or run `kiln gc`)"
            ),
        }
    }
}

/// What a teardown did.
#[derive(Debug, Clone, Default)]
pub struct Teardown {
    /// Why the search for unrecorded leftovers failed, if it did.
    pub search_failed: Option<String>,
    pub cleanups: Vec<Cleanup>,
}

impl Teardown {
    /// Everything found was removed (or rightly kept).
    pub fn is_complete(&self) -> bool {
        self.search_failed.is_none() && !self.cleanups.iter().any(|c| c.outcome.is_failure())
    }

    /// What happened besides the resources: a failed search for leftovers.
    pub fn notes(&self) -> Vec<String> {
        self.search_failed
            .iter()
            .map(|e| format!("could not search for tagged leftovers: {e}"))
            .collect()
    }

    /// The notes, then one line per resource, for the error message.
    pub fn lines(&self) -> Vec<String> {
        let resources = self.cleanups.iter().map(Cleanup::to_string);
        self.notes().into_iter().chain(resources).collect()
    }
}

/// Removes every resource of the build that is not a kept product.
///
/// `template` is the recipe's launch template: a version this build created but never heard
/// back about (interrupted during the call) is found there by its description.
/// `progress` is told what teardown is waiting for, when it waits.
pub async fn tear_down(
    cloud: &dyn Cloud,
    ledger: &Ledger,
    template: Option<&str>,
    progress: &(dyn Fn(&str) + Sync),
) -> Teardown {
    let mut teardown = Teardown::default();
    let mut todo = ledger.to_tear_down();
    match search_leftovers(cloud, ledger, template, progress).await {
        Ok(found) => {
            for resource in found {
                if !todo.contains(&resource) {
                    todo.push(resource);
                }
            }
        }
        Err(e) => teardown.search_failed = Some(first_line(&e.to_string())),
    }
    todo.sort_by_key(Resource::teardown_rank);
    for resource in todo {
        // Found by tag but not in the ledger: made moments ago by a call whose answer was lost.
        let created = ledger.created_at(&resource).or(Some(SystemTime::now()));
        let outcome = match remove(cloud, &resource, ledger.build_id(), created).await {
            Ok(outcome) => {
                let _ = ledger.removed(resource.clone());
                outcome
            }
            Err(e) => Outcome::Failed(first_line(&e.to_string())),
        };
        teardown.cleanups.push(Cleanup { resource, outcome });
    }
    teardown
}

/// How often teardown searches again for what an unanswered create call may have made.
const SEARCH_AGAIN: Duration = Duration::from_secs(2);

/// What the build made that its ledger does not know: [`find_tagged_leftovers`], searched again
/// while a create call that never answered (the build was interrupted inside it) may have made
/// something searches do not show yet: until something of its kind turns up, or until
/// [`consistency::VISIBILITY_WINDOW`] after the call started.
async fn search_leftovers(
    cloud: &dyn Cloud,
    ledger: &Ledger,
    template: Option<&str>,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Vec<Resource>> {
    let known = ledger.entries();
    let unknown = |found: &[Resource]| -> Vec<Resource> {
        found
            .iter()
            .filter(|r| !known.iter().any(|(k, _)| k == *r))
            .cloned()
            .collect()
    };
    let now = Instant::now();
    let calls: Vec<(Making, Instant)> = ledger
        .unanswered()
        .into_iter()
        .map(|(making, at)| (making, now + consistency::settling_time(Some(at))))
        .collect();
    let mut found: Vec<Resource> = Vec::new();
    loop {
        for resource in unknown(&find_tagged_leftovers(cloud, ledger.build_id(), template).await?) {
            if !found.contains(&resource) {
                found.push(resource);
            }
        }
        let waiting = calls.iter().any(|(making, until)| {
            Instant::now() < *until && !found.iter().any(|r| making.makes(r))
        });
        if !waiting {
            return Ok(found);
        }
        progress(
            "searching again for what an interrupted create call may have made (new resources \
             can take a while to show in searches; a second Ctrl-C leaves it to `kiln gc`)",
        );
        tokio::time::sleep(jittered(SEARCH_AGAIN)).await;
    }
}

/// Instances and images tagged with this build id that are not terminated / deregistered, and
/// launch template versions whose description names this build and that are not the default.
async fn find_tagged_leftovers(
    cloud: &dyn Cloud,
    build_id: &str,
    template: Option<&str>,
) -> Result<Vec<Resource>> {
    let region = cloud.region().to_owned();
    let mut found = Vec::new();
    let instances = InstanceQuery::live().tagged(tags::BUILD_ID, build_id);
    for instance in cloud.find_instances(&instances).await? {
        found.push(Resource::Instance {
            id: instance.id,
            region: region.clone(),
        });
    }
    // Every image of this build: the ones the ledger knows (kept products among them) are
    // filtered out by the caller; the others were made by a call whose answer never came.
    let images = ImageQuery::own().tagged(tags::BUILD_ID, build_id);
    for image in cloud.find_images(&images).await? {
        found.push(Resource::Image {
            id: image.id,
            region: region.clone(),
        });
    }
    if let Some(template) = template {
        let template = cloud.launch_template(&TemplateRef::parse(template)).await?;
        for version in cloud.template_versions(&template.id).await? {
            if staged::created_by(&version.description, build_id)
                && version.number != template.default_version
            {
                found.push(Resource::TemplateVersion {
                    template_id: template.id.clone(),
                    version: version.number,
                    region: region.clone(),
                });
            }
        }
    }
    Ok(found)
}

/// How long teardown waits for a refresh it rolled back to end, so that the version it was
/// replacing instances onto is no longer in use when its turn comes.
pub const ROLLBACK_WAIT: Duration = Duration::from_secs(15 * 60);

/// Waits until the rolled-back refresh has ended (its instances are back on the previous
/// configuration).
async fn wait_for_rollback(cloud: &dyn Cloud, group: &str, refresh_id: &str) -> Result<()> {
    let wait = Wait {
        phase: "waiting for the rolled-back instance refresh",
        resource: &format!("instance refresh {refresh_id} of {group}"),
        region: cloud.region(),
        timeout: ROLLBACK_WAIT,
        hint: "look at the group's activity history; `kiln status` shows what it runs",
    };
    wait_until(
        wait,
        |_| {},
        || async {
            Ok(match cloud.refresh(group, refresh_id).await? {
                Some(r) if !r.status.is_finished() => Probe::Pending(r.status.to_string()),
                _ => Probe::Done(()),
            })
        },
    )
    .await
}

/// Removes one resource (in its own region).
/// `build_id` is the client token of the build's builder (empty when unknown); `created` is
/// when the resource was created, when known: until a new id is visible, AWS's NotFound does
/// not mean "already gone".
pub async fn remove(
    home: &dyn Cloud,
    resource: &Resource,
    build_id: &str,
    created: Option<SystemTime>,
) -> Result<Outcome> {
    let cloud = home.in_region(resource.region());
    let cloud = cloud.as_ref();
    match resource {
        Resource::TemplateVersion {
            template_id,
            version,
            ..
        } => {
            let template = cloud
                .launch_template(&TemplateRef::Id(template_id.clone()))
                .await?;
            if template.default_version == *version {
                return Ok(Outcome::KeptAsDefault);
            }
            Ok(
                match staged::delete_unless_in_use(cloud, &template, *version).await? {
                    None => Outcome::Removed { with: Vec::new() },
                    Some(why) => Outcome::Spared(why),
                },
            )
        }
        Resource::Refresh {
            group, refresh_id, ..
        } => match cloud.rollback_refresh(group).await {
            Ok(()) => {
                wait_for_rollback(cloud, group, refresh_id).await?;
                Ok(Outcome::RolledBack)
            }
            Err(e) if e.meaning() == Some(Meaning::AlreadyEnded) => Ok(Outcome::AlreadyEnded),
            Err(e) => Err(e),
        },
        Resource::GroupSetting {
            group,
            template_id,
            original,
            pinned,
            ..
        } => Ok(
            match pin::restore_if_pinned(cloud, group, template_id, original, pinned).await? {
                None => Outcome::Restored,
                Some(why) => Outcome::Spared(why),
            },
        ),
        Resource::GroupMaxSize {
            group,
            original,
            raised,
            ..
        } => Ok(
            match pin::restore_max_size_if_raised(cloud, group, *original, *raised).await? {
                None => Outcome::Restored,
                Some(why) => Outcome::Spared(why),
            },
        ),
        Resource::Image { id, .. } => Ok(
            match images::delete_image_created_at(cloud, id, created).await? {
                Deletion::Deleted(with) => Outcome::Removed { with },
                Deletion::Protected(state) => {
                    Outcome::Spared(format!("deregistration protection is {state}"))
                }
                Deletion::AlreadyGone => Outcome::AlreadyGone,
            },
        ),
        Resource::Snapshot { id, .. } => Ok(
            match images::delete_snapshot_when_free(cloud, id, created).await? {
                Removal::Removed => Outcome::Removed { with: Vec::new() },
                Removal::AlreadyGone => Outcome::AlreadyGone,
            },
        ),
        Resource::Instance { id, .. } => {
            terminate_and_wait(cloud, id, build_id, TERMINATE_WAIT).await?;
            Ok(Outcome::Removed { with: Vec::new() })
        }
    }
}
