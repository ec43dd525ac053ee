//! The journal of a command that releases outside a build (`kiln release`, `kiln rollback`):
//! like a build's, it records the launch template version the command creates and the refresh
//! it starts, and when the command fails or is interrupted, a teardown undoes what is left (a
//! refresh still running is rolled back; a version nothing uses is removed). The CLI only hands
//! it the command's future and its interrupts.

use std::path::Path;

use crate::error::{Error, Result};
use crate::ledger::Ledger;
use crate::pipeline::build::Interrupts;
use crate::pipeline::teardown::tear_down;
use crate::pipeline::Context;

/// A command's journal, under `<state_dir>/builds/<id>/` like a build's (so `kiln gc` reads it).
pub struct CommandJournal {
    pub ledger: Ledger,
    template: String,
}

impl CommandJournal {
    /// A new journal with a fresh id, for a command that releases to `template`.
    pub fn open(state_dir: &Path, id: &str, template: &str) -> Result<CommandJournal> {
        let dir = state_dir.join("builds").join(id);
        Ok(CommandJournal {
            ledger: Ledger::create(&dir, id)?,
            template: template.to_owned(),
        })
    }

    /// Runs `work`; when it fails or an interrupt arrives, tears down what the journal holds and
    /// returns the error with what teardown did.
    pub async fn guard<T>(
        &self,
        ctx: &Context<'_>,
        interrupts: &mut Interrupts,
        work: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let primary = tokio::select! {
            r = work => match r {
                Ok(value) => return Ok(value),
                Err(e) => e,
            },
            signal = interrupts.next() => Error::Interrupted { signal },
        };
        let cloud = ctx.cloud.as_ref();
        let progress = |state: &str| {
            ctx.reporter
                .phase_progress(&crate::report::Phase::Cleanup, state)
        };
        let teardown = tear_down(cloud, &self.ledger, Some(&self.template), &progress).await;
        let lines = teardown.lines();
        if lines.is_empty() {
            return Err(primary);
        }
        Err(primary.with_cleanup(lines))
    }
}
