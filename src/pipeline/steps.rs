//! Recipe steps on the builder, all through SSM Run Command: the scripts of
//! [`super::script`] are sent, each invocation is followed, and every output is kept in the
//! build's log folder.

use std::path::Path;
use std::time::Duration;

use crate::aws::poll::{wait_until, Probe, Wait};
use crate::aws::sdk::{ssm, Sdk as Cloud};
use crate::error::{Error, Result};
use crate::pipeline::script::commands_for;
use crate::plan::{Plan, Step};
use crate::report::Reporter;

/// Extra time kiln gives SSM beyond a step's own timeout before it cancels the command.
pub const STEP_GRACE: Duration = Duration::from_secs(60);
/// How much of a failed step's output goes into the error message.
const TAIL_LINES: usize = 20;

/// Waits until the builder's SSM agent reports `Online`.
pub async fn wait_agent_online(
    cloud: &Cloud,
    instance_id: &str,
    timeout: Duration,
    on_state: impl FnMut(&str),
) -> Result<()> {
    let wait = Wait {
        phase: "waiting for the SSM agent to come online",
        resource: instance_id,
        region: &cloud.region,
        timeout,
        hint: "the usual causes: the instance profile lacks AmazonSSMManagedInstanceCore, the subnet has no route to the SSM endpoints \
               (NAT gateway or VPC endpoints ssm, ssmmessages, ec2messages), or the source image has no SSM agent",
    };
    wait_until(wait, on_state, || async {
        Ok(match ssm::agent_ping_status(cloud, instance_id).await? {
            Some(status) if status == "Online" => Probe::Done(()),
            Some(status) => Probe::Pending(format!("agent {status}")),
            None => Probe::Pending("agent not registered".into()),
        })
    })
    .await
}

/// What running steps on one builder needs.
pub struct StepRunner<'a> {
    pub cloud: &'a Cloud,
    pub reporter: &'a dyn Reporter,
    pub plan: &'a Plan,
    pub instance_id: &'a str,
    pub build_id: &'a str,
    /// Where each step's output is kept (`NN-step-name.log`).
    pub log_dir: &'a Path,
}

impl StepRunner<'_> {
    /// Runs every command of one step and waits for each; writes outputs to the log folder.
    pub async fn run(&self, index: usize, step: &Step, phase: &str) -> Result<String> {
        let StepRunner {
            cloud,
            reporter,
            plan,
            instance_id,
            build_id,
            log_dir,
        } = *self;
        let log_path = log_dir.join(format!("{:02}-{}.log", index + 1, slug(&step.name)));
        let mut log = String::new();
        let mut summary = String::new();
        for command in commands_for(step, build_id) {
            let comment = format!("kiln {build_id} {}: {}", step.name, command.label);
            let command_id = ssm::send_shell(
                cloud,
                instance_id,
                command.script,
                step.timeout.as_secs() + 30,
                &comment,
            )
            .await?;
            let wait = Wait {
                phase: "running a step",
                resource: &format!("step `{}` (command {command_id} on {instance_id})", step.name),
                region: &cloud.region,
                timeout: step.timeout + STEP_GRACE,
                hint: "raise the step's `timeout`, or look at the command in the SSM console (Run Command history)",
            };
            let outcome = wait_until(
                wait,
                |state| reporter.phase_progress(phase, state),
                || async {
                    Ok(
                        match ssm::invocation(cloud, &command_id, instance_id).await? {
                            Some(inv) if inv.is_finished() => Probe::Done(inv),
                            Some(inv) => Probe::Pending(inv.status),
                            None => Probe::Pending("Pending".into()),
                        },
                    )
                },
            )
            .await;
            let invocation = match outcome {
                Ok(inv) => inv,
                Err(e) => {
                    if matches!(e, Error::Timeout { .. }) {
                        let _ = ssm::cancel_command(cloud, &command_id, instance_id).await;
                    }
                    return Err(e);
                }
            };
            let stdout = plan.redact(&invocation.stdout);
            let stderr = plan.redact(&invocation.stderr);
            log.push_str(&format!(
                "== {} (command {command_id}) status {} exit {}\n-- stdout\n{stdout}\n-- stderr\n{stderr}\n",
                command.label, invocation.status, invocation.exit_code
            ));
            std::fs::write(&log_path, &log)
                .map_err(|e| Error::io("write the step log", &log_path, e))?;
            reporter.step_output(&step.name, &stdout, &stderr);
            if invocation.status != "Success" {
                return Err(Error::StepFailed {
                    step: step.name.clone(),
                    instance: instance_id.to_owned(),
                    status: if invocation.status_details.is_empty()
                        || invocation.status_details == invocation.status
                    {
                        invocation.status.clone()
                    } else {
                        format!("{} ({})", invocation.status, invocation.status_details)
                    },
                    exit_code: (invocation.exit_code >= 0).then_some(invocation.exit_code),
                    stdout_tail: tail(&stdout, TAIL_LINES),
                    stderr_tail: tail(&stderr, TAIL_LINES),
                    log: log_path.display().to_string(),
                });
            }
            summary = stdout
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or_default()
                .chars()
                .take(100)
                .collect();
        }
        Ok(summary)
    }
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
