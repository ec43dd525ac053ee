//! The pipeline: one module per command ([`build`], [`promote`] for `kiln release`,
//! [`rollback`], [`status`], [`history`], [`prune`], [`gc`]), plus the pieces they share:
//! resolving and waiting for images ([`images`]), driving instances ([`instances`]), running
//! steps ([`steps`], with the scripts of [`script`]), the one release path that build, release
//! and rollback all go through ([`release`]: the launch template version, the group's refresh,
//! the health gate, the hold, the SSM parameter, never deleting a version in use), the
//! builder's instance profile preflight ([`profile`]), the test phase on a fresh instance of
//! the new image ([`tester`]) and removing what a build left ([`teardown`]).
//!
//! Every command takes a [`Context`]: the [`Cloud`] (never the SDK), a [`Reporter`] and the state
//! folder. No clap, no terminal handling here: the CLI layer owns those.

pub mod build;
pub mod consistency;
pub mod failure;
pub mod gc;
pub mod history;
pub mod images;
pub mod instances;
pub mod journal;
pub mod output;
pub mod profile;
pub mod promote;
pub mod prune;
pub mod release;
pub mod resume;
pub mod rollback;
pub mod script;
pub mod sources;
pub mod status;
pub mod steps;
pub mod teardown;
pub mod tester;
pub mod why;

use std::path::PathBuf;
use std::sync::Arc;

use crate::aws::Cloud;
use crate::error::Result;
use crate::report::{Phase, Reporter};

/// What every command needs.
pub struct Context<'a> {
    pub cloud: Arc<dyn Cloud>,
    pub reporter: &'a dyn Reporter,
    /// Where builds keep their journal, logs and manifest (`<state_dir>/builds/<build-id>/`).
    pub state_dir: PathBuf,
}

impl Context<'_> {
    /// Runs `work` as `phase`: reports its start, then its end or failure.
    pub async fn phase<T, F>(&self, phase: Phase, work: F) -> Result<T>
    where
        F: std::future::Future<Output = Result<T>>,
        T: PhaseResult,
    {
        self.reporter.phase_started(&phase);
        match work.await {
            Ok(value) => {
                self.reporter.phase_finished(&phase, &value.summary());
                Ok(value)
            }
            Err(e) => {
                self.reporter
                    .phase_failed(&phase, &first_line(&e.to_string()));
                Err(e)
            }
        }
    }

    /// Reports a new state of what `phase` waits for.
    pub fn progress(&self, phase: &Phase) -> impl Fn(&str) + '_ {
        let phase = phase.clone();
        move |state| self.reporter.phase_progress(&phase, state)
    }
}

/// A phase's result, summarised for its progress line.
pub trait PhaseResult {
    fn summary(&self) -> String;
}

impl PhaseResult for () {
    fn summary(&self) -> String {
        String::new()
    }
}

impl PhaseResult for String {
    fn summary(&self) -> String {
        self.clone()
    }
}

impl PhaseResult for crate::aws::Image {
    fn summary(&self) -> String {
        format!("{} ({})", self.id, self.name)
    }
}

/// The first line of a (possibly multi-line) message.
pub fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_owned()
}

/// UTC now as RFC 3339 with seconds.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}
