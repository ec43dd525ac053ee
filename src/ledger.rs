//! The ledger: every resource a build creates, recorded the moment its id is known.
//!
//! It lives in memory (for teardown in this process) and in an append-only JSON-lines journal
//! under the build's state folder (for a human, or a later `kiln gc`, after a crash). AWS tags are
//! the second record: `kiln gc` finds leftovers by tag even when the journal is lost.
//! The ledger only records; [`crate::pipeline::teardown`] decides what to remove.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A resource kiln created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Resource {
    Instance {
        id: String,
        region: String,
    },
    Image {
        id: String,
        region: String,
    },
    Snapshot {
        id: String,
        region: String,
    },
    TemplateVersion {
        template_id: String,
        version: i64,
        region: String,
    },
    /// An instance refresh onto a version that is not the default yet: rolled back on teardown.
    Refresh {
        group: String,
        refresh_id: String,
        region: String,
    },
    /// A group's launch template setting that a release pinned from `original` (`$Default`,
    /// `$Latest`) to the number `pinned`: set back on teardown while it is still `pinned`.
    GroupSetting {
        group: String,
        template_id: String,
        original: String,
        pinned: String,
        region: String,
    },
    /// A group's `MaxSize` that a release raised from `original` to `raised` (room to launch
    /// before terminating): set back on teardown while it is still `raised`.
    GroupMaxSize {
        group: String,
        original: i32,
        raised: i32,
        region: String,
    },
}

impl Resource {
    /// Where the resource comes in a teardown: instance refreshes first, then a group's pinned
    /// setting (so the group no longer names the new version), launch template versions,
    /// images, snapshots, and instances last (the reverse of creation).
    pub fn teardown_rank(&self) -> u8 {
        match self {
            Resource::Refresh { .. } => 0,
            Resource::GroupSetting { .. } | Resource::GroupMaxSize { .. } => 1,
            Resource::TemplateVersion { .. } => 2,
            Resource::Image { .. } => 3,
            Resource::Snapshot { .. } => 4,
            Resource::Instance { .. } => 5,
        }
    }

    /// The region the resource lives in.
    pub fn region(&self) -> &str {
        match self {
            Resource::Instance { region, .. }
            | Resource::Image { region, .. }
            | Resource::Snapshot { region, .. }
            | Resource::TemplateVersion { region, .. }
            | Resource::Refresh { region, .. }
            | Resource::GroupSetting { region, .. }
            | Resource::GroupMaxSize { region, .. } => region,
        }
    }
}

impl std::fmt::Display for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Resource::Instance { id, region } => write!(f, "instance {id} ({region})"),
            Resource::Image { id, region } => write!(f, "image {id} ({region})"),
            Resource::Snapshot { id, region } => write!(f, "snapshot {id} ({region})"),
            Resource::Refresh {
                group,
                refresh_id,
                region,
            } => write!(f, "instance refresh {refresh_id} of {group} ({region})"),
            Resource::GroupSetting {
                group,
                original,
                pinned,
                region,
                ..
            } => write!(
                f,
                "launch template setting of auto scaling group {group} (pinned to version {pinned}, was {original}) ({region})"
            ),
            Resource::GroupMaxSize {
                group,
                original,
                raised,
                region,
            } => write!(
                f,
                "MaxSize of auto scaling group {group} (raised to {raised}, was {original}) ({region})"
            ),
            Resource::TemplateVersion {
                template_id,
                version,
                region,
            } => {
                write!(
                    f,
                    "launch template {template_id} version {version} ({region})"
                )
            }
        }
    }
}

/// What a create call makes, for a call whose answer may never come (see [`Ledger::making`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Making {
    Instance,
    Image,
    TemplateVersion,
}

impl Making {
    /// Whether `resource` is of this kind.
    pub fn makes(self, resource: &Resource) -> bool {
        matches!(
            (self, resource),
            (Making::Instance, Resource::Instance { .. })
                | (Making::Image, Resource::Image { .. })
                | (Making::TemplateVersion, Resource::TemplateVersion { .. })
        )
    }
}

/// What happened to a resource, as journalled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// Created; torn down if the build fails.
    Created,
    /// A product of the build that is complete: kept even if a later phase fails.
    Kept,
    /// Gone (terminated, deregistered, deleted).
    Removed,
    /// A builder left running on purpose after a failure (`--on-error=abort`): not torn down;
    /// `kiln gc` spares it until `--older-than`.
    KeptOnError,
}

#[derive(Serialize, Deserialize)]
struct Line {
    at: String,
    event: Event,
    #[serde(flatten)]
    resource: Resource,
}

/// A resource in the ledger, with its latest event.
struct Entry {
    resource: Resource,
    event: Event,
    /// When it was recorded as created (teardown gives a new id time to be visible).
    created: Option<SystemTime>,
}

