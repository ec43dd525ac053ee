//! EC2 operations kiln needs: images, builder instances, snapshots and launch templates.
//!
//! Each function is one AWS operation (or one paginated listing) with its context attached;
//! responses are turned into small owned structs so the pipeline never sees SDK types.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, Filter, HttpTokensState, IamInstanceProfileSpecification,
    InstanceMetadataEndpointState, InstanceMetadataOptionsRequest,
    InstanceNetworkInterfaceSpecification, InstanceStateName, RequestLaunchTemplateData,
    ResourceType, ShutdownBehavior, VolumeType,
};

pub use super::common::filter;
use super::common::{sdk_tags, tag_map, tag_spec, truncate};
use super::Sdk as Cloud;
use crate::aws::missing;
use crate::error::Result;
use crate::plan::BuilderSpec;

/// What kiln needs to know about an image.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageInfo {
    pub id: String,
    pub name: String,
    pub state: String,
    pub state_reason: String,
    pub creation_date: String,
    pub owner_id: String,
    pub root_device_name: Option<String>,
    /// Size in GiB of the volume on the root device, when the image says.
    pub root_volume_size: Option<i32>,
    pub architecture: Option<String>,
    pub snapshot_ids: Vec<String>,
    pub tags: BTreeMap<String, String>,
}

impl ImageInfo {
    fn from_sdk(image: &aws_sdk_ec2::types::Image) -> ImageInfo {
        ImageInfo {
            id: image.image_id().unwrap_or_default().to_owned(),
            name: image.name().unwrap_or_default().to_owned(),
            state: image
                .state()
                .map(|s| s.as_str().to_owned())
                .unwrap_or_default(),
            state_reason: image
                .state_reason()
                .and_then(|r| r.message())
                .unwrap_or_default()
                .to_owned(),
            creation_date: image.creation_date().unwrap_or_default().to_owned(),
            owner_id: image.owner_id().unwrap_or_default().to_owned(),
            root_device_name: image.root_device_name().map(str::to_owned),
            root_volume_size: image
                .block_device_mappings()
                .iter()
                .find(|m| m.device_name() == image.root_device_name())
                .and_then(|m| m.ebs())
                .and_then(|e| e.volume_size()),
            architecture: image.architecture().map(|a| a.as_str().to_owned()),
            snapshot_ids: image
                .block_device_mappings()
                .iter()
                .filter_map(|m| m.ebs().and_then(|e| e.snapshot_id()).map(str::to_owned))
                .collect(),
            tags: tag_map(image.tags()),
        }
    }
}

/// Describes images by id; missing ids are simply absent from the answer.
pub async fn describe_images(cloud: &Cloud, ids: &[String]) -> Result<Vec<ImageInfo>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let out = cloud
        .ec2
        .describe_images()
        .set_image_ids(Some(ids.to_vec()))
        .send()
        .await
        .map_err(|e| cloud.fail("DescribeImages", ids.join(", "), e))?;
    Ok(out.images().iter().map(ImageInfo::from_sdk).collect())
}

/// One image by id, `None` when it does not exist (deregistered, or never did).
pub async fn find_image(cloud: &Cloud, id: &str) -> Result<Option<ImageInfo>> {
    match describe_images(cloud, &[id.to_owned()]).await {
        Ok(mut images) => Ok(images.pop()),
        Err(e) if e.aws_code().is_some_and(|c| c.starts_with("InvalidAMIID")) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Images matching filters (and owners), every page.
pub async fn list_images(
    cloud: &Cloud,
    owners: &[String],
    filters: Vec<Filter>,
    what: &str,
) -> Result<Vec<ImageInfo>> {
    let mut images = Vec::new();
    let mut pages = cloud
        .ec2
        .describe_images()
        .set_owners((!owners.is_empty()).then(|| owners.to_vec()))
        .set_filters(Some(filters))
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| cloud.fail("DescribeImages", what, e))?;
        images.extend(page.images().iter().map(ImageInfo::from_sdk));
    }
    Ok(images)
}

/// The request for one builder instance.
pub struct LaunchRequest<'a> {
    pub image_id: &'a str,
    pub root_device_name: Option<&'a str>,
    /// The source image's root volume size, used when the recipe sets none.
    pub root_volume_size: Option<i32>,
    pub builder: &'a BuilderSpec,
    pub client_token: &'a str,
    pub tags: &'a [(String, String)],
    pub volume_tags: &'a [(String, String)],
}

