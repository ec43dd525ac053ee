//! Systems Manager: the SSM agent's registration, Run Command (send, follow, cancel),
//! Parameter Store writes and reads; and Secrets Manager reads (the values of secret variables).

use aws_sdk_ssm::types::{InstanceInformationStringFilter, ParameterType};

use super::common::{absent_on, truncate};
use super::Sdk;
use crate::aws::model::{
    CommandStatus, Invocation, PingStatus, ShellCommand, COMMAND_DELIVERY_TIMEOUT,
};
use crate::error::Result;

/// The document every shell step runs through.
pub const RUN_SHELL_DOCUMENT: &str = "AWS-RunShellScript";
/// SSM keeps at most this many characters of a command's comment.
const MAX_COMMENT: usize = 100;

/// The agent's ping status; `None` while the instance has not registered.
pub async fn agent_status(sdk: &Sdk, instance_id: &str) -> Result<Option<PingStatus>> {
    const OP: &str = "DescribeInstanceInformation";
    let filter = InstanceInformationStringFilter::builder()
        .key("InstanceIds")
        .values(instance_id)
        .build()
        .map_err(|e| {
            sdk.error(
                OP,
                instance_id,
                Some("InvalidRequest".into()),
                &format!("could not build the InstanceIds filter: {e}"),
            )
        })?;
    let out = sdk
        .ssm
        .describe_instance_information()
        .filters(filter)
        .send()
        .await
        .map_err(|e| sdk.fail(OP, instance_id, e))?;
    let Some(info) = out
        .instance_information_list()
        .iter()
        .find(|i| i.instance_id() == Some(instance_id))
    else {
        return Ok(None);
    };
    let status = sdk.required(
        info.ping_status(),
        OP,
        "InstanceInformationList[].PingStatus",
        instance_id,
    )?;
    Ok(Some(PingStatus::from(status.as_str())))
}

/// Sends a shell script to one instance; returns the command id.
pub async fn send_command(sdk: &Sdk, command: &ShellCommand) -> Result<String> {
    let resource = format!("{} on {}", command.comment, command.instance_id);
    let out = sdk
        .ssm
        .send_command()
        .instance_ids(&command.instance_id)
        .document_name(RUN_SHELL_DOCUMENT)
        .parameters("commands", vec![command.script.clone()])
        .parameters(
            "executionTimeout",
            vec![command.execution_timeout_secs.max(1).to_string()],
        )
        .timeout_seconds(COMMAND_DELIVERY_TIMEOUT.as_secs() as i32)
        .comment(truncate(&command.comment, MAX_COMMENT))
        .send()
        .await
        .map_err(|e| sdk.fail("SendCommand", &resource, e))?;
    let id = sdk.required(
        out.command().and_then(|c| c.command_id()),
        "SendCommand",
        "Command.CommandId",
        &resource,
    )?;
    Ok(id.to_owned())
}

/// Where a command's invocation on an instance stands; `None` while SSM has not registered it
/// (`InvocationDoesNotExist` right after `SendCommand` is normal).
pub async fn invocation(
    sdk: &Sdk,
    command_id: &str,
    instance_id: &str,
) -> Result<Option<Invocation>> {
    const OP: &str = "GetCommandInvocation";
    let resource = format!("command {command_id} on {instance_id}");
    let result = sdk
        .ssm
        .get_command_invocation()
        .command_id(command_id)
        .instance_id(instance_id)
        .send()
        .await
        .map_err(|e| sdk.fail(OP, &resource, e));
    let Some(out) = absent_on(result, &["InvocationDoesNotExist"])? else {
        return Ok(None);
    };
    let status = sdk.required(out.status(), OP, "Status", &resource)?;
    let mut invocation = Invocation {
        status: CommandStatus::from(status.as_str()),
        status_details: out.status_details().unwrap_or_default().to_owned(),
        exit_code: None,
        stdout: out.standard_output_content().unwrap_or_default().to_owned(),
        stderr: out.standard_error_content().unwrap_or_default().to_owned(),
    };
    // AWS answers -1 until the script has finished; the SDK reads an absent code as 0, which
    // means nothing before the invocation has finished either.
    let code = out.response_code();
    if code >= 0 && invocation.is_finished() {
        invocation.exit_code = Some(code);
    }
    Ok(Some(invocation))
}

pub async fn cancel_command(sdk: &Sdk, command_id: &str, instance_id: &str) -> Result<()> {
    sdk.ssm
        .cancel_command()
        .command_id(command_id)
        .instance_ids(instance_id)
        .send()
        .await
        .map_err(|e| {
            sdk.fail(
                "CancelCommand",
                format!("command {command_id} on {instance_id}"),
                e,
            )
        })?;
    Ok(())
}

/// Writes a String parameter, overwriting (SSM keeps the history as versions); returns the new
/// version.
pub async fn put_parameter(sdk: &Sdk, name: &str, value: &str, description: &str) -> Result<i64> {
    let resource = format!("parameter {name}");
    let out = sdk
        .ssm
        .put_parameter()
        .name(name)
        .value(value)
        .description(description)
        .r#type(ParameterType::String)
        .overwrite(true)
        .send()
        .await
        .map_err(|e| sdk.fail("PutParameter", &resource, e))?;
    // Versions start at 1; the SDK reads an absent version as 0.
    let version = out.version();
    sdk.required(
        (version > 0).then_some(version),
        "PutParameter",
        "Version",
        &resource,
    )
}

/// `GetParameter` with `WithDecryption`: the value, a SecureString decrypted. GetParameter (API
/// reference): "WithDecryption: Return decrypted values for secure string parameters. This
/// flag is ignored for String and StringList parameter types."
pub async fn parameter_value(sdk: &Sdk, name: &str) -> Result<String> {
    let resource = format!("parameter {name}");
    let out = sdk
        .ssm
        .get_parameter()
        .name(name)
        .with_decryption(true)
        .send()
        .await
        .map_err(|e| sdk.fail("GetParameter", &resource, e))?;
    let value = out.parameter().and_then(|p| p.value()).map(str::to_owned);
    sdk.required(value, "GetParameter", "Parameter.Value", &resource)
}

/// `GetSecretValue` of the `AWSCURRENT` version (the default without VersionId/VersionStage):
/// its SecretString. A secret stored as SecretBinary is refused: a variable is text.
pub async fn secret_value(sdk: &Sdk, id: &str) -> Result<String> {
    const OP: &str = "GetSecretValue";
    let resource = format!("secret {id}");
    let out = sdk
        .secretsmanager
        .get_secret_value()
        .secret_id(id)
        .send()
        .await
        .map_err(|e| sdk.fail(OP, &resource, e))?;
    match (out.secret_string(), out.secret_binary()) {
        (Some(text), _) => Ok(text.to_owned()),
        (None, Some(_)) => Err(sdk.error(
            OP,
            &resource,
            Some("SecretBinary".into()),
            "the secret holds binary data (SecretBinary), and a recipe variable is text: store it as a SecretString",
        )),
        (None, None) => Err(sdk.error(
            OP,
            &resource,
            Some("MissingField".into()),
            "the response has no SecretString",
        )),
    }
}
