//! Auto Scaling: reading a group, starting an instance refresh, following and rolling it back.

use aws_sdk_autoscaling::types::{
    AlarmSpecification, DesiredConfiguration, LaunchTemplateSpecification, RefreshPreferences,
};

use super::Sdk;
use crate::aws::model::{
    AutoScalingGroup, DesiredVersion, GroupInstance, GroupTemplate, Refresh, RefreshRequest,
    RefreshStatus,
};
use crate::error::Result;

/// Starts an instance refresh; returns its id.
pub async fn start_refresh(sdk: &Sdk, request: &RefreshRequest) -> Result<String> {
    let resource = format!("auto scaling group {}", request.group);
    let alarms = (!request.alarms.is_empty()).then(|| {
        AlarmSpecification::builder()
            .set_alarms(Some(request.alarms.clone()))
            .build()
    });
    let preferences = RefreshPreferences::builder()
        .min_healthy_percentage(request.min_healthy_percentage)
        .set_max_healthy_percentage(request.max_healthy_percentage)
        .instance_warmup(request.instance_warmup_secs)
        .skip_matching(request.skip_matching)
        .auto_rollback(request.auto_rollback)
        .set_bake_time(request.bake_time_secs)
        .set_alarm_specification(alarms)
        .build();
    let desired = request.desired.as_ref().map(|d| {
        let template = LaunchTemplateSpecification::builder()
            .launch_template_id(&d.template_id)
            .version(d.version.to_string())
            .build();
        DesiredConfiguration::builder()
            .launch_template(template)
            .build()
    });
    let out = sdk
        .autoscaling
        .start_instance_refresh()
        .auto_scaling_group_name(&request.group)
        .preferences(preferences)
        .set_desired_configuration(desired)
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
    let resource = format!("instance refresh {refresh_id} of {group}");
    let out = sdk
        .autoscaling
        .describe_instance_refreshes()
        .auto_scaling_group_name(group)
        .instance_refresh_ids(refresh_id)
        .send()
        .await
        .map_err(|e| sdk.fail(REFRESHES, &resource, e))?;
    match out.instance_refreshes().first() {
        Some(found) => Ok(Some(refresh_of(sdk, &resource, 0, found)?)),
        None => Ok(None),
    }
}

/// The group's refresh that has not ended, if any. AWS lists a group's refreshes newest first
/// and runs one at a time, so an active refresh is the first of the first page.
pub async fn active_refresh(sdk: &Sdk, group: &str) -> Result<Option<Refresh>> {
    let resource = format!("instance refreshes of {group}");
    let out = sdk
        .autoscaling
        .describe_instance_refreshes()
        .auto_scaling_group_name(group)
        .send()
        .await
        .map_err(|e| sdk.fail(REFRESHES, &resource, e))?;
    for (i, found) in out.instance_refreshes().iter().enumerate() {
        let refresh = refresh_of(sdk, &resource, i, found)?;
        if !refresh.status.is_finished() {
            return Ok(Some(refresh));
        }
    }
    Ok(None)
}

const REFRESHES: &str = "DescribeInstanceRefreshes";

/// Refresh `i` of a `DescribeInstanceRefreshes` answer.
fn refresh_of(
    sdk: &Sdk,
    resource: &str,
    i: usize,
    found: &aws_sdk_autoscaling::types::InstanceRefresh,
) -> Result<Refresh> {
    let field = |f: &str| format!("InstanceRefreshes[{i}].{f}");
    let id = sdk.required(
        found.instance_refresh_id(),
        REFRESHES,
        &field("InstanceRefreshId"),
        resource,
    )?;
    let status = sdk.required(found.status(), REFRESHES, &field("Status"), resource)?;
    let desired = found
        .desired_configuration()
        .and_then(|d| d.launch_template())
        .and_then(|t| {
            Some(DesiredVersion {
                template_id: t.launch_template_id().unwrap_or_default().to_owned(),
                version: t.version()?.parse().ok()?,
            })
        });
    Ok(Refresh {
        id: id.to_owned(),
        status: RefreshStatus::from(status.as_str()),
        status_reason: found.status_reason().unwrap_or_default().to_owned(),
        // Progress, not identity: AWS may leave it out before any instance is replaced.
        percentage_complete: found.percentage_complete().unwrap_or(0),
        desired,
    })
}

/// `RollbackInstanceRefresh` of the group's active refresh.
pub async fn rollback_refresh(sdk: &Sdk, group: &str) -> Result<()> {
    sdk.autoscaling
        .rollback_instance_refresh()
        .auto_scaling_group_name(group)
        .send()
        .await
        .map_err(|e| {
            sdk.fail(
                "RollbackInstanceRefresh",
                format!("auto scaling group {group}"),
                e,
            )
        })?;
    Ok(())
}

/// `UpdateAutoScalingGroup` with only the launch template (id and version) changed.
pub async fn set_launch_template(
    sdk: &Sdk,
    group: &str,
    template_id: &str,
    version: &str,
) -> Result<()> {
    let template = LaunchTemplateSpecification::builder()
        .launch_template_id(template_id)
        .version(version)
        .build();
    sdk.autoscaling
        .update_auto_scaling_group()
        .auto_scaling_group_name(group)
        .launch_template(template)
        .send()
        .await
        .map_err(|e| {
            sdk.fail(
                "UpdateAutoScalingGroup",
                format!(
                    "auto scaling group {group} (launch template {template_id} version {version})"
                ),
                e,
            )
        })?;
    Ok(())
}