/// Launches the builder and returns its instance id. The client token makes retries of this
/// call (by the SDK after a lost response, or by a re-run) launch nothing new.
pub async fn run_builder(cloud: &Cloud, req: LaunchRequest<'_>) -> Result<String> {
    let spec = req.builder;
    let metadata = InstanceMetadataOptionsRequest::builder()
        .http_endpoint(InstanceMetadataEndpointState::Enabled)
        .http_tokens(if spec.imdsv2_required {
            HttpTokensState::Required
        } else {
            HttpTokensState::Optional
        })
        .http_put_response_hop_limit(2)
        .build();
    let mut call = cloud
        .ec2
        .run_instances()
        .image_id(req.image_id)
        .instance_type(spec.instance_type.as_str().into())
        .min_count(1)
        .max_count(1)
        .client_token(req.client_token)
        .metadata_options(metadata)
        .instance_initiated_shutdown_behavior(ShutdownBehavior::Stop)
        .tag_specifications(tag_spec(ResourceType::Instance, req.tags))
        .tag_specifications(tag_spec(ResourceType::Volume, req.volume_tags));
    if let Some(device) = req.root_device_name {
        let mut ebs = EbsBlockDevice::builder()
            .encrypted(spec.encrypted)
            .delete_on_termination(true)
            .volume_type(VolumeType::Gp3);
        // Overriding the root mapping (to encrypt it) needs a size: the recipe's, else the image's.
        if let Some(size) = spec
            .volume_size_gb
            .map(|s| s as i32)
            .or(req.root_volume_size)
        {
            ebs = ebs.volume_size(size);
        }
        call = call.block_device_mappings(
            BlockDeviceMapping::builder()
                .device_name(device)
                .ebs(ebs.build())
                .build(),
        );
    }
    if let Some(profile) = &spec.iam_instance_profile {
        let profile_spec = if profile.starts_with("arn:") {
            IamInstanceProfileSpecification::builder().arn(profile)
        } else {
            IamInstanceProfileSpecification::builder().name(profile)
        };
        call = call.iam_instance_profile(profile_spec.build());
    }
    if let Some(public) = spec.associate_public_ip {
        let nic = InstanceNetworkInterfaceSpecification::builder()
            .device_index(0)
            .associate_public_ip_address(public)
            .set_subnet_id(spec.subnet_id.clone())
            .set_groups(
                (!spec.security_group_ids.is_empty()).then(|| spec.security_group_ids.clone()),
            )
            .build();
        call = call.network_interfaces(nic);
    } else {
        call = call
            .set_subnet_id(spec.subnet_id.clone())
            .set_security_group_ids(
                (!spec.security_group_ids.is_empty()).then(|| spec.security_group_ids.clone()),
            );
    }
    let out = call
        .send()
        .await
        .map_err(|e| cloud.fail("RunInstances", format!("builder from {}", req.image_id), e))?;
    out.instances()
        .first()
        .and_then(|i| i.instance_id())
        .map(str::to_owned)
        .ok_or_else(|| {
            missing(
                "RunInstances",
                "Instances[0].InstanceId",
                req.image_id,
                &cloud.region,
            )
        })
}

/// An instance's id, state and tags.
#[derive(Debug, Clone)]
pub struct InstanceInfo {
    pub id: String,
    pub state: String,
    pub launch_time: Option<std::time::SystemTime>,
    pub tags: BTreeMap<String, String>,
}

fn instance_info(instance: &aws_sdk_ec2::types::Instance) -> InstanceInfo {
    InstanceInfo {
        id: instance.instance_id().unwrap_or_default().to_owned(),
        state: instance
            .state()
            .and_then(|s| s.name())
            .map(|n| n.as_str().to_owned())
            .unwrap_or_default(),
        launch_time: instance
            .launch_time()
            .and_then(|t| std::time::SystemTime::try_from(*t).ok()),
        tags: tag_map(instance.tags()),
    }
}

/// The state of one instance (`pending`, `running`, `stopped`, `terminated`...).
pub async fn instance_state(cloud: &Cloud, id: &str) -> Result<String> {
    let out = cloud
        .ec2
        .describe_instances()
        .instance_ids(id)
        .send()
        .await
        .map_err(|e| cloud.fail("DescribeInstances", id, e))?;
    out.reservations()
        .iter()
        .flat_map(|r| r.instances())
        .find(|i| i.instance_id() == Some(id))
        .map(|i| instance_info(i).state)
        .ok_or_else(|| {
            missing(
                "DescribeInstances",
                "Reservations[].Instances[]",
                id,
                &cloud.region,
            )
        })
}

