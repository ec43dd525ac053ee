//! Elastic Load Balancing: the health of a target group's targets.

use super::Sdk;
use crate::aws::model::TargetHealth;
use crate::error::Result;

/// `DescribeTargetHealth` of every target registered in `target_group_arn`.
pub async fn target_health(sdk: &Sdk, target_group_arn: &str) -> Result<Vec<TargetHealth>> {
    const OP: &str = "DescribeTargetHealth";
    let resource = format!("target group {target_group_arn}");
    let out = sdk
        .elb
        .describe_target_health()
        .target_group_arn(target_group_arn)
        .send()
        .await
        .map_err(|e| sdk.fail(OP, &resource, e))?;
    let mut found = Vec::new();
    for (i, description) in out.target_health_descriptions().iter().enumerate() {
        let target = sdk.required(
            description.target(),
            OP,
            &format!("TargetHealthDescriptions[{i}].Target"),
            &resource,
        )?;
        let health = sdk.required(
            description.target_health(),
            OP,
            &format!("TargetHealthDescriptions[{i}].TargetHealth"),
            &resource,
        )?;
        let state = sdk.required(
            health.state(),
            OP,
            &format!("TargetHealthDescriptions[{i}].TargetHealth.State"),
            &resource,
        )?;
        let id = sdk.required(
            target.id(),
            OP,
            &format!("TargetHealthDescriptions[{i}].Target.Id"),
            &resource,
        )?;
        found.push(TargetHealth {
            instance_id: id.to_owned(),
            state: state.as_str().to_owned(),
            // AWS leaves both out for a healthy target.
            reason: health
                .reason()
                .map(|r| r.as_str().to_owned())
                .unwrap_or_default(),
            description: health.description().unwrap_or_default().to_owned(),
        });
    }
    Ok(found)
}
