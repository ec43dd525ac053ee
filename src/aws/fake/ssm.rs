//! Systems Manager (agent, Run Command, parameters) in the fake.

use std::time::Duration;

use base64::Engine as _;
use tokio::time::Instant;

use super::world::{refuse, Answer, CommandRecord, Here, World};
use super::{CommandOutcome, ACCOUNT_ID, DEFAULT_COMMAND_TIME};
use crate::aws::model::{CommandStatus, Invocation, PingStatus, ShellCommand};

/// SSM's execution timeout when a command gives none.
const DEFAULT_EXECUTION_TIMEOUT: Duration = Duration::from_secs(3600);

/// SSM keeps the first this many characters of a command's stdout in `GetCommandInvocation`.
const STDOUT_LIMIT: usize = 24_000;
/// ... and of its stderr.
const STDERR_LIMIT: usize = 8_000;
/// How much of the end of its log the run wrapper prints.
const WRAPPER_TAIL: usize = 20_000;
/// How long a read of a builder log takes.
const LOG_READ_TIME: Duration = Duration::from_millis(500);
/// Raw bytes a read command returns at most.
const LOG_READ_CHUNK: usize = 16_000;

/// The first `limit` characters of `text`.
fn truncated(text: &str, limit: usize) -> String {
    text.chars().take(limit).collect()
}

/// What a script that prints `full` evenly over `takes` has written after `elapsed`.
fn written(full: &str, elapsed: Duration, takes: Duration) -> String {
    if elapsed >= takes {
        return full.to_owned();
    }
    let lines: Vec<&str> = full.split_inclusive('\n').collect();
    let shown = (lines.len() as u128 * elapsed.as_millis() / takes.as_millis().max(1)) as usize;
    lines[..shown.min(lines.len())].concat()
}

/// The line a run wrapper appends to its existing log before a rerun (`echo "--- kiln: …" >>`).
fn rerun_line(script: &str) -> Option<String> {
    let rest = script.split_once("echo \"--- kiln: ")?.1;
    Some(format!("--- kiln: {}", rest.split_once('"')?.0))
}

/// The builder log a script names (`kiln_log='PATH'`): the run wrapper writes it, a read
/// command reads it.
fn named_log(script: &str) -> Option<String> {
    let rest = script.split_once("kiln_log='")?.1;
    Some(rest.split_once('\'')?.0.to_owned())
}

/// A read command's log and offset (`kiln_log='PATH'; kiln_from=N` after `# kiln read-log`).
fn read_request(script: &str) -> Option<(String, usize)> {
    if !script.contains("# kiln read-log") {
        return None;
    }
    let from = script.split_once("kiln_from=")?.1;
    let digits: String = from.chars().take_while(char::is_ascii_digit).collect();
    Some((named_log(script)?, digits.parse().ok()?))
}

impl CommandRecord {
    /// What the script has written to its log by `now`: the outcome's stdout then stderr, line
    /// by line, evenly over the time the command runs (all of it once it has ended).
    fn log_at(&self, now: Instant) -> String {
        let full = match &self.outcome {
            CommandOutcome::Success { stdout } => stdout.clone(),
            CommandOutcome::Failed { stdout, stderr, .. } => format!("{stdout}{stderr}"),
            CommandOutcome::TimedOut => String::new(),
        };
        let until = self.cancelled.map_or(now, |at| at.min(now));
        if self.reboots.is_empty() {
            if until >= self.ends {
                return full;
            }
            return written(
                &full,
                until.saturating_duration_since(self.sent),
                self.ends.saturating_duration_since(self.sent),
            );
        }
        // One run before each reboot and one after the last; the wrapper appends to its log.
        let mut log = String::new();
        let starts =
            std::iter::once(self.delivered).chain(self.reboots.iter().map(|(_, end)| *end));
        for (run, start) in starts.enumerate() {
            if until < start {
                break;
            }
            if run > 0 {
                if let Some(line) = &self.rerun_line {
                    log.push_str(line);
                    log.push('\n');
                }
            }
            log.push_str(&written(
                &full,
                until.saturating_duration_since(start),
                self.run_time,
            ));
        }
        log
    }

    /// What the run wrapper prints once the script ended: the log's size and its end.
    fn wrapper_stdout(&self, now: Instant) -> String {
        let log = self.log_at(now);
        let mut start = log.len().saturating_sub(WRAPPER_TAIL);
        while !log.is_char_boundary(start) {
            start += 1;
        }
        format!("kiln-log-size {}\n{}", log.len(), &log[start..])
    }