/// Instances matching filters, every page.
pub async fn list_instances(
    cloud: &Cloud,
    filters: Vec<Filter>,
    what: &str,
) -> Result<Vec<InstanceInfo>> {
    let mut found = Vec::new();
    let mut pages = cloud
        .ec2
        .describe_instances()
        .set_filters(Some(filters))
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| cloud.fail("DescribeInstances", what, e))?;
        found.extend(
            page.reservations()
                .iter()
                .flat_map(|r| r.instances())
                .map(instance_info),
        );
    }
    Ok(found)
}

pub async fn stop_instance(cloud: &Cloud, id: &str) -> Result<()> {
    cloud
        .ec2
        .stop_instances()
        .instance_ids(id)
        .send()
        .await
        .map_err(|e| cloud.fail("StopInstances", id, e))?;
    Ok(())
}

pub async fn terminate_instances(cloud: &Cloud, ids: &[String]) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    match cloud
        .ec2
        .terminate_instances()
        .set_instance_ids(Some(ids.to_vec()))
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(e) => {
            let err = cloud.fail("TerminateInstances", ids.join(", "), e);
            // Already gone is what we wanted.
            if err.aws_code() == Some("InvalidInstanceID.NotFound") {
                Ok(())
            } else {
                Err(err)
            }
        }
    }
}

/// `CreateImage` from a (stopped) instance, tagging the image in the same call.
pub async fn create_image(
    cloud: &Cloud,
    instance_id: &str,
    name: &str,
    description: Option<&str>,
    tags: &[(String, String)],
) -> Result<String> {
    let out = cloud
        .ec2
        .create_image()
        .instance_id(instance_id)
        .name(name)
        .set_description(description.map(str::to_owned))
        .no_reboot(true)
        .tag_specifications(tag_spec(ResourceType::Image, tags))
        .send()
        .await
        .map_err(|e| cloud.fail("CreateImage", format!("{name} from {instance_id}"), e))?;
    out.image_id()
        .map(str::to_owned)
        .ok_or_else(|| missing("CreateImage", "ImageId", instance_id, &cloud.region))
}

pub async fn copy_image(
    target: &Cloud,
    source_region: &str,
    source_image: &str,
    name: &str,
    description: Option<&str>,
    client_token: &str,
    encrypted: bool,
) -> Result<String> {
    let out = target
        .ec2
        .copy_image()
        .source_region(source_region)
        .source_image_id(source_image)
        .name(name)
        .set_description(description.map(str::to_owned))
        .client_token(client_token)
        .encrypted(encrypted)
        .send()
        .await
        .map_err(|e| {
            target.fail(
                "CopyImage",
                format!("{source_image} from {source_region}"),
                e,
            )
        })?;
    out.image_id()
        .map(str::to_owned)
        .ok_or_else(|| missing("CopyImage", "ImageId", source_image, &target.region))
}

pub async fn create_tags(
    cloud: &Cloud,
    resources: &[String],
    tags: &[(String, String)],
) -> Result<()> {
    if resources.is_empty() {
        return Ok(());
    }
    cloud
        .ec2
        .create_tags()
        .set_resources(Some(resources.to_vec()))
        .set_tags(Some(sdk_tags(tags)))
        .send()
        .await
        .map_err(|e| cloud.fail("CreateTags", resources.join(", "), e))?;
    Ok(())
}

pub async fn deregister_image(cloud: &Cloud, id: &str) -> Result<()> {
    match cloud.ec2.deregister_image().image_id(id).send().await {
        Ok(_) => Ok(()),
        Err(e) => {
            let err = cloud.fail("DeregisterImage", id, e);
            if err
                .aws_code()
                .is_some_and(|c| c.starts_with("InvalidAMIID"))
            {
                Ok(())
            } else {
                Err(err)
            }
        }
    }
}

pub async fn delete_snapshot(cloud: &Cloud, id: &str) -> Result<()> {
    match cloud.ec2.delete_snapshot().snapshot_id(id).send().await {
        Ok(_) => Ok(()),
        Err(e) => {
            let err = cloud.fail("DeleteSnapshot", id, e);
            if err.aws_code() == Some("InvalidSnapshot.NotFound") {
                Ok(())
            } else {
                Err(err)
            }
        }
    }
}