pub struct Ledger {
    build_id: String,
    journal: PathBuf,
    entries: Mutex<Vec<Entry>>,
    /// Create calls that have not answered: a build interrupted inside one may have made
    /// something that only a search finds (by id when it was started, and its kind).
    calls: Mutex<Vec<(u64, Making, SystemTime)>>,
    /// Held (flock) while the build runs, so `kiln gc` on this machine can tell a live build from
    /// a dead one; the kernel releases it when the process dies, even by SIGKILL.
    _lock: std::fs::File,
}

/// The name of the lock file in a build's folder.
pub const LOCK_FILE: &str = "lock";
/// The journal of a build, in its folder.
pub const JOURNAL_FILE: &str = "journal.jsonl";
/// What a journal is renamed to once its build holds nothing more to clean up.
pub const RETIRED_JOURNAL_FILE: &str = "journal.retired.jsonl";

/// Appends one event to a journal file.
fn append_line(journal: &Path, resource: &Resource, event: Event) -> Result<()> {
    let line = Line {
        at: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
        event,
        resource: resource.clone(),
    };
    let mut text = serde_json::to_string(&line)
        .map_err(|e| Error::Internal(format!("could not encode a journal entry: {e}")))?;
    text.push('\n');
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(journal)
        .map_err(|e| Error::io("open the journal", journal, e))?;
    file.write_all(text.as_bytes())
        .and_then(|_| file.sync_data())
        .map_err(|e| Error::io("write the journal", journal, e))
}

/// Records, in the journal of a build that is not running (a dead build `kiln gc` cleaned up
/// after), that `resource` is gone. Nothing when the build has no journal here.
pub fn record_removed(build_dir: &Path, resource: &Resource) -> Result<()> {
    let journal = build_dir.join(JOURNAL_FILE);
    if !journal.exists() || is_running(build_dir) {
        return Ok(());
    }
    append_line(&journal, resource, Event::Removed)
}

/// Retires the journal of a build that is not running and holds nothing to clean up (every
/// resource kept or removed): it is renamed, so `kiln gc` no longer reads it; the build's logs
/// and manifest stay. Returns whether it was retired.
pub fn retire_if_done(build_dir: &Path) -> Result<bool> {
    let journal = build_dir.join(JOURNAL_FILE);
    if !journal.exists() || is_running(build_dir) {
        return Ok(false);
    }
    let entries = Ledger::read_journal(&journal)?;
    if entries.iter().any(|(_, event)| *event == Event::Created) {
        return Ok(false);
    }
    let retired = build_dir.join(RETIRED_JOURNAL_FILE);
    std::fs::rename(&journal, &retired)
        .map_err(|e| Error::io("retire the journal", &journal, e))?;
    Ok(true)
}

/// Whether the build whose folder is `build_dir` is running in some process on this machine.
pub fn is_running(build_dir: &Path) -> bool {
    let Ok(file) = std::fs::File::open(build_dir.join(LOCK_FILE)) else {
        return false;
    };
    matches!(file.try_lock(), Err(std::fs::TryLockError::WouldBlock))
}

impl Ledger {
    /// Creates the build's state folder and an empty journal in it.
    pub fn create(build_dir: &Path, build_id: &str) -> Result<Ledger> {
        std::fs::create_dir_all(build_dir)
            .map_err(|e| Error::io("create the state folder", build_dir, e))?;
        let journal = build_dir.join(JOURNAL_FILE);
        std::fs::File::create(&journal)
            .map_err(|e| Error::io("create the journal", &journal, e))?;
        let lock_path = build_dir.join(LOCK_FILE);
        let lock = std::fs::File::create(&lock_path)
            .map_err(|e| Error::io("create the lock file", &lock_path, e))?;
        lock.try_lock().map_err(|e| {
            Error::Refused(format!(
                "build {build_id} is already running here ({}): {e}",
                lock_path.display()
            ))
        })?;
        Ok(Ledger {
            build_id: build_id.to_owned(),
            journal,
            entries: Mutex::new(Vec::new()),
            calls: Mutex::new(Vec::new()),
            _lock: lock,
        })
    }

    pub fn build_id(&self) -> &str {
        &self.build_id
    }

    pub fn journal_path(&self) -> &Path {
        &self.journal
    }

    /// Records that `resource` now exists. Called before anything else happens with it.
    pub fn created(&self, resource: Resource) -> Result<()> {
        self.append(resource, Event::Created)
    }

    /// Runs a create call that makes a `making`, noted as under way until AWS answers (with the
    /// id or an error): a call interrupted before that (its future dropped) stays unanswered,
    /// and teardown searches for what it may have made.
    pub async fn making<T>(&self, making: Making, call: impl std::future::Future<Output = T>) -> T {
        let number = {
            let mut calls = self.calls.lock().unwrap_or_else(|p| p.into_inner());
            let number = calls.iter().map(|(n, _, _)| n + 1).max().unwrap_or(0);
            calls.push((number, making, SystemTime::now()));
            number
        };
        let answer = call.await;
        let mut calls = self.calls.lock().unwrap_or_else(|p| p.into_inner());
        calls.retain(|(n, _, _)| *n != number);
        answer
    }

