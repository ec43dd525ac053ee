//! `kiln gc`: finds what dead builds left behind, by tag, and removes it.
//!
//! Candidates: builder instances (`kiln:role=builder`) that are not terminated, and kiln-tagged
//! images that never became available (with their snapshots); plus, for builds whose journal is in
//! the local state folder, every resource the journal says was created and neither kept nor
//! removed (launch template versions included). A candidate is spared when its build is still
//! running on this machine (its journal lock is held) or when it is younger than `--older-than`
//! (a build running elsewhere). Complete images are never gc's business: `kiln prune` retires them.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::aws::sdk::ec2::{self, filter};
use crate::aws::sdk::Sdk as Cloud;
use crate::error::Result;
use crate::ledger::{self, Event, Ledger, Resource};
use crate::pipeline::teardown;
use crate::tags;

#[derive(Debug, Clone, Serialize)]
pub struct Leftover {
    pub build_id: String,
    pub resource: String,
    pub age_seconds: Option<u64>,
    /// `removed`, `would remove`, `spared: ...` or `FAILED: ...`.
    pub outcome: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct GcReport {
    pub older_than_seconds: u64,
    pub dry_run: bool,
    pub leftovers: Vec<Leftover>,
}

struct Candidate {
    build_id: String,
    resource: Resource,
    created: Option<SystemTime>,
}

pub async fn gc(
    cloud: &Cloud,
    state_dir: &Path,
    older_than: Duration,
    dry_run: bool,
) -> Result<GcReport> {
    let mut candidates = tagged_candidates(cloud).await?;
    for (build_id, resource) in journal_candidates(state_dir, &cloud.region) {
        if !candidates.iter().any(|c| c.resource == resource) {
            candidates.push(Candidate {
                build_id,
                resource,
                created: None,
            });
        }
    }
    candidates.sort_by_key(|c| match c.resource {
        Resource::TemplateVersion { .. } => 0,
        Resource::Image { .. } => 1,
        Resource::Snapshot { .. } => 2,
        Resource::Instance { .. } => 3,
    });
    let now = SystemTime::now();
    let mut leftovers = Vec::new();
    for candidate in candidates {
        let age = candidate.created.and_then(|t| now.duration_since(t).ok());
        let build_dir = state_dir.join("builds").join(&candidate.build_id);
        let outcome = if ledger::is_running(&build_dir) {
            "spared: the build is still running on this machine".to_owned()
        } else if age.is_some_and(|a| a < older_than) {
            format!(
                "spared: younger than {}",
                humantime::format_duration(older_than)
            )
        } else if dry_run {
            "would remove".to_owned()
        } else {
            match teardown::remove(cloud, &candidate.resource).await {
                Ok(detail) => format!("removed{detail}"),
                Err(e) => format!(
                    "FAILED: {}",
                    e.to_string().lines().next().unwrap_or_default()
                ),
            }
        };
        leftovers.push(Leftover {
            build_id: candidate.build_id,
            resource: candidate.resource.to_string(),
            age_seconds: age.map(|a| a.as_secs()),
            outcome,
        });
    }
    Ok(GcReport {
        older_than_seconds: older_than.as_secs(),
        dry_run,
        leftovers,
    })
}

async fn tagged_candidates(cloud: &Cloud) -> Result<Vec<Candidate>> {
    let mut found = Vec::new();
    let builders = ec2::list_instances(
        cloud,
        vec![
            filter(&format!("tag:{}", tags::ROLE), [tags::ROLE_BUILDER]),
            filter(
                "instance-state-name",
                ["pending", "running", "stopping", "stopped"],
            ),
        ],
        "kiln builders",
    )
    .await?;
    for instance in builders {
        found.push(Candidate {
            build_id: instance
                .tags
                .get(tags::BUILD_ID)
                .cloned()
                .unwrap_or_default(),
            resource: Resource::Instance {
                id: instance.id,
                region: cloud.region.clone(),
            },
            created: instance.launch_time,
        });
    }
    let images = ec2::list_images(
        cloud,
        &["self".to_owned()],
        vec![filter("tag-key", [tags::BUILD_ID])],
        "kiln images",
    )
    .await?;
    for image in images.into_iter().filter(|i| i.state != "available") {
        found.push(Candidate {
            build_id: image.tags.get(tags::BUILD_ID).cloned().unwrap_or_default(),
            created: humantime::parse_rfc3339_weak(
                image
                    .creation_date
                    .trim_end_matches('Z')
                    .split('.')
                    .next()
                    .unwrap_or_default(),
            )
            .ok(),
            resource: Resource::Image {
                id: image.id,
                region: cloud.region.clone(),
            },
        });
    }
    Ok(found)
}

/// Resources that local journals of finished-or-dead builds say were created and never kept or
/// removed, in this region.
fn journal_candidates(state_dir: &Path, region: &str) -> Vec<(String, Resource)> {
    let Ok(dirs) = std::fs::read_dir(state_dir.join("builds")) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for dir in dirs.flatten() {
        let build_id = dir.file_name().to_string_lossy().into_owned();
        let Ok(entries) = Ledger::read_journal(&dir.path().join("journal.jsonl")) else {
            continue;
        };
        let pending: BTreeMap<usize, Resource> = entries
            .into_iter()
            .enumerate()
            .filter(|(_, (resource, event))| {
                *event == Event::Created && resource.region() == region
            })
            .map(|(i, (resource, _))| (i, resource))
            .collect();
        found.extend(pending.into_values().map(|r| (build_id.clone(), r)));
    }
    found
}
