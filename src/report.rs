//! The Reporter: how the pipeline tells the world what it is doing, without knowing how it is
//! shown. The CLI implements it with progress bars, plain lines or silence; tests record the
//! events ([`Recorder`]). Nothing here prints.
//!
//! Phases are values ([`Phase`]), not names: progress lines, summaries and tests refer to a phase
//! by value, and two steps with one name are still two phases. Texts passed to a reporter are
//! already redacted (secrets replaced by `***`).

use std::fmt;
use std::sync::Mutex;

/// One phase of a command, in the order a build goes through them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Phase {
    ResolveSource,
    LaunchBuilder,
    WaitBuilderRunning,
    WaitAgent,
    /// Step `index` (0-based) of `total`.
    Step {
        index: usize,
        total: usize,
        name: String,
    },
    StopBuilder,
    /// The test phase: a new instance of the new image.
    LaunchTester,
    WaitTester,
    /// Test step `index` (0-based) of `total`.
    TestStep {
        index: usize,
        total: usize,
        name: String,
    },
    TerminateTester,
    CreateImage,
    WaitImage,
    /// Settings on the finished image (IMDSv2 required).
    ImageSettings,
    TerminateBuilder,
    CopyToRegions,
    /// Deregistration protection on the kept image and its copies.
    ProtectImages,
    ShareImage,
    Release,
    PublishParameter,
    InstanceRefresh {
        group: String,
    },
    Cleanup,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Phase::ResolveSource => f.write_str("resolve source image"),
            Phase::LaunchBuilder => f.write_str("launch builder"),
            Phase::WaitBuilderRunning => f.write_str("wait for builder to run"),
            Phase::WaitAgent => f.write_str("wait for SSM agent"),
            Phase::Step { index, total, name } => write!(f, "step {}/{total}: {name}", index + 1),
            Phase::StopBuilder => f.write_str("stop builder"),
            Phase::LaunchTester => f.write_str("launch tester"),
            Phase::WaitTester => f.write_str("wait for tester (running, SSM agent)"),
            Phase::TestStep { index, total, name } => {
                write!(f, "test {}/{total}: {name}", index + 1)
            }
            Phase::TerminateTester => f.write_str("terminate tester"),
            Phase::CreateImage => f.write_str("create image"),
            Phase::WaitImage => f.write_str("wait for image"),
            Phase::ImageSettings => f.write_str("image settings"),
            Phase::TerminateBuilder => f.write_str("terminate builder"),
            Phase::CopyToRegions => f.write_str("copy to regions"),
            Phase::ProtectImages => f.write_str("protect images"),
            Phase::ShareImage => f.write_str("share image"),
            Phase::Release => f.write_str("release to launch template"),
            Phase::PublishParameter => f.write_str("publish SSM parameter"),
            Phase::InstanceRefresh { group } => write!(f, "instance refresh of {group}"),
            Phase::Cleanup => f.write_str("cleanup"),
        }
    }
}

/// Receives the pipeline's progress. Every method has a no-op default.
pub trait Reporter: Send + Sync {
    /// A phase began.
    fn phase_started(&self, _phase: &Phase) {}
    /// A phase reports a new state of what it waits for (`pending`, `InProgress`...).
    fn phase_progress(&self, _phase: &Phase, _state: &str) {}
    /// A phase ended well, with a short result (`i-0abc`, `ami-0def`).
    fn phase_finished(&self, _phase: &Phase, _result: &str) {}
    /// A phase failed; the error itself is returned to the caller.
    fn phase_failed(&self, _phase: &Phase, _message: &str) {}
    /// One line of a running step's output, as soon as it is read (redacted).
    fn step_line(&self, _phase: &Phase, _line: &str) {}
    /// Output of a finished step command; `streamed` when its lines went to `step_line` first.
    fn step_output(&self, _step: &str, _stdout: &str, _stderr: &str, _streamed: bool) {}
    /// Something the user must not miss (an image reused instead of built, a refresh failed).
    fn notice(&self, _message: &str) {}
    /// Something that went wrong but did not stop the command (a teardown problem).
    fn warning(&self, _message: &str) {}
}

/// One event a [`Recorder`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Started(Phase),
    Progress(Phase, String),
    Finished(Phase, String),
    Failed(Phase, String),
    StepLine(Phase, String),
    StepOutput(String),
    Notice(String),
    Warning(String),
}

/// Keeps every event, in order (for tests and for anything that wants a transcript).
#[derive(Debug, Default)]
pub struct Recorder(Mutex<Vec<Event>>);

impl Recorder {
    pub fn events(&self) -> Vec<Event> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The phases that started, in order.
    pub fn started(&self) -> Vec<Phase> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Started(phase) => Some(phase),
                _ => None,
            })
            .collect()
    }

    fn push(&self, event: Event) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(event);
    }
}

impl Reporter for Recorder {
    fn phase_started(&self, phase: &Phase) {
        self.push(Event::Started(phase.clone()));
    }
    fn phase_progress(&self, phase: &Phase, state: &str) {
        self.push(Event::Progress(phase.clone(), state.to_owned()));
    }
    fn phase_finished(&self, phase: &Phase, result: &str) {
        self.push(Event::Finished(phase.clone(), result.to_owned()));
    }
    fn phase_failed(&self, phase: &Phase, message: &str) {
        self.push(Event::Failed(phase.clone(), message.to_owned()));
    }
    fn step_line(&self, phase: &Phase, line: &str) {
        self.push(Event::StepLine(phase.clone(), line.to_owned()));
    }
    fn step_output(&self, step: &str, _stdout: &str, _stderr: &str, _streamed: bool) {
        self.push(Event::StepOutput(step.to_owned()));
    }
    fn notice(&self, message: &str) {
        self.push(Event::Notice(message.to_owned()));
    }
    fn warning(&self, message: &str) {
        self.push(Event::Warning(message.to_owned()));
    }
}