/// `UpdateAutoScalingGroup` with only `MaxSize` changed.
pub async fn set_max_size(sdk: &Sdk, group: &str, max_size: i32) -> Result<()> {
    sdk.autoscaling
        .update_auto_scaling_group()
        .auto_scaling_group_name(group)
        .max_size(max_size)
        .send()
        .await
        .map_err(|e| {
            sdk.fail(
                "UpdateAutoScalingGroup",
                format!("auto scaling group {group} (MaxSize {max_size})"),
                e,
            )
        })?;
    Ok(())
}

/// One group (`DescribeAutoScalingGroups`); `None` when it does not exist.
pub async fn group(sdk: &Sdk, name: &str) -> Result<Option<AutoScalingGroup>> {
    let resource = format!("auto scaling group {name}");
    let out = sdk
        .autoscaling
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(name)
        .send()
        .await
        .map_err(|e| sdk.fail(GROUPS, &resource, e))?;
    match out.auto_scaling_groups().first() {
        Some(found) => Ok(Some(group_of(sdk, &resource, found)?)),
        None => Ok(None),
    }
}

/// Every group of the account in this region, every page.
pub async fn groups(sdk: &Sdk) -> Result<Vec<AutoScalingGroup>> {
    let resource = "auto scaling groups".to_owned();
    let mut pages = sdk
        .autoscaling
        .describe_auto_scaling_groups()
        .into_paginator()
        .send();
    let mut all = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| sdk.fail(GROUPS, &resource, e))?;
        for found in page.auto_scaling_groups() {
            all.push(group_of(sdk, &resource, found)?);
        }
    }
    Ok(all)
}

const GROUPS: &str = "DescribeAutoScalingGroups";

fn group_of(
    sdk: &Sdk,
    resource: &str,
    found: &aws_sdk_autoscaling::types::AutoScalingGroup,
) -> Result<AutoScalingGroup> {
    let name = sdk.required(
        found.auto_scaling_group_name(),
        GROUPS,
        "AutoScalingGroups[].AutoScalingGroupName",
        resource,
    )?;
    let launch_template = group_template(found);
    let instances = found
        .instances()
        .iter()
        .enumerate()
        .map(|(i, instance)| group_instance(sdk, resource, i, instance))
        .collect::<Result<Vec<_>>>()?;
    // DescribeLoadBalancerTargetGroups (API reference): "You can use this operation to describe
    // target groups that were attached by using AttachLoadBalancerTargetGroups, but not for
    // target groups that were attached by using AttachTrafficSources." Both count here.
    let mut target_group_arns = found.target_group_arns().to_vec();
    let mut other_traffic_sources = Vec::new();
    for source in found.traffic_sources() {
        let id = source.identifier().unwrap_or_default().to_owned();
        match source.r#type().unwrap_or("elbv2") {
            "elbv2" if !target_group_arns.contains(&id) => target_group_arns.push(id),
            "elbv2" => {}
            other => other_traffic_sources.push(format!("{other} {id}")),
        }
    }
    Ok(AutoScalingGroup {
        name: name.to_owned(),
        launch_template,
        health_check_type: found.health_check_type().unwrap_or("EC2").to_owned(),
        target_group_arns,
        other_traffic_sources,
        subnet_ids: found
            .vpc_zone_identifier()
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        desired_capacity: found.desired_capacity().unwrap_or(0),
        max_size: found.max_size().unwrap_or(0),
        instances,
    })
}

/// The launch template a group launches from: its own, or its mixed instances policy's.
fn group_template(found: &aws_sdk_autoscaling::types::AutoScalingGroup) -> Option<GroupTemplate> {
    let spec = found.launch_template().or_else(|| {
        found
            .mixed_instances_policy()
            .and_then(|p| p.launch_template())
            .and_then(|t| t.launch_template_specification())
    });
    spec.map(|t| GroupTemplate {
        id: t.launch_template_id().unwrap_or_default().to_owned(),
        name: t.launch_template_name().unwrap_or_default().to_owned(),
        // AWS leaves the version out when the group uses $Default.
        version: t.version().unwrap_or("$Default").to_owned(),
    })
}

/// Instance `i` of the group `DescribeAutoScalingGroups` returned.
fn group_instance(
    sdk: &Sdk,
    resource: &str,
    i: usize,
    instance: &aws_sdk_autoscaling::types::Instance,
) -> Result<GroupInstance> {
    const OP: &str = GROUPS;
    let field = |f: &str| format!("AutoScalingGroups[].Instances[{i}].{f}");
    Ok(GroupInstance {
        id: sdk
            .required(instance.instance_id(), OP, &field("InstanceId"), resource)?
            .to_owned(),
        lifecycle_state: sdk
            .required(
                instance.lifecycle_state(),
                OP,
                &field("LifecycleState"),
                resource,
            )?
            .as_str()
            .to_owned(),
        health_status: sdk
            .required(
                instance.health_status(),
                OP,
                &field("HealthStatus"),
                resource,
            )?
            .to_owned(),
        template_version: instance
            .launch_template()
            .and_then(|t| t.version())
            .map(str::to_owned),
    })
}