    fn invocation(&self, now: Instant) -> Invocation {
        let mut invocation = self.raw_invocation(now);
        if self.log.is_some() && invocation.is_finished() {
            // The wrapper sent the script's output to the log, and prints its end.
            invocation.stdout = self.wrapper_stdout(now);
            invocation.stderr = String::new();
        }
        invocation.stdout = truncated(&invocation.stdout, STDOUT_LIMIT);
        invocation.stderr = truncated(&invocation.stderr, STDERR_LIMIT);
        invocation
    }

    fn raw_invocation(&self, now: Instant) -> Invocation {
        let (status, details, exit_code, stdout, stderr) = match &self.outcome {
            _ if self.cancelled.is_some() => (CommandStatus::Cancelled, "Cancelled", None, "", ""),
            _ if now < self.delivered => (CommandStatus::Pending, "Pending", None, "", ""),
            _ if now < self.ends => (CommandStatus::InProgress, "InProgress", None, "", ""),
            CommandOutcome::Success { stdout } => (
                CommandStatus::Success,
                "Success",
                Some(0),
                stdout.as_str(),
                "",
            ),
            CommandOutcome::Failed {
                exit_code,
                stdout,
                stderr,
            } => (
                CommandStatus::Failed,
                "Failed",
                Some(*exit_code),
                stdout.as_str(),
                stderr.as_str(),
            ),
            CommandOutcome::TimedOut => {
                (CommandStatus::TimedOut, "ExecutionTimedOut", None, "", "")
            }
        };
        Invocation {
            status,
            status_details: details.to_owned(),
            exit_code,
            stdout: stdout.to_owned(),
            stderr: stderr.to_owned(),
        }
    }
}

// --- Systems Manager ---
impl World {
    pub fn agent_status(&mut self, here: &Here, instance_id: &str) -> Answer<Option<PingStatus>> {
        let agent_online = self.timings.agent_online;
        let rebooting = self.reboots.get(instance_id).is_some_and(|windows| {
            windows
                .iter()
                .any(|(from, to)| *from <= here.now && here.now < *to)
        });
        let Some(instance) = self.region(&here.region).instances.get(instance_id) else {
            return Ok(None);
        };
        Ok(
            if instance.agent_online(here.now, agent_online) && !rebooting {
                Some(PingStatus::Online)
            } else if instance.agent_was_online {
                Some(PingStatus::ConnectionLost)
            } else {
                None
            },
        )
    }

    /// When a script ends and how: the first matching rule, capped by the execution timeout.
    fn plan_command(&self, command: &ShellCommand) -> (Duration, CommandOutcome) {
        let rule = self
            .rules
            .iter()
            .find(|r| command.script.contains(&r.matching));
        let (takes, outcome) = match rule {
            Some(rule) => (rule.in_progress_for, rule.outcome.clone()),
            None => (
                DEFAULT_COMMAND_TIME,
                CommandOutcome::Success {
                    stdout: String::new(),
                },
            ),
        };
        let timeout = match command.execution_timeout_secs {
            0 => DEFAULT_EXECUTION_TIMEOUT,
            secs => Duration::from_secs(secs),
        };
        if takes > timeout {
            (timeout, CommandOutcome::TimedOut)
        } else {
            (takes, outcome)
        }
    }

    /// A read of a builder log: its size and up to a chunk of bytes from the offset, as the
    /// read command prints them; `Failed` when no command wrote that log on the instance.
    fn read_log(
        &mut self,
        here: &Here,
        instance_id: &str,
        log: &str,
        from: usize,
    ) -> CommandOutcome {
        let writer = self
            .region(&here.region)
            .commands
            .values()
            .filter(|c| c.instance_id == instance_id && c.log.as_deref() == Some(log))
            .max_by_key(|c| c.sent);
        let Some(writer) = writer else {
            return CommandOutcome::Failed {
                exit_code: 1,
                stdout: String::new(),
                stderr: format!("no log {log}\n"),
            };
        };
        let content = writer.log_at(here.now).into_bytes();
        let start = from.min(content.len());
        let chunk = &content[start..(start + LOG_READ_CHUNK).min(content.len())];
        let encoded = base64::engine::general_purpose::STANDARD.encode(chunk);
        CommandOutcome::Success {
            stdout: format!("kiln-log {}\n{encoded}\n", content.len()),
        }
    }

