//! Recipe steps on the builder, all through SSM Run Command: the scripts of
//! [`super::script`] are sent, each invocation is followed, and every output is kept in the
//! build's log folder.

use std::path::Path;
use std::time::Duration;

use crate::aws::poll::{jittered, wait_after_pause, wait_until_from, Probe, Wait, SSM_POLL_MIN};
use crate::aws::{
    Cloud, CommandStatus, Invocation, Meaning, PingStatus, ShellCommand, COMMAND_DELIVERY_TIMEOUT,
};
use crate::error::{Error, Result};
use crate::pipeline::first_line;
use crate::pipeline::instances::with_state_reason;
use crate::pipeline::output::{append, LogTail};
use crate::pipeline::script::{builder_log, commands_for, Command};
use crate::plan::{Plan, Step};
use crate::report::{Phase, Reporter};

/// Extra time kiln gives SSM beyond a step's own timeout before it cancels the command.
pub const STEP_GRACE: Duration = Duration::from_secs(60);
/// How long `SendCommand`'s `InvalidInstanceId` is retried (the agent just came online).
pub const SEND_RETRY_WINDOW: Duration = Duration::from_secs(60);
/// How much of a failed step's output goes into the error message.
const TAIL_LINES: usize = 20;

/// Waits until the builder's SSM agent reports `Online`.
pub async fn wait_agent_online(
    cloud: &dyn Cloud,
    instance_id: &str,
    timeout: Duration,
    on_state: impl FnMut(&str),
) -> Result<()> {
    let wait = Wait {
        phase: "waiting for the SSM agent to come online",
        resource: instance_id,
        region: cloud.region(),
        timeout,
        hint: "the usual causes: the instance profile lacks AmazonSSMManagedInstanceCore, the subnet has no route to the SSM endpoints \
               (NAT gateway or VPC endpoints ssm, ssmmessages, ec2messages), or the source image has no SSM agent",
    };
    wait_until_from(SSM_POLL_MIN, wait, on_state, || async {
        Ok(match cloud.agent_status(instance_id).await? {
            Some(PingStatus::Online) => Probe::Done(()),
            Some(status) => Probe::Pending(format!("agent {status}")),
            None => Probe::Pending("agent not registered".into()),
        })
    })
    .await
}

/// What running steps on one builder needs.
pub struct StepRunner<'a> {
    pub cloud: &'a dyn Cloud,
    pub reporter: &'a dyn Reporter,
    pub plan: &'a Plan,
    pub instance_id: &'a str,
    pub build_id: &'a str,
    /// Where each step's output is kept (`NN-step-name.log`).
    pub log_dir: &'a Path,
}