/// Snapshots of this account matching filters.
pub async fn list_snapshots(
    cloud: &Cloud,
    filters: Vec<Filter>,
    what: &str,
) -> Result<Vec<(String, BTreeMap<String, String>)>> {
    let mut found = Vec::new();
    let mut pages = cloud
        .ec2
        .describe_snapshots()
        .set_filters(Some(filters))
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| cloud.fail("DescribeSnapshots", what, e))?;
        found.extend(
            page.snapshots()
                .iter()
                .filter_map(|s| Some((s.snapshot_id()?.to_owned(), tag_map(s.tags())))),
        );
    }
    Ok(found)
}

/// Grants launch permission on an image, and create-volume permission on its snapshots.
pub async fn share_image(cloud: &Cloud, image: &ImageInfo, accounts: &[String]) -> Result<()> {
    use aws_sdk_ec2::types::{
        CreateVolumePermission, CreateVolumePermissionModifications, LaunchPermission,
        LaunchPermissionModifications,
    };
    let mut launch = LaunchPermissionModifications::builder();
    let mut volume = CreateVolumePermissionModifications::builder();
    for account in accounts {
        launch = launch.add(LaunchPermission::builder().user_id(account).build());
        volume = volume.add(CreateVolumePermission::builder().user_id(account).build());
    }
    cloud
        .ec2
        .modify_image_attribute()
        .image_id(&image.id)
        .launch_permission(launch.build())
        .send()
        .await
        .map_err(|e| cloud.fail("ModifyImageAttribute", &image.id, e))?;
    let volume = volume.build();
    for snapshot in &image.snapshot_ids {
        cloud
            .ec2
            .modify_snapshot_attribute()
            .snapshot_id(snapshot)
            .create_volume_permission(volume.clone())
            .send()
            .await
            .map_err(|e| cloud.fail("ModifySnapshotAttribute", snapshot, e))?;
    }
    Ok(())
}

/// A launch template's identity and version pointers.
#[derive(Debug, Clone)]
pub struct LaunchTemplateInfo {
    pub id: String,
    pub name: String,
    pub default_version: i64,
    pub latest_version: i64,
}

impl LaunchTemplateInfo {
    fn from_sdk(lt: &aws_sdk_ec2::types::LaunchTemplate) -> LaunchTemplateInfo {
        LaunchTemplateInfo {
            id: lt.launch_template_id().unwrap_or_default().to_owned(),
            name: lt.launch_template_name().unwrap_or_default().to_owned(),
            default_version: lt.default_version_number().unwrap_or_default(),
            latest_version: lt.latest_version_number().unwrap_or_default(),
        }
    }
}

/// Looks a launch template up by id (`lt-...`) or name.
pub async fn describe_launch_template(
    cloud: &Cloud,
    name_or_id: &str,
) -> Result<LaunchTemplateInfo> {
    let call = cloud.ec2.describe_launch_templates();
    let call = if name_or_id.starts_with("lt-") {
        call.launch_template_ids(name_or_id)
    } else {
        call.launch_template_names(name_or_id)
    };
    let out = call.send().await.map_err(|e| {
        cloud.fail(
            "DescribeLaunchTemplates",
            format!("launch template {name_or_id}"),
            e,
        )
    })?;
    let lt = out.launch_templates().first().ok_or_else(|| {
        missing(
            "DescribeLaunchTemplates",
            "LaunchTemplates[0]",
            name_or_id,
            &cloud.region,
        )
    })?;
    Ok(LaunchTemplateInfo::from_sdk(lt))
}

/// The default version of a launch template (by id `lt-...` or name) and its image, in one
/// `DescribeLaunchTemplateVersions` call. `latest_version` is not known from it and is 0.
pub async fn default_version(
    cloud: &Cloud,
    name_or_id: &str,
) -> Result<(LaunchTemplateInfo, Option<String>)> {
    let call = cloud
        .ec2
        .describe_launch_template_versions()
        .versions("$Default");
    let call = if name_or_id.starts_with("lt-") {
        call.launch_template_id(name_or_id)
    } else {
        call.launch_template_name(name_or_id)
    };
    let out = call.send().await.map_err(|e| {
        cloud.fail(
            "DescribeLaunchTemplateVersions",
            format!("launch template {name_or_id}"),
            e,
        )
    })?;
    let version = out.launch_template_versions().first().ok_or_else(|| {
        missing(
            "DescribeLaunchTemplateVersions",
            "LaunchTemplateVersions[0]",
            name_or_id,
            &cloud.region,
        )
    })?;
    let info = LaunchTemplateInfo {
        id: version.launch_template_id().unwrap_or_default().to_owned(),
        name: version
            .launch_template_name()
            .unwrap_or_default()
            .to_owned(),
        default_version: version.version_number().unwrap_or_default(),
        latest_version: 0,
    };
    let image = version
        .launch_template_data()
        .and_then(|d| d.image_id())
        .map(str::to_owned);
    Ok((info, image))
}