    pub fn send_command(&mut self, here: &Here, command: &ShellCommand) -> Answer<String> {
        let ready = Here {
            region: here.region.clone(),
            now: here
                .now
                .checked_sub(self.timings.send_command_ready)
                .unwrap_or(here.now),
        };
        let online_long_enough = self.timings.send_command_ready.is_zero()
            || self.agent_status(&ready, &command.instance_id)? == Some(PingStatus::Online);
        if !online_long_enough
            || self.agent_status(here, &command.instance_id)? != Some(PingStatus::Online)
        {
            return refuse(
                "InvalidInstanceId",
                format!(
                    "Instances [[{}]] not in a valid state for account {ACCOUNT_ID}",
                    command.instance_id
                ),
            );
        }
        let (takes, outcome, log) = match read_request(&command.script) {
            Some((log, from)) => {
                let outcome = self.read_log(here, &command.instance_id, &log, from);
                (LOG_READ_TIME, outcome, None)
            }
            None => {
                let (takes, outcome) = self.plan_command(command);
                (takes, outcome, named_log(&command.script))
            }
        };
        let id = self.new_uuid();
        let delivered = here.now + self.timings.command_delivery;
        let rule = self
            .reboot_rules
            .iter()
            .find(|(matching, _, _)| command.script.contains(matching.as_str()))
            .filter(|_| read_request(&command.script).is_none());
        let mut reboots = Vec::new();
        if let Some((_, times, offline)) = rule {
            for run in 1..=*times {
                let from = delivered + takes * run + *offline * (run - 1);
                reboots.push((from, from + *offline));
            }
            self.reboots
                .entry(command.instance_id.clone())
                .or_default()
                .extend(reboots.iter().copied());
        }
        let ends = reboots.last().map_or(delivered, |(_, end)| *end) + takes;
        let record = CommandRecord {
            id: id.clone(),
            instance_id: command.instance_id.clone(),
            script: command.script.clone(),
            sent: here.now,
            delivered,
            ends,
            outcome,
            cancelled: None,
            log,
            run_time: takes,
            reboots,
            rerun_line: rerun_line(&command.script),
        };
        self.region(&here.region)
            .commands
            .insert(id.clone(), record);
        Ok(id)
    }

    pub fn invocation(
        &mut self,
        here: &Here,
        command_id: &str,
        instance_id: &str,
    ) -> Answer<Option<Invocation>> {
        let region = self.region(&here.region);
        Ok(region
            .commands
            .get(command_id)
            .filter(|c| c.instance_id == instance_id)
            .map(|c| c.invocation(here.now)))
    }

    /// Cancels an invocation that has not finished; a finished one keeps its outcome.
    pub fn cancel_command(
        &mut self,
        here: &Here,
        command_id: &str,
        instance_id: &str,
    ) -> Answer<()> {
        let region = self.region(&here.region);
        let Some(command) = region.commands.get_mut(command_id) else {
            return refuse(
                "InvalidCommandId",
                format!("Invalid command id {command_id}."),
            );
        };
        if command.instance_id == instance_id && here.now < command.ends {
            command.cancelled.get_or_insert(here.now);
        }
        Ok(())
    }

    pub fn put_parameter(&mut self, here: &Here, name: &str, value: &str) -> Answer<i64> {
        let versions = self
            .region(&here.region)
            .parameters
            .entry(name.to_owned())
            .or_default();
        versions.push(value.to_owned());
        Ok(versions.len() as i64)
    }

    /// The latest version's value; `ParameterNotFound` as AWS answers for a missing one.
    pub fn parameter_value(&mut self, here: &Here, name: &str) -> Answer<String> {
        match self
            .region(&here.region)
            .parameters
            .get(name)
            .and_then(|v| v.last())
        {
            Some(value) => Ok(value.clone()),
            None => refuse("ParameterNotFound", format!("Parameter {name} not found.")),
        }
    }

    /// A secret's SecretString, by name or by an ARN ending in `secret:NAME-xxxxxx`;
    /// `ResourceNotFoundException` as AWS answers for a missing one.
    pub fn secret_value(&mut self, here: &Here, id: &str) -> Answer<String> {
        let secrets = &self.region(&here.region).secrets;
        let by_arn = id
            .rsplit_once(":secret:")
            .and_then(|(_, rest)| rest.rsplit_once('-'))
            .map(|(name, _)| name);
        match secrets
            .get(id)
            .or_else(|| by_arn.and_then(|name| secrets.get(name)))
        {
            Some(value) => Ok(value.clone()),
            None => refuse(
                "ResourceNotFoundException",
                "Secrets Manager can't find the specified secret.",
            ),
        }
    }

    pub fn sent_commands(&mut self, here: &Here) -> Vec<(String, String)> {
        let mut commands: Vec<&CommandRecord> =
            self.region(&here.region).commands.values().collect();
        commands.sort_by_key(|c| (c.sent, c.id.clone()));
        commands
            .into_iter()
            .map(|c| (c.instance_id.clone(), c.script.clone()))
            .collect()
    }
}
