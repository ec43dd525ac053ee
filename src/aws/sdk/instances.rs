//! Instances (EC2): launching a builder, describing and finding instances, stopping and
//! terminating them.

use std::time::SystemTime;

use aws_sdk_ec2::operation::run_instances::builders::RunInstancesFluentBuilder;
use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, Filter, HttpTokensState, IamInstanceProfileSpecification,
    InstanceMetadataEndpointState, InstanceMetadataOptionsRequest,
    InstanceNetworkInterfaceSpecification, ResourceType, ShutdownBehavior, VolumeType,
};

use super::common::{absent_on, filter, tag_map, tag_spec};
use super::Sdk;
use crate::aws::model::{Instance, InstanceQuery, InstanceState, LaunchRequest, RootVolume};
use crate::error::Result;

/// The error code of an instance id AWS does not know.
const NO_INSTANCE: &[&str] = &["InvalidInstanceID.NotFound"];

/// Reads one SDK instance; `resource` is what the call was about (for a missing-field error).
fn to_instance(
    sdk: &Sdk,
    operation: &'static str,
    resource: &str,
    instance: &aws_sdk_ec2::types::Instance,
) -> Result<Instance> {
    let id = sdk.required(
        instance.instance_id(),
        operation,
        "Instances[].InstanceId",
        resource,
    )?;
    let state = sdk.required(
        instance.state().and_then(|s| s.name()),
        operation,
        "Instances[].State.Name",
        id,
    )?;
    Ok(Instance {
        id: id.to_owned(),
        state: InstanceState::from(state.as_str()),
        image_id: instance.image_id().map(str::to_owned),
        state_reason: instance
            .state_reason()
            .and_then(|r| r.message())
            .unwrap_or_default()
            .to_owned(),
        launch_time: instance
            .launch_time()
            .and_then(|t| SystemTime::try_from(*t).ok()),
        tags: tag_map(instance.tags()),
    })
}

fn metadata_options(imdsv2_required: bool) -> InstanceMetadataOptionsRequest {
    InstanceMetadataOptionsRequest::builder()
        .http_endpoint(InstanceMetadataEndpointState::Enabled)
        .http_tokens(if imdsv2_required {
            HttpTokensState::Required
        } else {
            HttpTokensState::Optional
        })
        .http_put_response_hop_limit(2)
        .build()
}

/// The root mapping override: gp3, deleted on termination, encrypted as asked, sized when set.
fn root_mapping(root: &RootVolume) -> BlockDeviceMapping {
    let ebs = EbsBlockDevice::builder()
        .encrypted(root.encrypted)
        .set_kms_key_id(root.kms_key_id.clone())
        .delete_on_termination(true)
        .volume_type(VolumeType::Gp3)
        .set_volume_size(root.size_gb)
        .build();
    BlockDeviceMapping::builder()
        .device_name(&root.device_name)
        .ebs(ebs)
        .build()
}

/// An instance profile by ARN (`arn:...`) or by name.
fn instance_profile(profile: &str) -> IamInstanceProfileSpecification {
    let spec = IamInstanceProfileSpecification::builder();
    if profile.starts_with("arn:") {
        spec.arn(profile).build()
    } else {
        spec.name(profile).build()
    }
}

/// Subnet and security groups: on a network interface when the public IP is decided, else on the
/// instance.
fn with_network(call: RunInstancesFluentBuilder, req: &LaunchRequest) -> RunInstancesFluentBuilder {
    let groups = (!req.security_group_ids.is_empty()).then(|| req.security_group_ids.clone());
    match req.associate_public_ip {
        Some(public) => call.network_interfaces(
            InstanceNetworkInterfaceSpecification::builder()
                .device_index(0)
                .associate_public_ip_address(public)
                .set_subnet_id(req.subnet_id.clone())
                .set_groups(groups)
                .build(),
        ),
        None => call
            .set_subnet_id(req.subnet_id.clone())
            .set_security_group_ids(groups),
    }
}

/// Launches one instance and returns its id. The client token makes a retried call (by the SDK
/// after a lost response, or by a re-run) launch nothing new.
pub async fn launch_instance(sdk: &Sdk, req: &LaunchRequest) -> Result<String> {
    if let Some(template) = &req.launch_template {
        return launch_from_template(sdk, req, template).await;
    }
    let resource = format!("{} instance from {}", req.instance_type, req.image_id);
    let mut call = sdk
        .ec2
        .run_instances()
        .image_id(&req.image_id)
        .instance_type(req.instance_type.as_str().into())
        .min_count(1)
        .max_count(1)
        .client_token(&req.client_token)
        .metadata_options(metadata_options(req.imdsv2_required))
        .instance_initiated_shutdown_behavior(ShutdownBehavior::Stop)
        .tag_specifications(tag_spec(ResourceType::Instance, &req.tags))
        .tag_specifications(tag_spec(ResourceType::Volume, &req.volume_tags));
    if let Some(root) = &req.root_volume {
        call = call.block_device_mappings(root_mapping(root));
    }
    if let Some(profile) = &req.iam_instance_profile {
        call = call.iam_instance_profile(instance_profile(profile));
    }
    let out = with_network(call, req)
        .send()
        .await
        .map_err(|e| sdk.fail("RunInstances", &resource, e))?;
    launched_id(sdk, &out, &resource)
}

/// The id of the one instance a `RunInstances` answer launched.
fn launched_id(
    sdk: &Sdk,
    out: &aws_sdk_ec2::operation::run_instances::RunInstancesOutput,
    resource: &str,
) -> Result<String> {
    let id = sdk.required(
        out.instances().first().and_then(|i| i.instance_id()),
        "RunInstances",
        "Instances[0].InstanceId",
        resource,
    )?;
    Ok(id.to_owned())
}

