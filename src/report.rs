//! The Reporter: how the pipeline tells the world what it is doing, without knowing how it is
//! shown. The CLI implements it with progress bars, plain lines or silence; tests can collect
//! the events. Nothing here prints.
//!
//! Texts passed to a reporter are already redacted (secrets replaced by `***`).

/// Receives the pipeline's progress. Every method has a no-op default.
pub trait Reporter: Send + Sync {
    /// A phase began (`launch builder`, `step 2/5: install transformer`, ...).
    fn phase_started(&self, _phase: &str) {}
    /// A phase reports a new state of what it waits for (`pending`, `InProgress`...).
    fn phase_progress(&self, _phase: &str, _state: &str) {}
    /// A phase ended well, with a short result (`i-0abc`, `ami-0def`).
    fn phase_finished(&self, _phase: &str, _result: &str) {}
    /// A phase failed; the error itself is returned to the caller.
    fn phase_failed(&self, _phase: &str, _message: &str) {}
    /// Output of a finished step.
    fn step_output(&self, _step: &str, _stdout: &str, _stderr: &str) {}
    /// Something the user must not miss (an image reused instead of built, a refresh failed).
    fn notice(&self, _message: &str) {}
    /// Something that went wrong but did not stop the command (a teardown problem).
    fn warning(&self, _message: &str) {}
}

/// Shows nothing.
pub struct Silent;

impl Reporter for Silent {}
