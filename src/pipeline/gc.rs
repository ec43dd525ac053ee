//! `kiln gc`: finds what dead builds left behind, by tag, and removes it.
//!
//! Candidates: builder and tester instances (`kiln:role=builder`, `tester`) that are not terminated, and kiln-tagged
//! images that never became available (with their snapshots); plus, for builds whose journal is in
//! the local state folder, every resource the journal says was created and neither kept nor
//! removed (launch template versions included). A candidate is spared when its build is still
//! running on this machine (its journal lock is held) or when it is younger than `--older-than`
//! (a build running elsewhere), or when its age is unknown (unless `--older-than 0s`). Complete
//! images are never gc's business: `kiln prune` retires them.
//!
//! A journal-only leftover is looked at first: one already gone (an instance terminated, an
//! image deregistered) is reported as such, never "removed" again. What gc removes, or finds
//! gone, is written back to the dead build's journal, and a journal whose build holds nothing
//! more is retired, so the next gc does not find it again.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::aws::{Cloud, ImageQuery, ImageState, InstanceQuery, InstanceState};
use crate::error::Result;
use crate::ledger::{self, Event, Ledger, Resource};
use crate::pipeline::first_line;
use crate::pipeline::teardown::{self, Outcome};
use crate::tags;

#[derive(Debug, Clone, Serialize)]
pub struct Leftover {
    pub build_id: String,
    pub resource: String,
    pub age_seconds: Option<u64>,
    /// Serialized as `removed`, `would remove`, `spared: ...` or `FAILED: ...`.
    pub outcome: Outcome,
}

#[derive(Debug, Clone, Serialize)]
pub struct GcReport {
    pub older_than_seconds: u64,
    pub dry_run: bool,
    pub leftovers: Vec<Leftover>,
}

impl GcReport {
    /// Some leftover could not be removed.
    pub fn has_failures(&self) -> bool {
        self.leftovers.iter().any(|l| l.outcome.is_failure())
    }
}

struct Candidate {
    build_id: String,
    resource: Resource,
    created: Option<SystemTime>,
    /// A builder left running on purpose (`kiln build --on-error=abort`).
    kept: bool,
    /// Found only in a local journal (not by tag): it may be gone already.
    journal_only: bool,
}

pub async fn gc(
    cloud: &dyn Cloud,
    state_dir: &Path,
    older_than: Duration,
    dry_run: bool,
) -> Result<GcReport> {
    let mut candidates = tagged_candidates(cloud).await?;
    for candidate in journal_candidates(state_dir, cloud.region()) {
        match candidates
            .iter_mut()
            .find(|c| c.resource == candidate.resource)
        {
            Some(tagged) => {
                tagged.created = tagged.created.or(candidate.created);
                if tagged.build_id.is_empty() {
                    tagged.build_id = candidate.build_id;
                }
            }
            None => candidates.push(candidate),
        }
    }
    candidates.sort_by_key(|c| c.resource.teardown_rank());
    let now = SystemTime::now();
    let mut leftovers = Vec::new();
    for candidate in candidates {
        // A time ahead of this machine's clock (clock skew) reads as "just created".
        let age = candidate
            .created
            .map(|t| now.duration_since(t).unwrap_or_default());
        let build_dir = state_dir.join("builds").join(&candidate.build_id);
        let outcome = decide(cloud, &candidate, &build_dir, age, older_than, dry_run).await;
        let gone = matches!(outcome, Outcome::Removed { .. } | Outcome::AlreadyGone);
        if gone && !dry_run && !candidate.build_id.is_empty() {
            ledger::record_removed(&build_dir, &candidate.resource)?;
        }
        leftovers.push(Leftover {
            build_id: candidate.build_id,
            resource: candidate.resource.to_string(),
            age_seconds: age.map(|a| a.as_secs()),
            outcome,
        });
    }
    if !dry_run {
        retire_finished_journals(state_dir)?;
    }
    Ok(GcReport {
        older_than_seconds: older_than.as_secs(),
        dry_run,
        leftovers,
    })
}

