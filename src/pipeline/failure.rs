//! What a failed or interrupted build reports as data: the [`FailureReport`] that `kiln build
//! --json` prints on stdout (so CI has one document to pick up, success or not), built from the
//! typed values the pipeline already has: the [`Phase`] that failed (or was running when a signal
//! came) and the [`Cleanup`] list of the teardown.
//!
//! [`PhaseTracker`] is a [`Reporter`] that passes every event on and remembers which phase
//! failed; `build::run` puts it in front of the caller's reporter.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;
use tokio::time::Instant;

use crate::aws::counting::Service;

use crate::error::Error;
use crate::pipeline::teardown::Cleanup;
use crate::report::{Phase, Reporter};

/// A failed or interrupted build, as data.
#[derive(Debug, Clone, Serialize)]
pub struct FailureReport {
    pub build_id: String,
    pub recipe: String,
    pub version: String,
    /// Always `true`: tells this document from a manifest.
    pub failed: bool,
    /// `SIGINT` or `SIGTERM` when a signal stopped the build.
    pub interrupted: Option<String>,
    /// The phase that failed, or was running when the signal came (`step 3/5: install`).
    pub failed_phase: Option<String>,
    /// The step's name, when that phase was a step.
    pub failed_step: Option<String>,
    /// The error, without the cleanup lines (those are in `cleanup`).
    pub error: String,
    /// The build's folder (journal, step logs); `null` when the build failed before creating
    /// anything.
    pub log_dir: Option<String>,
    pub cleanup: CleanupReport,
    /// Where the time and the API calls went, up to the failure and through cleanup.
    pub summary: BuildSummary,
}

/// What teardown did after the failure.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CleanupReport {
    /// Whether teardown ran (it does not when nothing had been created).
    pub ran: bool,
    /// Everything found was removed (or rightly kept).
    pub complete: bool,
    /// One entry per resource: `{resource: {kind, id, region}, outcome}`.
    pub resources: Vec<Cleanup>,
    /// What else happened: a phase's own undo (a refresh rolled back), a failed search for
    /// leftovers, a cleanup abandoned after a second signal.
    pub notes: Vec<String>,
    /// The builder left running on purpose (`--on-error=abort`), with what to do with it.
    pub kept_builder: Option<KeptBuilder>,
}

/// A builder left running after a failure, and the commands that use or remove it.
#[derive(Debug, Clone, Serialize)]
pub struct KeptBuilder {
    pub instance_id: String,
    pub region: String,
    /// The failed step's log (or the build folder).
    pub log: String,
    pub session_command: String,
    pub resume_command: String,
    pub remove_command: String,
}

impl KeptBuilder {
    /// `build_command` is `kiln build RECIPE` with the flags the build needs again
    /// ([`crate::plan::Plan::command_hint`]).
    pub fn new(
        instance_id: &str,
        region: &str,
        log: &str,
        build_command: &str,
        build_id: &str,
    ) -> Self {
        KeptBuilder {
            instance_id: instance_id.to_owned(),
            region: region.to_owned(),
            log: log.to_owned(),
            session_command: format!(
                "aws ssm start-session --target {instance_id} --region {region}"
            ),
            resume_command: format!("{build_command} --resume {build_id} --region {region}"),
            remove_command: format!(
                "aws ec2 terminate-instances --instance-ids {instance_id} --region {region}"
            ),
        }
    }

    /// The lines the error message shows.
    pub fn lines(&self) -> Vec<String> {
        vec![
            format!(
                "kept builder {} ({}) running on purpose (--on-error=abort); `kiln gc` removes it once it is older than --older-than",
                self.instance_id, self.region
            ),
            format!("  connect:  {}", self.session_command),
            format!("  log:      {}", self.log),
            format!("  resume:   {}", self.resume_command),
            format!("  remove:   {}", self.remove_command),
        ]
    }
}

impl FailureReport {
    /// The report of `error`, given the phase that failed and what cleanup did.
    pub fn new(
        identity: (&str, &str, &str),
        error: &Error,
        failed_phase: Option<Phase>,
        log_dir: Option<String>,
        cleanup: CleanupReport,
    ) -> FailureReport {
        let (build_id, recipe, version) = identity;
        let primary = match error {
            Error::Build { primary, .. } => primary.as_ref(),
            other => other,
        };
        let interrupted = match primary {
            Error::Interrupted { signal } => Some((*signal).to_owned()),
            _ => None,
        };
        let failed_step = match &failed_phase {
            Some(Phase::Step { name, .. }) => Some(name.clone()),
            _ => None,
        };
        FailureReport {
            build_id: build_id.to_owned(),
            recipe: recipe.to_owned(),
            version: version.to_owned(),
            failed: true,
            interrupted,
            failed_phase: failed_phase.map(|phase| phase.to_string()),
            failed_step,
            error: primary.to_string(),
            log_dir,
            cleanup,
            summary: BuildSummary::default(),
        }
    }
}

