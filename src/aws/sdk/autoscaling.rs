//! Auto Scaling: starting an instance refresh of a group and following it.

use aws_sdk_autoscaling::types::RefreshPreferences;

use super::Sdk;
use crate::aws::model::{Refresh, RefreshRequest, RefreshStatus};
use crate::error::Result;

/// Starts an instance refresh; returns its id.
pub async fn start_refresh(sdk: &Sdk, request: &RefreshRequest) -> Result<String> {
    let resource = format!("auto scaling group {}", request.group);
    let preferences = RefreshPreferences::builder()
        .min_healthy_percentage(request.min_healthy_percentage)
        .instance_warmup(request.instance_warmup_secs)
        .skip_matching(request.skip_matching)
        .build();
    let out = sdk
        .autoscaling
        .start_instance_refresh()
        .auto_scaling_group_name(&request.group)
        .preferences(preferences)
        .send()
        .await
        .map_err(|e| sdk.fail("StartInstanceRefresh", &resource, e))?;
    let id = sdk.required(
        out.instance_refresh_id(),
        "StartInstanceRefresh",
        "InstanceRefreshId",
        &resource,
    )?;
    Ok(id.to_owned())
}

/// One refresh of a group; `None` when AWS does not list it.
pub async fn refresh(sdk: &Sdk, group: &str, refresh_id: &str) -> Result<Option<Refresh>> {
    const OP: &str = "DescribeInstanceRefreshes";
    let resource = format!("instance refresh {refresh_id} of {group}");
    let out = sdk
        .autoscaling
        .describe_instance_refreshes()
        .auto_scaling_group_name(group)
        .instance_refresh_ids(refresh_id)
        .send()
        .await
        .map_err(|e| sdk.fail(OP, &resource, e))?;
    let Some(found) = out.instance_refreshes().first() else {
        return Ok(None);
    };
    let id = sdk.required(
        found.instance_refresh_id(),
        OP,
        "InstanceRefreshes[0].InstanceRefreshId",
        &resource,
    )?;
    let status = sdk.required(found.status(), OP, "InstanceRefreshes[0].Status", &resource)?;
    Ok(Some(Refresh {
        id: id.to_owned(),
        status: RefreshStatus::from(status.as_str()),
        status_reason: found.status_reason().unwrap_or_default().to_owned(),
        // Progress, not identity: AWS may leave it out before any instance is replaced.
        percentage_complete: found.percentage_complete().unwrap_or(0),
    }))
}
