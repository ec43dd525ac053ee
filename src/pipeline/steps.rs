//! Recipe steps on the builder, all through SSM Run Command: the scripts of
//! [`super::script`] are sent, each invocation is followed, and every output is kept in the
//! build's log folder.

use std::path::Path;
use std::time::Duration;

use crate::aws::poll::{wait_until_from, Probe, Wait, SSM_POLL_MIN};
use crate::aws::{Cloud, CommandStatus, Invocation, PingStatus, ShellCommand};
use crate::error::{Error, Result};
use crate::pipeline::script::{commands_for, Command};
use crate::plan::{Plan, Step};
use crate::report::{Phase, Reporter};

/// Extra time kiln gives SSM beyond a step's own timeout before it cancels the command.
pub const STEP_GRACE: Duration = Duration::from_secs(60);
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
    /// Runs every command of one step and waits for each; writes outputs to the log folder.
    /// Returns the last line of the step's output.
    pub async fn run(&self, index: usize, step: &Step, phase: &Phase) -> Result<String> {
        let log_path = self
            .log_dir
            .join(format!("{:02}-{}.log", index + 1, slug(&step.name)));
        let mut log = String::new();
        let mut summary = String::new();
        for command in commands_for(step, self.build_id) {
            let (command_id, invocation) = self.execute(step, &command, phase).await?;
            let stdout = self.plan.redact(&invocation.stdout);
            let stderr = self.plan.redact(&invocation.stderr);
            log.push_str(&format!(
                "== {} (command {command_id}) status {} exit {}\n-- stdout\n{stdout}\n-- stderr\n{stderr}\n",
                command.label,
                invocation.status,
                invocation.exit_code.unwrap_or(-1)
            ));
            std::fs::write(&log_path, &log)
                .map_err(|e| Error::io("write the step log", &log_path, e))?;
            self.reporter.step_output(&step.name, &stdout, &stderr);
            if invocation.status != CommandStatus::Success {
                return Err(Error::StepFailed {
                    step: step.name.clone(),
                    instance: self.instance_id.to_owned(),
                    status: invocation.describe_status(),
                    exit_code: invocation.exit_code,
                    stdout_tail: tail(&stdout, TAIL_LINES),
                    stderr_tail: tail(&stderr, TAIL_LINES),
                    log: log_path.display().to_string(),
                });
            }
            summary = last_line(&stdout);
        }
        Ok(summary)
    }

    /// Sends one command and follows it to its end; cancels it when the wait times out.
    async fn execute(
        &self,
        step: &Step,
        command: &Command,
        phase: &Phase,
    ) -> Result<(String, Invocation)> {
        let (cloud, instance_id) = (self.cloud, self.instance_id);
        let command_id = cloud
            .send_command(&ShellCommand {
                instance_id: instance_id.to_owned(),
                script: command.script.clone(),
                execution_timeout_secs: step.timeout.as_secs() + 30,
                comment: format!("kiln {} {}: {}", self.build_id, step.name, command.label),
            })
            .await?;
        let wait = Wait {
            phase: "running a step",
            resource: &format!("step `{}` (command {command_id} on {instance_id})", step.name),
            region: cloud.region(),
            timeout: step.timeout + STEP_GRACE,
            hint: "raise the step's `timeout`, or look at the command in the SSM console (Run Command history)",
        };
        let outcome = wait_until_from(
            SSM_POLL_MIN,
            wait,
            |state| self.reporter.phase_progress(phase, state),
            || async {
                Ok(match cloud.invocation(&command_id, instance_id).await? {
                    Some(inv) if inv.is_finished() => Probe::Done(inv),
                    Some(inv) => Probe::Pending(inv.status.to_string()),
                    None => Probe::Pending("Pending".into()),
                })
            },
        )
        .await;
        match outcome {
            Ok(invocation) => Ok((command_id, invocation)),
            Err(e) => {
                if matches!(e, Error::Timeout { .. }) {
                    let _ = cloud.cancel_command(&command_id, instance_id).await;
                }
                Err(e)
            }
        }
    }
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