impl StepRunner<'_> {
    /// Runs `steps` in order, each as the phase `phase(index, total, name)`; stops at the first
    /// failure.
    pub async fn run_all(
        &self,
        ctx: &crate::pipeline::Context<'_>,
        steps: &[Step],
        phase: impl Fn(usize, usize, String) -> Phase,
    ) -> Result<()> {
        let total = steps.len();
        for (index, step) in steps.iter().enumerate() {
            let phase = phase(index, total, step.name.clone());
            ctx.phase(phase.clone(), self.run(index, step, &phase))
                .await?;
        }
        Ok(())
    }

    /// Runs every command of one step and waits for each; keeps the complete output in the log
    /// folder. Returns the last line of the step's output.
    pub async fn run(&self, index: usize, step: &Step, phase: &Phase) -> Result<String> {
        let name = format!("{:02}-{}", index + 1, slug(&step.name));
        let log_path = self.log_dir.join(format!("{name}.log"));
        std::fs::write(&log_path, "").map_err(|e| Error::io("write the step log", &log_path, e))?;
        let remote = builder_log(self.build_id, &name);
        let mut summary = String::new();
        for command in commands_for(step, self.build_id, &remote) {
            let command_id = self.send(step, &command).await?;
            append(
                &log_path,
                &format!("== {} (command {command_id})\n", command.label),
            )?;
            let (invocation, output, streamed) = match &command.log {
                Some(remote) => {
                    let tail = LogTail::new(
                        self.cloud,
                        self.reporter,
                        self.plan,
                        phase,
                        self.instance_id,
                        remote,
                        &log_path,
                    );
                    self.follow_streaming(step, &command_id, phase, tail)
                        .await?
                }
                None => {
                    let invocation = self.follow(step, &command_id, phase).await?;
                    let stdout = self.plan.redact(&invocation.stdout);
                    append(&log_path, &stdout)?;
                    (invocation, stdout, false)
                }
            };
            let stderr = self.plan.redact(&invocation.stderr);
            append(&log_path, &end_of_command(&invocation, &stderr))?;
            self.reporter
                .step_output(&step.name, &output, &stderr, streamed);
            if invocation.status != CommandStatus::Success {
                return Err(Error::StepFailed {
                    step: step.name.clone(),
                    instance: self.instance_id.to_owned(),
                    status: invocation.describe_status(),
                    exit_code: invocation.exit_code,
                    stdout_tail: tail(&output, TAIL_LINES),
                    stderr_tail: tail(&stderr, TAIL_LINES),
                    log: log_path.display().to_string(),
                });
            }
            summary = last_line(&output);
        }
        Ok(summary)
    }

    /// `SendCommand`, retrying `InvalidInstanceId` for up to [`SEND_RETRY_WINDOW`]: SSM may
    /// refuse commands for a while after the agent first reports `Online`. A builder that is
    /// gone fails at once, with its state reason.
    async fn send(&self, step: &Step, command: &Command) -> Result<String> {
        let command = &ShellCommand {
            instance_id: self.instance_id.to_owned(),
            script: command.script.clone(),
            execution_timeout_secs: step.timeout.as_secs() + 30,
            comment: format!("kiln {} {}: {}", self.build_id, step.name, command.label),
        };
        let started = tokio::time::Instant::now();
        loop {
            let err = match self.cloud.send_command(command).await {
                Ok(id) => return Ok(id),
                Err(e) if e.meaning() == Some(Meaning::Unreachable) => e,
                Err(e) => return Err(e),
            };
            if let Some(instance) = self.cloud.instance(self.instance_id).await? {
                if instance.state.is_gone() {
                    return Err(Error::BadState {
                        phase: "running a step",
                        resource: self.instance_id.to_owned(),
                        region: self.cloud.region().to_owned(),
                        state: instance.state.to_string(),
                        reason: with_state_reason(
                            "the builder stopped existing during the build",
                            &instance.state_reason,
                        ),
                    });
                }
            }
            if started.elapsed() >= SEND_RETRY_WINDOW {
                return Err(err);
            }
            tokio::time::sleep(jittered(SSM_POLL_MIN)).await;
        }
    }

    /// Follows a run command while reading its log on the builder; returns the invocation, the
    /// complete output and whether it was streamed. When the log cannot be read, the output is
    /// what SSM kept, with a warning.
    async fn follow_streaming(
        &self,
        step: &Step,
        command_id: &str,
        phase: &Phase,
        mut tail: LogTail<'_>,
    ) -> Result<(Invocation, String, bool)> {
        let started = tokio::time::Instant::now();
        let follow = self.follow(step, command_id, phase);
        tokio::pin!(follow);
        let mut streaming = true;
        let invocation = loop {
            let pause = LogTail::next_read_in(started.elapsed());
            tokio::select! {
                done = &mut follow => break done?,
                _ = tokio::time::sleep(pause), if streaming => {
                    match tail.read_new().await {
                        // The agent is offline while the instance reboots (a script's exit
                        // 194): the next read, after the reboot, goes on where this one was.
                        Err(e) if e.meaning() == Some(Meaning::Unreachable) => {}
                        Err(e) => {
                            self.log_unreadable(step, &e);
                            streaming = false;
                        }
                        Ok(()) => {}
                    }
                }
            }
        };
        match tail.finish(&invocation.stdout).await {
            Ok(output) => Ok((invocation, output, true)),
            Err(e) => {
                self.log_unreadable(step, &e);
                let stdout = self.plan.redact(&invocation.stdout);
                Ok((invocation, stdout, false))
            }
        }
    }

    fn log_unreadable(&self, step: &Step, error: &Error) {
        self.reporter.warning(&format!(
            "step `{}`: {}; its output is what SSM kept (the first 24,000 characters)",
            step.name,
            first_line(&error.to_string())
        ));
    }

    /// Follows a sent command: first until the agent has it (`InProgress`), within SSM's
    /// delivery timeout, then for the step's own timeout (plus [`STEP_GRACE`]) from delivery.
    /// Cancels the command when a wait times out.
    async fn follow(&self, step: &Step, command_id: &str, phase: &Phase) -> Result<Invocation> {
        let outcome = self.follow_to_end(step, command_id, phase).await;
        if matches!(outcome, Err(Error::Timeout { .. })) {
            let _ = self
                .cloud
                .cancel_command(command_id, self.instance_id)
                .await;
        }
        outcome
    }

    async fn follow_to_end(
        &self,
        step: &Step,
        command_id: &str,
        phase: &Phase,
    ) -> Result<Invocation> {
        let (cloud, instance_id) = (self.cloud, self.instance_id);
        let resource = format!(
            "step `{}` (command {command_id} on {instance_id})",
            step.name
        );
        let look = |until_started: bool| async move {
            Ok(match cloud.invocation(command_id, instance_id).await? {
                Some(inv) if inv.is_finished() => Probe::Done(inv),
                Some(inv) if until_started && inv.status == CommandStatus::InProgress => {
                    Probe::Done(inv)
                }
                Some(inv) => Probe::Pending(inv.status.to_string()),
                None => Probe::Pending("Pending".into()),
            })
        };
        let progress = |state: &str| self.reporter.phase_progress(phase, state);
        let delivery = Wait {
            phase: "delivering a step's command",
            resource: &resource,
            region: cloud.region(),
            timeout: COMMAND_DELIVERY_TIMEOUT + STEP_GRACE,
            hint: "SSM could not hand the command to the builder's agent: check that the agent is still online (Fleet Manager) and the instance is running",
        };
        // Right after SendCommand there is nothing to see yet (GetCommandInvocation may even
        // answer InvocationDoesNotExist): the first look comes after a pause.
        let started = wait_after_pause(SSM_POLL_MIN, delivery, progress, || look(true)).await?;
        if started.is_finished() {
            return Ok(started);
        }
        let wait = Wait {
            phase: "running a step",
            resource: &resource,
            region: cloud.region(),
            timeout: step.timeout + STEP_GRACE,
            hint: "raise the step's `timeout`, or look at the command in the SSM console (Run Command history)",
        };
        wait_after_pause(SSM_POLL_MIN, wait, progress, || look(false)).await
    }
}

/// The log's line after a command: its status, exit code and SSM's stderr.
fn end_of_command(invocation: &Invocation, stderr: &str) -> String {
    let mut text = format!(
        "== status {} exit {}\n",
        invocation.status,
        invocation.exit_code.unwrap_or(-1)
    );
    if !stderr.trim().is_empty() {
        text.push_str(&format!("-- stderr\n{}\n", stderr.trim_end()));
    }
    text
}

/// The last non-empty line of `text`, at most 100 characters.
fn last_line(text: &str) -> String {
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default()
        .chars()
        .take(100)
        .collect()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A file-name-safe form of a step name.
pub fn slug(name: &str) -> String {
    let slug: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let slug = slug
        .split('-')
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("-");
    slug.chars().take(48).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_file_names() {
        assert_eq!(
            slug("Install the Transformer (v1.2)"),
            "install-the-transformer-v1-2"
        );
    }
}
