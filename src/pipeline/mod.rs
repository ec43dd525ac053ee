//! The pipeline: one module per command. Each takes a [`Plan`](crate::plan::Plan) (where a recipe
//! is involved), a [`Cloud`], a [`Reporter`] and, for builds, a [`Ledger`](crate::ledger::Ledger).
//! No clap, no terminal handling here: the CLI layer owns those.

pub mod build;
pub mod gc;
pub mod history;
pub mod images;
pub mod prune;
pub mod release;
pub mod rollback;
pub mod script;
pub mod steps;
pub mod teardown;

use std::path::PathBuf;

use crate::aws::sdk::Sdk as Cloud;
use crate::report::Reporter;

/// What every command needs.
pub struct Context<'a> {
    pub cloud: Cloud,
    pub reporter: &'a dyn Reporter,
    /// Where builds keep their journal, logs and manifest (`<state_dir>/builds/<build-id>/`).
    pub state_dir: PathBuf,
}

impl Context<'_> {
    /// Runs `work` as a named phase: reports start, end or failure.
    pub async fn phase<T, F>(&self, name: &str, work: F) -> crate::error::Result<T>
    where
        F: std::future::Future<Output = crate::error::Result<T>>,
        T: PhaseResult,
    {
        self.reporter.phase_started(name);
        match work.await {
            Ok(value) => {
                self.reporter.phase_finished(name, &value.summary());
                Ok(value)
            }
            Err(e) => {
                self.reporter
                    .phase_failed(name, &first_line(&e.to_string()));
                Err(e)
            }
        }
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

impl PhaseResult for crate::aws::sdk::ec2::ImageInfo {
    fn summary(&self) -> String {
        format!("{} ({})", self.id, self.name)
    }
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_owned()
}

/// UTC now as RFC 3339 with seconds.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}
