//! A run step's complete output, followed live: the run wrapper ([`super::script::run_command`])
//! writes everything the step prints to a log file on the builder, and [`LogTail`] reads the new
//! bytes of that file with small read commands ([`read_log_command`]) while the step runs, and
//! the rest once it ends.
//!
//! Why a file read by commands and not CloudWatch Logs: it needs no permission beyond the ones a
//! build already has (the builder's `AmazonSSMManagedInstanceCore` does not allow writing to
//! CloudWatch Logs, and the caller would need `logs:GetLogEvents` and a log group), and it costs
//! nothing when a step is short: the wrapper prints the log's last 20,000 bytes, which is the
//! whole log for most steps. docs/src/building/step-output.md states the calls it adds.
//!
//! Every line is redacted, reported ([`Reporter::step_line`]) and appended to the step's log in
//! the build folder as soon as it is complete, so the local log is whole even for a step whose
//! output is far beyond the 24,000 characters `GetCommandInvocation` returns.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use crate::aws::poll::{wait_after_pause, Probe, Wait, SSM_POLL_MIN};
use crate::aws::{Cloud, CommandStatus, ShellCommand};
use crate::error::{Error, Result};
use crate::pipeline::script::{parse_log_read, parse_wrapper_output, read_log_command};
use crate::plan::Plan;
use crate::report::{Phase, Reporter};

/// The first read of a running step's log comes this long after it started: after the first
/// look at the step's command ([`SSM_POLL_MIN`] ± 20%), so a step that ends within a second
/// costs no read.
pub const LOG_READ_FIRST: Duration = Duration::from_secs(2);
/// Reads come a tenth of the step's running time apart, at most this far.
pub const LOG_READ_MAX_INTERVAL: Duration = Duration::from_secs(10);
/// How long one read command may take before the log is given up on.
const LOG_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// SSM's execution timeout for a read command.
const LOG_READ_EXECUTION_SECS: u64 = 30;

/// Follows one run step's log on the builder.
pub struct LogTail<'a> {
    pub cloud: &'a dyn Cloud,
    pub reporter: &'a dyn Reporter,
    pub plan: &'a Plan,
    pub phase: &'a Phase,
    pub instance_id: &'a str,
    /// The log on the builder.
    pub remote: &'a str,
    /// The step's log in the build folder, appended to line by line.
    pub local: &'a Path,
    /// Bytes of the remote log read so far.
    offset: u64,
    /// The start of a line whose end has not been read yet.
    partial: Vec<u8>,
    /// Every complete line so far, redacted.
    text: String,
}

impl<'a> LogTail<'a> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cloud: &'a dyn Cloud,
        reporter: &'a dyn Reporter,
        plan: &'a Plan,
        phase: &'a Phase,
        instance_id: &'a str,
        remote: &'a str,
        local: &'a Path,
    ) -> Self {
        LogTail {
            cloud,
            reporter,
            plan,
            phase,
            instance_id,
            remote,
            local,
            offset: 0,
            partial: Vec::new(),
            text: String::new(),
        }
    }

    /// The time to wait before the next read of a step that has run for `running`.
    pub fn next_read_in(running: Duration) -> Duration {
        (running / 10).clamp(LOG_READ_FIRST, LOG_READ_MAX_INTERVAL)
    }

    /// Reads what the log gained since the last read (several reads when far behind).
    pub async fn read_new(&mut self) -> Result<()> {
        loop {
            let read = self.read_once().await?;
            let got = read.bytes.len() as u64;
            self.take(&read.bytes)?;
            if got == 0 || self.offset >= read.size {
                return Ok(());
            }
        }
    }

    /// Once the step ended: takes the rest from the wrapper's output when it holds it, else
    /// reads the log to its end. Returns the complete output.
    pub async fn finish(mut self, wrapper_stdout: &str) -> Result<String> {
        match parse_wrapper_output(wrapper_stdout) {
            Some((size, tail))
                if size >= self.offset && size - self.offset <= tail.len() as u64 =>
            {
                let rest = &tail[tail.len() - (size - self.offset) as usize..];
                self.take(rest)?;
            }
            _ => self.read_new().await?,
        }
        let last = std::mem::take(&mut self.partial);
        if !last.is_empty() {
            self.line(&last)?;
        }
        Ok(self.text)
    }

    /// Appends bytes read at the current offset; reports and keeps each line they complete.
    fn take(&mut self, bytes: &[u8]) -> Result<()> {
        self.offset += bytes.len() as u64;
        self.partial.extend_from_slice(bytes);
        while let Some(end) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            self.line(&line[..end])?;
        }
        Ok(())
    }

    fn line(&mut self, raw: &[u8]) -> Result<()> {
        let line = self.plan.redact(&String::from_utf8_lossy(raw));
        let line = line.trim_end_matches('\r');
        self.reporter.step_line(self.phase, line);
        self.text.push_str(line);
        self.text.push('\n');
        append(self.local, &format!("{line}\n"))
    }

    /// One read command, followed to its end.
    async fn read_once(&self) -> Result<crate::pipeline::script::LogRead> {
        let cloud = self.cloud;
        let command_id = cloud
            .send_command(&ShellCommand {
                instance_id: self.instance_id.to_owned(),
                script: read_log_command(self.remote, self.offset),
                execution_timeout_secs: LOG_READ_EXECUTION_SECS,
                comment: format!("kiln read-log {}", self.remote),
            })
            .await?;
        let resource = format!("log {} on {}", self.remote, self.instance_id);
        let wait = Wait {
            phase: "reading a step's log",
            resource: &resource,
            region: cloud.region(),
            timeout: LOG_READ_TIMEOUT,
            hint: "the SSM agent did not run the read command: see the command in the SSM console",
        };
        let invocation = wait_after_pause(
            SSM_POLL_MIN,
            wait,
            |_| {},
            || async {
                Ok(
                    match cloud.invocation(&command_id, self.instance_id).await? {
                        Some(inv) if inv.is_finished() => Probe::Done(inv),
                        Some(inv) => Probe::Pending(inv.status.to_string()),
                        None => Probe::Pending("Pending".into()),
                    },
                )
            },
        )
        .await?;
        let read = (invocation.status == CommandStatus::Success)
            .then(|| parse_log_read(&invocation.stdout))
            .flatten();
        read.ok_or_else(|| {
            Error::Refused(format!(
                "could not read {resource}: {} {}",
                invocation.describe_status(),
                invocation.stderr.trim()
            ))
        })
    }
}

/// Appends `text` to the file at `path`.
pub fn append(path: &Path, text: &str) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io("open the step log", path, e))?;
    file.write_all(text.as_bytes())
        .map_err(|e| Error::io("write the step log", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_come_a_tenth_of_the_running_time_apart_within_bounds() {
        assert_eq!(LogTail::next_read_in(Duration::ZERO), LOG_READ_FIRST);
        assert_eq!(
            LogTail::next_read_in(Duration::from_secs(50)),
            Duration::from_secs(5)
        );
        assert_eq!(
            LogTail::next_read_in(Duration::from_secs(3600)),
            LOG_READ_MAX_INTERVAL
        );
    }
}
