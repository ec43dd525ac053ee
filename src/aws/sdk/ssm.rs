//! SSM operations: agent registration, Run Command, and Parameter Store writes.

use aws_sdk_ssm::types::{InstanceInformationStringFilter, ParameterType};

use super::Sdk as Cloud;
use crate::aws::missing;
use crate::error::Result;

/// The document every shell step runs through.
pub const RUN_SHELL_DOCUMENT: &str = "AWS-RunShellScript";

/// The SSM agent's ping status for an instance, `None` while it has not registered.
pub async fn agent_ping_status(cloud: &Cloud, instance_id: &str) -> Result<Option<String>> {
    let filter = InstanceInformationStringFilter::builder()
        .key("InstanceIds")
        .values(instance_id)
        .build()
        .map_err(|e| {
            crate::error::Error::Refused(format!("bad DescribeInstanceInformation filter: {e}"))
        })?;
    let out = cloud
        .ssm
        .describe_instance_information()
        .filters(filter)
        .send()
        .await
        .map_err(|e| cloud.fail("DescribeInstanceInformation", instance_id, e))?;
    Ok(out
        .instance_information_list()
        .iter()
        .find(|i| i.instance_id() == Some(instance_id))
        .map(|i| {
            i.ping_status()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_else(|| "Unknown".into())
        }))
}

/// Sends a shell script to one instance; returns the command id.
pub async fn send_shell(
    cloud: &Cloud,
    instance_id: &str,
    script: String,
    execution_timeout_secs: u64,
    comment: &str,
) -> Result<String> {
    let out = cloud
        .ssm
        .send_command()
        .instance_ids(instance_id)
        .document_name(RUN_SHELL_DOCUMENT)
        .parameters("commands", vec![script])
        .parameters(
            "executionTimeout",
            vec![execution_timeout_secs.max(1).to_string()],
        )
        .timeout_seconds(60 * 10)
        .comment(comment.chars().take(100).collect::<String>())
        .send()
        .await
        .map_err(|e| cloud.fail("SendCommand", format!("{comment} on {instance_id}"), e))?;
    out.command()
        .and_then(|c| c.command_id())
        .map(str::to_owned)
        .ok_or_else(|| {
            missing(
                "SendCommand",
                "Command.CommandId",
                instance_id,
                &cloud.region,
            )
        })
}

/// Where a command invocation stands.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub status: String,
    pub status_details: String,
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Invocation {
    pub fn is_finished(&self) -> bool {
        matches!(
            self.status.as_str(),
            "Success"
                | "Failed"
                | "TimedOut"
                | "Cancelled"
                | "Undeliverable"
                | "Terminated"
                | "InvalidPlatform"
                | "AccessDenied"
        ) || matches!(
            self.status_details.as_str(),
            "DeliveryTimedOut" | "ExecutionTimedOut" | "Undeliverable" | "Terminated"
        )
    }
}

/// The invocation of a command on an instance; `None` while SSM has not registered it yet
/// (`InvocationDoesNotExist` right after `SendCommand` is normal).
pub async fn invocation(
    cloud: &Cloud,
    command_id: &str,
    instance_id: &str,
) -> Result<Option<Invocation>> {
    match cloud
        .ssm
        .get_command_invocation()
        .command_id(command_id)
        .instance_id(instance_id)
        .send()
        .await
    {
        Ok(out) => Ok(Some(Invocation {
            status: out
                .status()
                .map(|s| s.as_str().to_owned())
                .unwrap_or_default(),
            status_details: out.status_details().unwrap_or_default().to_owned(),
            exit_code: out.response_code(),
            stdout: out.standard_output_content().unwrap_or_default().to_owned(),
            stderr: out.standard_error_content().unwrap_or_default().to_owned(),
        })),
        Err(e) => {
            let err = cloud.fail(
                "GetCommandInvocation",
                format!("command {command_id} on {instance_id}"),
                e,
            );
            if err.aws_code() == Some("InvocationDoesNotExist") {
                Ok(None)
            } else {
                Err(err)
            }
        }
    }
}

pub async fn cancel_command(cloud: &Cloud, command_id: &str, instance_id: &str) -> Result<()> {
    cloud
        .ssm
        .cancel_command()
        .command_id(command_id)
        .instance_ids(instance_id)
        .send()
        .await
        .map_err(|e| {
            cloud.fail(
                "CancelCommand",
                format!("command {command_id} on {instance_id}"),
                e,
            )
        })?;
    Ok(())
}

/// Writes a String parameter (a new SSM version each time, so SSM keeps the history).
pub async fn put_parameter(
    cloud: &Cloud,
    name: &str,
    value: &str,
    description: &str,
) -> Result<i64> {
    let out = cloud
        .ssm
        .put_parameter()
        .name(name)
        .value(value)
        .description(description)
        .r#type(ParameterType::String)
        .overwrite(true)
        .send()
        .await
        .map_err(|e| cloud.fail("PutParameter", name, e))?;
    Ok(out.version())
}
