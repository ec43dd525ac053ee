//! The CLI's [`Reporter`]: indicatif spinners on a terminal, timestamped plain lines elsewhere
//! (CI, pipes, `--no-progress`, `-v`), notices and warnings only with `-q`. Everything goes to
//! stderr, `--json` or not: stdout is for results.
//!
//! In plain mode a running step's output lines are printed as they are read from the builder
//! (every [`LOG_READ_FIRST`](crate::pipeline::output::LOG_READ_FIRST) to
//! [`LOG_READ_MAX_INTERVAL`](crate::pipeline::output::LOG_READ_MAX_INTERVAL)), each with its
//! time, so a CI log shows when each line came; the step's end repeats none of them.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::report::{Phase, Reporter};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Spinners with elapsed time, one line per phase.
    Bars,
    /// One timestamped line per event.
    Plain,
    /// Notices, warnings and failures only.
    Quiet,
}

/// How much of a step's output is shown in each mode (all of it is in the log folder).
const STEP_OUTPUT_LINES: usize = 10;
/// How much of a running step's latest output line its spinner shows.
const LATEST_LINE_CHARS: usize = 80;

pub struct Progress {
    mode: Mode,
    verbose: bool,
    multi: MultiProgress,
    bars: Mutex<HashMap<Phase, (ProgressBar, Instant)>>,
    plain_started: Mutex<HashMap<Phase, Instant>>,
}

impl Progress {
    pub fn new(mode: Mode, verbose: bool) -> Progress {
        let multi = MultiProgress::with_draw_target(if mode == Mode::Bars {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        });
        Progress {
            mode,
            verbose,
            multi,
            bars: Mutex::new(HashMap::new()),
            plain_started: Mutex::new(HashMap::new()),
        }
    }

    fn line(&self, text: &str) {
        if self.mode == Mode::Bars {
            let _ = self.multi.println(text);
        } else {
            let _ = writeln!(std::io::stderr(), "{text}");
        }
    }

    fn plain(&self, text: &str) {
        self.line(&format!(
            "{}  {text}",
            humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        ));
    }

    /// Changes the text of a phase's spinner, if it has one.
    fn set_bar_message(&self, phase: &Phase, message: String) {
        let bars = self.bars.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((bar, _)) = bars.get(phase) {
            bar.set_message(message);
        }
    }

    /// Replaces a phase's spinner by a final line: `text` and the time the phase took.
    fn finish_bar(&self, phase: &Phase, text: &str) {
        let removed = self
            .bars
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(phase);
        if let Some((bar, started)) = removed {
            bar.set_style(
                ProgressStyle::with_template("{msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.finish_with_message(format!("{text} ({})", seconds(started.elapsed())));
        }
    }

    fn spinner_style() -> ProgressStyle {
        ProgressStyle::with_template("{spinner:.cyan} {msg} {elapsed:.dim}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner())
    }
}

fn seconds(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

impl Reporter for Progress {
    fn phase_started(&self, phase: &Phase) {
        match self.mode {
            Mode::Bars => {
                let bar = self.multi.add(ProgressBar::new_spinner());
                bar.set_style(Self::spinner_style());
                bar.set_message(phase.to_string());
                bar.enable_steady_tick(Duration::from_millis(120));
                self.bars
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(phase.clone(), (bar, Instant::now()));
            }
            Mode::Plain => {
                self.plain_started
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(phase.clone(), Instant::now());
                self.plain(&format!("{phase} ..."));
            }
            Mode::Quiet => {}
        }
    }

    fn phase_progress(&self, phase: &Phase, state: &str) {
        match self.mode {
            Mode::Bars => {
                self.set_bar_message(phase, format!("{phase} ({state})"));
            }
            Mode::Plain if self.verbose => self.plain(&format!("{phase}: {state}")),
            _ => {}
        }
    }

    fn phase_finished(&self, phase: &Phase, result: &str) {
        let sep = if result.is_empty() { "" } else { ": " };
        match self.mode {
            Mode::Bars => self.finish_bar(phase, &format!("✓ {phase}{sep}{result}")),
            Mode::Plain => {
                let took = self
                    .plain_started
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(phase)
                    .map(|s| seconds(s.elapsed()));
                self.plain(&format!(
                    "{phase} done{sep}{result} ({})",
                    took.unwrap_or_default()
                ));
            }
            Mode::Quiet => {}
        }
    }

    fn phase_failed(&self, phase: &Phase, message: &str) {
        match self.mode {
            Mode::Bars => self.finish_bar(phase, &format!("✗ {phase}: {message}")),
            Mode::Plain => self.plain(&format!("{phase} FAILED: {message}")),
            Mode::Quiet => {}
        }
    }

    fn step_line(&self, phase: &Phase, line: &str) {
        match self.mode {
            Mode::Bars => {
                let line: String = line.chars().take(LATEST_LINE_CHARS).collect();
                self.set_bar_message(phase, format!("{phase} │ {line}"));
            }
            // Streamed as read, with the time it came, `-v` or not.
            Mode::Plain => self.plain(&format!("  │ {line}")),
            Mode::Quiet => {}
        }
    }

    fn step_output(&self, step: &str, stdout: &str, stderr: &str, streamed: bool) {
        if self.mode == Mode::Quiet {
            return;
        }
        // Plain lines showed a streamed output line by line already.
        let stdout = if streamed && self.mode == Mode::Plain {
            ""
        } else {
            stdout
        };
        let label = if streamed { "output" } else { "stdout" };
        for (stream, text) in [(label, stdout), ("stderr", stderr)] {
            let lines: Vec<&str> = text.lines().collect();
            if lines.is_empty() {
                continue;
            }
            let shown = if self.verbose {
                &lines[..]
            } else {
                &lines[lines.len().saturating_sub(STEP_OUTPUT_LINES)..]
            };
            let skipped = lines.len() - shown.len();
            let mut block = format!(
                "  ┌ {step} ({stream}{})",
                if skipped > 0 {
                    format!(", last {} lines", shown.len())
                } else {
                    String::new()
                }
            );
            for line in shown {
                block.push_str(&format!("\n  │ {line}"));
            }
            self.line(&block);
        }
    }

    fn notice(&self, message: &str) {
        self.line(&format!("note: {message}"));
    }

    /// Shown in every mode: a warning is what must not pass unseen (a held release, a group
    /// without ELB health checks).
    fn warning(&self, message: &str) {
        self.line(&format!("warning: {message}"));
    }
}