/// A failed build: the error (for the message and the exit code) and its report.
#[derive(Debug)]
pub struct Failed {
    pub error: Error,
    pub report: FailureReport,
}

/// Passes every event to `inner` and remembers the phase that failed, or else the last phase
/// that started and has not ended (the one a signal interrupted). Cleanup is not a build phase.
pub struct PhaseTracker<'a> {
    inner: &'a dyn Reporter,
    running: Mutex<Vec<(Phase, Instant)>>,
    failed: Mutex<Option<Phase>>,
    /// How long each phase that ended took, in the order they ended.
    took: Mutex<Vec<PhaseTime>>,
}

/// How long one phase took (for the end-of-build summary).
#[derive(Debug, Clone, Serialize)]
pub struct PhaseTime {
    pub phase: String,
    pub seconds: f64,
}

/// Where a build's time and API calls went.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BuildSummary {
    /// Every phase that ended, in the order it ended.
    pub phases: Vec<PhaseTime>,
    /// kiln's calls per AWS service (`EC2`, `SSM`, `Auto Scaling`).
    pub requests: BTreeMap<Service, u64>,
    pub total_requests: u64,
}

impl BuildSummary {
    pub fn new(phases: Vec<PhaseTime>, requests: BTreeMap<Service, u64>) -> BuildSummary {
        let total_requests = requests.values().sum();
        BuildSummary {
            phases,
            requests,
            total_requests,
        }
    }
}

impl<'a> PhaseTracker<'a> {
    pub fn new(inner: &'a dyn Reporter) -> Self {
        PhaseTracker {
            inner,
            running: Mutex::new(Vec::new()),
            failed: Mutex::new(None),
            took: Mutex::new(Vec::new()),
        }
    }

    /// The phase to blame: the first that failed, else the newest still running.
    pub fn culprit(&self) -> Option<Phase> {
        let failed = lock(&self.failed).clone();
        failed.or_else(|| lock(&self.running).last().map(|(phase, _)| phase.clone()))
    }

    /// A signal stopped the build: finishes every phase still running as interrupted, so its
    /// progress line ends before the cleanup lines.
    pub fn interrupted(&self, signal: &str) {
        let running: Vec<Phase> = lock(&self.running).iter().map(|(p, _)| p.clone()).collect();
        for phase in running.iter().rev() {
            self.ended(phase);
            self.inner
                .phase_failed(phase, &format!("interrupted by {signal}"));
        }
    }

    /// How long each phase that ended took.
    pub fn phase_times(&self) -> Vec<PhaseTime> {
        lock(&self.took).clone()
    }

    fn ended(&self, phase: &Phase) {
        let mut running = lock(&self.running);
        if let Some(at) = running.iter().position(|(running, _)| running == phase) {
            let (phase, started) = running.remove(at);
            lock(&self.took).push(PhaseTime {
                phase: phase.to_string(),
                seconds: started.elapsed().as_secs_f64(),
            });
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Reporter for PhaseTracker<'_> {
    fn phase_started(&self, phase: &Phase) {
        lock(&self.running).push((phase.clone(), Instant::now()));
        self.inner.phase_started(phase);
    }
    fn phase_progress(&self, phase: &Phase, state: &str) {
        self.inner.phase_progress(phase, state);
    }
    fn phase_finished(&self, phase: &Phase, result: &str) {
        self.ended(phase);
        self.inner.phase_finished(phase, result);
    }
    fn phase_failed(&self, phase: &Phase, message: &str) {
        self.ended(phase);
        if *phase != Phase::Cleanup {
            lock(&self.failed).get_or_insert_with(|| phase.clone());
        }
        self.inner.phase_failed(phase, message);
    }
    fn step_line(&self, phase: &Phase, line: &str) {
        self.inner.step_line(phase, line);
    }
    fn step_output(&self, step: &str, stdout: &str, stderr: &str, streamed: bool) {
        self.inner.step_output(step, stdout, stderr, streamed);
    }
    fn notice(&self, message: &str) {
        self.inner.notice(message);
    }
    fn warning(&self, message: &str) {
        self.inner.warning(message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Recorder;

    #[test]
    fn the_culprit_is_the_failed_phase_or_the_one_still_running() {
        let recorder = Recorder::default();
        let tracker = PhaseTracker::new(&recorder);
        tracker.phase_started(&Phase::LaunchBuilder);
        tracker.phase_finished(&Phase::LaunchBuilder, "i-1");
        tracker.phase_started(&Phase::WaitImage);
        assert_eq!(tracker.culprit(), Some(Phase::WaitImage));
        let step = Phase::Step {
            index: 1,
            total: 2,
            name: "install".into(),
        };
        tracker.phase_started(&step);
        tracker.phase_failed(&step, "exit 1");
        tracker.phase_started(&Phase::Cleanup);
        tracker.phase_failed(&Phase::Cleanup, "abandoned");
        assert_eq!(tracker.culprit(), Some(step));
        assert_eq!(recorder.events().len(), 7);
    }
}