/// Every launch template of the account (id, name).
pub async fn list_launch_templates(cloud: &Cloud) -> Result<Vec<LaunchTemplateInfo>> {
    let mut found = Vec::new();
    let mut pages = cloud
        .ec2
        .describe_launch_templates()
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page =
            page.map_err(|e| cloud.fail("DescribeLaunchTemplates", "all launch templates", e))?;
        found.extend(
            page.launch_templates()
                .iter()
                .map(LaunchTemplateInfo::from_sdk),
        );
    }
    Ok(found)
}

/// One version of a launch template, reduced to what kiln reads.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TemplateVersion {
    pub number: i64,
    pub is_default: bool,
    pub image_id: Option<String>,
    pub description: String,
    pub created_at: Option<String>,
}

/// Every version of a launch template, newest first.
pub async fn list_template_versions(
    cloud: &Cloud,
    template_id: &str,
) -> Result<Vec<TemplateVersion>> {
    let mut found = Vec::new();
    let mut pages = cloud
        .ec2
        .describe_launch_template_versions()
        .launch_template_id(template_id)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page =
            page.map_err(|e| cloud.fail("DescribeLaunchTemplateVersions", template_id, e))?;
        found.extend(page.launch_template_versions().iter().map(|v| {
            TemplateVersion {
                number: v.version_number().unwrap_or_default(),
                is_default: v.default_version().unwrap_or(false),
                image_id: v
                    .launch_template_data()
                    .and_then(|d| d.image_id())
                    .map(str::to_owned),
                description: v.version_description().unwrap_or_default().to_owned(),
                created_at: v.create_time().and_then(|t| {
                    t.fmt(aws_sdk_ec2::primitives::DateTimeFormat::DateTime)
                        .ok()
                }),
            }
        }));
    }
    found.sort_by_key(|v| std::cmp::Reverse(v.number));
    Ok(found)
}

/// Creates a version from `source_version` with only the image changed; returns its number.
pub async fn create_template_version(
    cloud: &Cloud,
    template_id: &str,
    source_version: i64,
    image_id: &str,
    description: &str,
    client_token: &str,
) -> Result<i64> {
    let out = cloud
        .ec2
        .create_launch_template_version()
        .launch_template_id(template_id)
        .source_version(source_version.to_string())
        .launch_template_data(
            RequestLaunchTemplateData::builder()
                .image_id(image_id)
                .build(),
        )
        .version_description(truncate(description, 255))
        .client_token(client_token)
        .send()
        .await
        .map_err(|e| {
            cloud.fail(
                "CreateLaunchTemplateVersion",
                format!("{template_id} (from version {source_version})"),
                e,
            )
        })?;
    out.launch_template_version()
        .and_then(|v| v.version_number())
        .ok_or_else(|| {
            missing(
                "CreateLaunchTemplateVersion",
                "LaunchTemplateVersion.VersionNumber",
                template_id,
                &cloud.region,
            )
        })
}

pub async fn set_default_version(cloud: &Cloud, template_id: &str, version: i64) -> Result<()> {
    cloud
        .ec2
        .modify_launch_template()
        .launch_template_id(template_id)
        .default_version(version.to_string())
        .send()
        .await
        .map_err(|e| {
            cloud.fail(
                "ModifyLaunchTemplate",
                format!("{template_id} default version {version}"),
                e,
            )
        })?;
    Ok(())
}

pub async fn delete_template_version(cloud: &Cloud, template_id: &str, version: i64) -> Result<()> {
    cloud
        .ec2
        .delete_launch_template_versions()
        .launch_template_id(template_id)
        .versions(version.to_string())
        .send()
        .await
        .map_err(|e| {
            cloud.fail(
                "DeleteLaunchTemplateVersions",
                format!("{template_id} version {version}"),
                e,
            )
        })?;
    Ok(())
}

/// Whether a state name is one an instance never leaves.
pub fn is_gone(state: &str) -> bool {
    state == InstanceStateName::Terminated.as_str()
        || state == InstanceStateName::ShuttingDown.as_str()
}