    /// Create calls that never answered: what each was making, and when it started.
    pub fn unanswered(&self) -> Vec<(Making, SystemTime)> {
        let calls = self.calls.lock().unwrap_or_else(|p| p.into_inner());
        calls.iter().map(|(_, making, at)| (*making, *at)).collect()
    }

    /// When `resource` was recorded as created by this run, if it was.
    pub fn created_at(&self, resource: &Resource) -> Option<SystemTime> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .iter()
            .find(|e| e.resource == *resource)
            .and_then(|e| e.created)
    }

    /// Marks a created resource as a finished product of the build.
    pub fn kept(&self, resource: Resource) -> Result<()> {
        self.append(resource, Event::Kept)
    }

    /// Marks a builder as left running on purpose after a failure.
    pub fn kept_on_error(&self, resource: Resource) -> Result<()> {
        self.append(resource, Event::KeptOnError)
    }

    pub fn removed(&self, resource: Resource) -> Result<()> {
        self.append(resource, Event::Removed)
    }

    fn append(&self, resource: Resource, event: Event) -> Result<()> {
        append_line(&self.journal, &resource, event)?;
        let created = (event == Event::Created).then(SystemTime::now);
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        match entries.iter_mut().find(|e| e.resource == resource) {
            Some(entry) => {
                entry.event = event;
                entry.created = entry.created.or(created);
            }
            None => entries.push(Entry {
                resource,
                event,
                created,
            }),
        }
        Ok(())
    }

    /// Resources to tear down if the build fails now: created, neither kept nor removed, newest
    /// first.
    pub fn to_tear_down(&self) -> Vec<Resource> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .iter()
            .rev()
            .filter(|e| e.event == Event::Created)
            .map(|e| e.resource.clone())
            .collect()
    }

    /// Every resource recorded with its latest event, in creation order.
    pub fn entries(&self) -> Vec<(Resource, Event)> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .iter()
            .map(|e| (e.resource.clone(), e.event))
            .collect()
    }

    /// Reads a journal file back (for `kiln gc` and for tests): every resource with its latest
    /// event, in creation order.
    pub fn read_journal(path: &Path) -> Result<Vec<(Resource, Event)>> {
        Ok(Ledger::read_journal_timed(path)?
            .into_iter()
            .map(|(resource, event, _)| (resource, event))
            .collect())
    }

    /// Like [`Ledger::read_journal`], with the time each resource was first recorded.
    pub fn read_journal_timed(path: &Path) -> Result<Vec<(Resource, Event, Option<SystemTime>)>> {
        let text =
            std::fs::read_to_string(path).map_err(|e| Error::io("read the journal", path, e))?;
        let mut entries: Vec<(Resource, Event, Option<SystemTime>)> = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let Ok(line) = serde_json::from_str::<Line>(line) else {
                continue;
            };
            match entries.iter_mut().find(|(r, _, _)| *r == line.resource) {
                Some(entry) => entry.1 = line.event,
                None => {
                    let at = humantime::parse_rfc3339_weak(&line.at).ok();
                    entries.push((line.resource, line.event, at));
                }
            }
        }
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn teardown_order_is_reverse_creation_without_kept_or_removed() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::create(dir.path(), "b1").unwrap();
        let instance = Resource::Instance {
            id: "i-1".into(),
            region: "r".into(),
        };
        let image = Resource::Image {
            id: "ami-1".into(),
            region: "r".into(),
        };
        let version = Resource::TemplateVersion {
            template_id: "lt-1".into(),
            version: 2,
            region: "r".into(),
        };
        ledger.created(instance.clone()).unwrap();
        ledger.created(image.clone()).unwrap();
        ledger.created(version.clone()).unwrap();
        assert_eq!(
            ledger.to_tear_down(),
            vec![version.clone(), image.clone(), instance.clone()]
        );
        ledger.kept(image.clone()).unwrap();
        ledger.removed(version).unwrap();
        assert_eq!(ledger.to_tear_down(), vec![instance.clone()]);
        assert!(is_running(dir.path()));
        let journal = Ledger::read_journal(ledger.journal_path()).unwrap();
        assert_eq!(journal.len(), 3);
        assert_eq!(journal[1], (image, Event::Kept));
        drop(ledger);
        assert!(!is_running(dir.path()));
    }

    #[tokio::test]
    async fn a_create_call_dropped_before_its_answer_stays_unanswered() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::create(dir.path(), "b1").unwrap();
        assert_eq!(ledger.making(Making::Image, async { 7 }).await, 7);
        assert!(ledger.unanswered().is_empty());
        let interrupted = ledger.making(Making::Instance, std::future::pending::<()>());
        let _ = tokio::time::timeout(std::time::Duration::from_millis(1), interrupted).await;
        let unanswered = ledger.unanswered();
        assert_eq!(unanswered.len(), 1);
        assert_eq!(unanswered[0].0, Making::Instance);
        let instance = Resource::Instance {
            id: "i-1".into(),
            region: "r".into(),
        };
        assert!(Making::Instance.makes(&instance) && !Making::Image.makes(&instance));
    }
}