/// `RunInstances` from a launch template version with the image (and, when given, the instance
/// type and subnet) overridden: the instance boots as the template's production instances do.
async fn launch_from_template(
    sdk: &Sdk,
    req: &LaunchRequest,
    template: &crate::aws::model::DesiredVersion,
) -> Result<String> {
    let resource = format!(
        "instance from {} version {} with {}",
        template.template_id, template.version, req.image_id
    );
    let spec = aws_sdk_ec2::types::LaunchTemplateSpecification::builder()
        .launch_template_id(&template.template_id)
        .version(template.version.to_string())
        .build();
    let mut call = sdk
        .ec2
        .run_instances()
        .launch_template(spec)
        .image_id(&req.image_id)
        .min_count(1)
        .max_count(1)
        .client_token(&req.client_token)
        .tag_specifications(tag_spec(ResourceType::Instance, &req.tags))
        .tag_specifications(tag_spec(ResourceType::Volume, &req.volume_tags));
    if !req.instance_type.is_empty() {
        call = call.instance_type(req.instance_type.as_str().into());
    }
    if let Some(subnet) = &req.subnet_id {
        call = call.subnet_id(subnet);
    }
    let out = call
        .send()
        .await
        .map_err(|e| sdk.fail("RunInstances", &resource, e))?;
    launched_id(sdk, &out, &resource)
}

/// One instance; `None` when AWS does not know the id.
pub async fn instance(sdk: &Sdk, instance_id: &str) -> Result<Option<Instance>> {
    let result = sdk
        .ec2
        .describe_instances()
        .instance_ids(instance_id)
        .send()
        .await
        .map_err(|e| sdk.fail("DescribeInstances", instance_id, e));
    let Some(out) = absent_on(result, NO_INSTANCE)? else {
        return Ok(None);
    };
    out.reservations()
        .iter()
        .flat_map(|r| r.instances())
        .find(|i| i.instance_id() == Some(instance_id))
        .map(|i| to_instance(sdk, "DescribeInstances", instance_id, i))
        .transpose()
}

fn instance_filters(query: &InstanceQuery) -> Vec<Filter> {
    let mut filters: Vec<Filter> = query
        .tags
        .iter()
        .map(|(key, value)| filter(&format!("tag:{key}"), [value.as_str()]))
        .collect();
    if !query.states.is_empty() {
        filters.push(filter(
            "instance-state-name",
            query.states.iter().map(InstanceState::as_str),
        ));
    }
    if let Some(token) = &query.client_token {
        filters.push(filter("client-token", [token.as_str()]));
    }
    filters
}

/// Instances matching `query`, every page.
pub async fn find_instances(sdk: &Sdk, query: &InstanceQuery) -> Result<Vec<Instance>> {
    let mut parts: Vec<String> = query
        .tags
        .iter()
        .map(|(k, v)| format!("tag:{k}={v}"))
        .collect();
    if !query.states.is_empty() {
        let states: Vec<&str> = query.states.iter().map(InstanceState::as_str).collect();
        parts.push(format!("state {}", states.join("|")));
    }
    if let Some(token) = &query.client_token {
        parts.push(format!("client token {token}"));
    }
    let resource = if parts.is_empty() {
        "all instances".to_owned()
    } else {
        format!("instances ({})", parts.join(", "))
    };
    let filters = instance_filters(query);
    let mut pages = sdk
        .ec2
        .describe_instances()
        .set_filters((!filters.is_empty()).then_some(filters))
        .into_paginator()
        .send();
    let mut found = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| sdk.fail("DescribeInstances", &resource, e))?;
        for instance in page.reservations().iter().flat_map(|r| r.instances()) {
            found.push(to_instance(sdk, "DescribeInstances", &resource, instance)?);
        }
    }
    Ok(found)
}

pub async fn stop_instance(sdk: &Sdk, instance_id: &str) -> Result<()> {
    sdk.ec2
        .stop_instances()
        .instance_ids(instance_id)
        .send()
        .await
        .map_err(|e| sdk.fail("StopInstances", instance_id, e))?;
    Ok(())
}

/// Terminates an instance; one AWS no longer knows is fine.
pub async fn terminate_instance(sdk: &Sdk, instance_id: &str) -> Result<()> {
    let result = sdk
        .ec2
        .terminate_instances()
        .instance_ids(instance_id)
        .send()
        .await
        .map_err(|e| sdk.fail("TerminateInstances", instance_id, e));
    // `InvalidInstanceID.NotFound` is an error here: AWS also answers it for an instance
    // launched a moment ago; the pipeline confirms by client token before calling it gone.
    result.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_query_becomes_filters() {
        let filters = instance_filters(&InstanceQuery::live().tagged("kiln:build-id", "b1"));
        assert_eq!(filters[0].name(), Some("tag:kiln:build-id"));
        assert_eq!(filters[0].values(), ["b1"]);
        assert_eq!(filters[1].name(), Some("instance-state-name"));
        assert_eq!(
            filters[1].values(),
            ["pending", "running", "stopping", "stopped"]
        );
        assert!(instance_filters(&InstanceQuery::default()).is_empty());
    }

    #[test]
    fn instance_profile_by_arn_or_name() {
        let arn = instance_profile("arn:aws:iam::1:instance-profile/builder");
        assert_eq!(arn.arn(), Some("arn:aws:iam::1:instance-profile/builder"));
        assert_eq!(arn.name(), None);
        assert_eq!(instance_profile("builder").name(), Some("builder"));
    }
}