/// What gc does about one candidate.
async fn decide(
    cloud: &dyn Cloud,
    candidate: &Candidate,
    build_dir: &Path,
    age: Option<Duration>,
    older_than: Duration,
    dry_run: bool,
) -> Outcome {
    if ledger::is_running(build_dir) {
        return Outcome::Spared("the build is still running on this machine".into());
    }
    let too_young = match age {
        Some(age) => age < older_than,
        None => !older_than.is_zero(),
    };
    if too_young {
        let younger = if candidate.kept {
            "kept on purpose by `kiln build --on-error=abort`; removed once older than"
        } else {
            "younger than"
        };
        return Outcome::Spared(match age {
            Some(_) => format!("{younger} {}", humantime::format_duration(older_than)),
            None => "its age is unknown (`--older-than 0s` removes it)".into(),
        });
    }
    if candidate.journal_only {
        match already_gone(cloud, &candidate.resource).await {
            Ok(true) => return Outcome::AlreadyGone,
            Ok(false) => {}
            Err(e) => return Outcome::Failed(first_line(&e.to_string())),
        }
    }
    if dry_run {
        return Outcome::WouldRemove;
    }
    teardown::remove(
        cloud,
        &candidate.resource,
        &candidate.build_id,
        candidate.created,
    )
    .await
    .unwrap_or_else(|e| Outcome::Failed(first_line(&e.to_string())))
}

/// Whether an instance is terminated (or unknown) or an image deregistered (or unknown). Other
/// kinds cannot be looked up cheaply: removing them is safe when they are gone.
async fn already_gone(home: &dyn Cloud, resource: &Resource) -> Result<bool> {
    let cloud = home.in_region(resource.region());
    Ok(match resource {
        Resource::Instance { id, .. } => cloud
            .instance(id)
            .await?
            .is_none_or(|i| i.state == InstanceState::Terminated),
        Resource::Image { id, .. } => cloud
            .images(std::slice::from_ref(id))
            .await?
            .iter()
            .all(|i| i.state == ImageState::Deregistered),
        Resource::Snapshot { .. }
        | Resource::TemplateVersion { .. }
        | Resource::Refresh { .. }
        | Resource::GroupSetting { .. }
        | Resource::GroupMaxSize { .. } => false,
    })
}

/// Retires the journal of every build that is not running and holds nothing more.
fn retire_finished_journals(state_dir: &Path) -> Result<()> {
    let Ok(dirs) = std::fs::read_dir(state_dir.join("builds")) else {
        return Ok(());
    };
    for dir in dirs.flatten() {
        ledger::retire_if_done(&dir.path())?;
    }
    Ok(())
}

async fn tagged_candidates(cloud: &dyn Cloud) -> Result<Vec<Candidate>> {
    let region = cloud.region().to_owned();
    let build_of =
        |tags: &BTreeMap<String, String>| tags.get(tags::BUILD_ID).cloned().unwrap_or_default();
    let mut found = Vec::new();
    let builders = InstanceQuery::live().tagged(tags::ROLE, tags::ROLE_BUILDER);
    let testers = InstanceQuery::live().tagged(tags::ROLE, tags::ROLE_TESTER);
    let mut instances = cloud.find_instances(&builders).await?;
    instances.extend(cloud.find_instances(&testers).await?);
    for instance in instances {
        found.push(Candidate {
            build_id: build_of(&instance.tags),
            kept: instance.tags.contains_key(tags::KEPT),
            resource: Resource::Instance {
                id: instance.id,
                region: region.clone(),
            },
            created: instance.launch_time,
            journal_only: false,
        });
    }
    let images = ImageQuery::own().with_tag_key(tags::BUILD_ID);
    for image in cloud.find_images(&images).await? {
        if image.state == ImageState::Available {
            continue;
        }
        found.push(Candidate {
            build_id: build_of(&image.tags),
            created: parse_creation_date(&image.creation_date),
            kept: false,
            journal_only: false,
            resource: Resource::Image {
                id: image.id,
                region: region.clone(),
            },
        });
    }
    Ok(found)
}

/// An image's creation date (`2026-01-02T03:04:05.000Z`) as a time.
fn parse_creation_date(date: &str) -> Option<SystemTime> {
    let seconds = date.trim_end_matches('Z').split('.').next()?;
    humantime::parse_rfc3339_weak(seconds).ok()
}

/// Resources that local journals of finished-or-dead builds say were created and never kept or
/// removed, in this region, aged from when the journal recorded them.
fn journal_candidates(state_dir: &Path, region: &str) -> Vec<Candidate> {
    let Ok(dirs) = std::fs::read_dir(state_dir.join("builds")) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for dir in dirs.flatten() {
        let build_id = dir.file_name().to_string_lossy().into_owned();
        let Ok(entries) = Ledger::read_journal_timed(&dir.path().join(ledger::JOURNAL_FILE)) else {
            continue;
        };
        found.extend(
            entries
                .into_iter()
                .filter(|(resource, event, _)| {
                    *event == Event::Created && resource.region() == region
                })
                .map(|(resource, _, created)| Candidate {
                    build_id: build_id.clone(),
                    resource,
                    created,
                    kept: false,
                    journal_only: true,
                }),
        );
    }
    found
}
