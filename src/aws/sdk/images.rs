//! Images, their snapshots, and tags (EC2): describing and finding images, creating, copying,
//! sharing and deregistering them, finding and deleting their snapshots, tagging resources.

use std::time::SystemTime;

use aws_sdk_ec2::types::{
    AttributeValue, CreateVolumePermission, CreateVolumePermissionModifications, Filter,
    ImageReferenceOptionName, ImageReferenceResourceType, LaunchPermission,
    LaunchPermissionModifications, ResourceType, ResourceTypeOption, ResourceTypeRequest,
};

use super::common::{absent_on, filter, sdk_tags, tag_map, tag_spec};
use super::Sdk;
use crate::aws::model::{
    CopyImageRequest, CreateImageRequest, Image, ImageQuery, ImageReference, ImageState,
};
use crate::error::Result;

/// Error codes of DescribeImages and DeregisterImage that mean "no such image".
const NO_IMAGE: &[&str] = &["InvalidAMIID"];

/// Reads one SDK image; `resource` is what the call was about (for a missing-field error).
fn to_image(
    sdk: &Sdk,
    operation: &'static str,
    resource: &str,
    image: &aws_sdk_ec2::types::Image,
) -> Result<Image> {
    let id = sdk.required(image.image_id(), operation, "Images[].ImageId", resource)?;
    let state = sdk.required(image.state(), operation, "Images[].State", id)?;
    let root_device_name = image.root_device_name();
    let mappings = image.block_device_mappings();
    Ok(Image {
        id: id.to_owned(),
        name: image.name().unwrap_or_default().to_owned(),
        state: ImageState::from(state.as_str()),
        state_reason: image
            .state_reason()
            .and_then(|r| r.message())
            .unwrap_or_default()
            .to_owned(),
        creation_date: sdk
            .required(
                image.creation_date(),
                operation,
                "Images[].CreationDate",
                id,
            )?
            .to_owned(),
        owner_id: sdk
            .required(image.owner_id(), operation, "Images[].OwnerId", id)?
            .to_owned(),
        root_device_name: root_device_name.map(str::to_owned),
        root_volume_size: mappings
            .iter()
            .find(|m| root_device_name.is_some() && m.device_name() == root_device_name)
            .and_then(|m| m.ebs())
            .and_then(|e| e.volume_size()),
        architecture: image.architecture().map(|a| a.as_str().to_owned()),
        snapshot_ids: mappings
            .iter()
            .filter_map(|m| m.ebs().and_then(|e| e.snapshot_id()).map(str::to_owned))
            .collect(),
        imds_support: image.imds_support().map(|v| v.as_str().to_owned()),
        deprecation_time: image.deprecation_time().map(str::to_owned),
        deregistration_protection: image.deregistration_protection().map(str::to_owned),
        tags: tag_map(image.tags()),
    })
}

/// One DescribeImages call by ids.
async fn describe(sdk: &Sdk, ids: &[String]) -> Result<Vec<Image>> {
    let resource = ids.join(", ");
    let out = sdk
        .ec2
        .describe_images()
        .set_image_ids(Some(ids.to_vec()))
        .send()
        .await
        .map_err(|e| sdk.fail("DescribeImages", &resource, e))?;
    out.images()
        .iter()
        .map(|i| to_image(sdk, "DescribeImages", &resource, i))
        .collect()
}

/// The images among `ids` that exist: one call, and when AWS refuses it because an id is unknown,
/// one call per id so that one deregistered image does not hide the others.
pub async fn images(sdk: &Sdk, ids: &[String]) -> Result<Vec<Image>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    if let Some(images) = absent_on(describe(sdk, ids).await, NO_IMAGE)? {
        return Ok(images);
    }
    let mut found = Vec::new();
    for id in ids {
        if let Some(images) = absent_on(describe(sdk, std::slice::from_ref(id)).await, NO_IMAGE)? {
            found.extend(images);
        }
    }
    Ok(found)
}

/// The filters of an image query.
fn image_filters(query: &ImageQuery) -> Vec<Filter> {
    let mut filters = Vec::new();
    if let Some(name) = &query.name {
        filters.push(filter("name", [name.as_str()]));
    }
    if let Some(state) = &query.state {
        filters.push(filter("state", [state.as_str()]));
    }
    if let Some(architecture) = &query.architecture {
        filters.push(filter("architecture", [architecture.as_str()]));
    }
    for (key, value) in &query.tags {
        filters.push(filter(&format!("tag:{key}"), [value.as_str()]));
    }
    if !query.tag_keys.is_empty() {
        filters.push(filter("tag-key", query.tag_keys.iter().map(String::as_str)));
    }
    filters
}

/// How an image query reads in an error message: `images (owners self, tag:kiln:recipe=web)`.
fn describe_query(query: &ImageQuery) -> String {
    let mut parts = Vec::new();
    if !query.owners.is_empty() {
        parts.push(format!("owners {}", query.owners.join(" ")));
    }
    if let Some(name) = &query.name {
        parts.push(format!("name {name}"));
    }
    if let Some(state) = &query.state {
        parts.push(format!("state {state}"));
    }
    if let Some(architecture) = &query.architecture {
        parts.push(format!("architecture {architecture}"));
    }
    parts.extend(query.tags.iter().map(|(k, v)| format!("tag:{k}={v}")));
    parts.extend(query.tag_keys.iter().map(|k| format!("tag-key {k}")));
    if parts.is_empty() {
        "all images".to_owned()
    } else {
        format!("images ({})", parts.join(", "))
    }
}

/// Images matching `query`, every page.
pub async fn find_images(sdk: &Sdk, query: &ImageQuery) -> Result<Vec<Image>> {
    let resource = describe_query(query);
    let filters = image_filters(query);
    let mut pages = sdk
        .ec2
        .describe_images()
        .set_owners((!query.owners.is_empty()).then(|| query.owners.clone()))
        .set_filters((!filters.is_empty()).then_some(filters))
        .into_paginator()
        .send();
    let mut images = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| sdk.fail("DescribeImages", &resource, e))?;
        for image in page.images() {
            images.push(to_image(sdk, "DescribeImages", &resource, image)?);
        }
    }
    Ok(images)
}

/// `CreateImage` without reboot, the image and its snapshots tagged in the same call.
pub async fn create_image(sdk: &Sdk, request: &CreateImageRequest) -> Result<String> {
    let resource = format!("image {} from {}", request.name, request.instance_id);
    let call = sdk
        .ec2
        .create_image()
        .instance_id(&request.instance_id)
        .name(&request.name)
        .set_description(request.description.clone())
        .no_reboot(true)
        .set_tag_specifications(image_tag_specs(&request.tags));
    let out = call
        .send()
        .await
        .map_err(|e| sdk.fail("CreateImage", &resource, e))?;
    let id = sdk.required(out.image_id(), "CreateImage", "ImageId", &resource)?;
    Ok(id.to_owned())
}

/// Tag specifications for a new image and its snapshots; none when there are no tags.
fn image_tag_specs(tags: &crate::aws::Tags) -> Option<Vec<aws_sdk_ec2::types::TagSpecification>> {
    (!tags.is_empty()).then(|| {
        vec![
            tag_spec(ResourceType::Image, tags),
            tag_spec(ResourceType::Snapshot, tags),
        ]
    })
}

/// `CopyImage` from another region into this one, encrypted with the request's key and tagged
/// in the same call (the new id may not be visible to `CreateTags` yet).
pub async fn copy_image(sdk: &Sdk, request: &CopyImageRequest) -> Result<String> {
    let resource = format!("{} from {}", request.source_image_id, request.source_region);
    let call = sdk
        .ec2
        .copy_image()
        .source_region(&request.source_region)
        .source_image_id(&request.source_image_id)
        .name(&request.name)
        .set_description(request.description.clone())
        .client_token(&request.client_token)
        .encrypted(request.encrypted)
        .set_kms_key_id(request.kms_key_id.clone())
        .set_tag_specifications(image_tag_specs(&request.tags));
    let out = call
        .send()
        .await
        .map_err(|e| sdk.fail("CopyImage", &resource, e))?;
    let id = sdk.required(out.image_id(), "CopyImage", "ImageId", &resource)?;
    Ok(id.to_owned())
}

/// Deregisters an image. An unknown id is `InvalidAMIID.NotFound`: right after CreateImage it
/// may only mean "not visible yet", so the caller decides.
pub async fn deregister_image(sdk: &Sdk, image_id: &str) -> Result<()> {
    sdk.ec2
        .deregister_image()
        .image_id(image_id)
        .send()
        .await
        .map_err(|e| sdk.fail("DeregisterImage", image_id, e))?;
    Ok(())
}

/// Instances launched from the image must use IMDSv2 (`ImdsSupport` `v2.0`, which AWS never
/// lets anyone unset).
pub async fn require_imdsv2(sdk: &Sdk, image_id: &str) -> Result<()> {
    sdk.ec2
        .modify_image_attribute()
        .image_id(image_id)
        .imds_support(AttributeValue::builder().value("v2.0").build())
        .send()
        .await
        .map_err(|e| sdk.fail("ModifyImageAttribute", image_id, e))?;
    Ok(())
}

/// `EnableImageDeprecation` at `at`.
pub async fn deprecate_image(sdk: &Sdk, image_id: &str, at: SystemTime) -> Result<()> {
    sdk.ec2
        .enable_image_deprecation()
        .image_id(image_id)
        .deprecate_at(aws_sdk_ec2::primitives::DateTime::from(at))
        .send()
        .await
        .map_err(|e| sdk.fail("EnableImageDeprecation", image_id, e))?;
    Ok(())
}

/// `EnableImageDeregistrationProtection`, without the 24-hour cooldown on disabling it.
pub async fn protect_image(sdk: &Sdk, image_id: &str) -> Result<()> {
    sdk.ec2
        .enable_image_deregistration_protection()
        .image_id(image_id)
        .with_cooldown(false)
        .send()
        .await
        .map_err(|e| sdk.fail("EnableImageDeregistrationProtection", image_id, e))?;
    Ok(())
}

/// `DisableImageDeregistrationProtection`.
pub async fn unprotect_image(sdk: &Sdk, image_id: &str) -> Result<()> {
    sdk.ec2
        .disable_image_deregistration_protection()
        .image_id(image_id)
        .send()
        .await
        .map_err(|e| sdk.fail("DisableImageDeregistrationProtection", image_id, e))?;
    Ok(())
}

/// Error codes that mean this endpoint does not offer an operation.
const NOT_OFFERED: &[&str] = &["InvalidAction", "UnsupportedOperation", "NotImplemented"];
/// `DescribeImageReferences` takes at most this many image ids per call.
const REFERENCE_BATCH: usize = 10;
/// Instance states that keep an image in use (all but `terminated`).
const USING_STATES: &[&str] = &["pending", "running", "shutting-down", "stopping", "stopped"];
/// Every launch template version is checked (AWS's maximum depth; its default is 10).
const ALL_VERSIONS: &str = "10000";

/// What `DescribeImageReferences` is asked to check: live instances, every version of every
/// launch template, and SSM parameters.
fn reference_types() -> Vec<ResourceTypeRequest> {
    let option = |name: ImageReferenceOptionName, values: &[&str]| {
        ResourceTypeOption::builder()
            .option_name(name)
            .set_option_values(Some(values.iter().map(|v| (*v).to_owned()).collect()))
            .build()
    };
    vec![
        ResourceTypeRequest::builder()
            .resource_type(ImageReferenceResourceType::Ec2Instance)
            .resource_type_options(option(ImageReferenceOptionName::StateName, USING_STATES))
            .build(),
        ResourceTypeRequest::builder()
            .resource_type(ImageReferenceResourceType::Ec2LaunchTemplate)
            .resource_type_options(option(
                ImageReferenceOptionName::VersionDepth,
                &[ALL_VERSIONS],
            ))
            .build(),
        ResourceTypeRequest::builder()
            .resource_type(ImageReferenceResourceType::SsmParameter)
            .build(),
    ]
}

/// `DescribeImageReferences` for `image_ids` (in batches of ten), every page; `None` when the
/// endpoint does not offer it.
pub async fn image_references(
    sdk: &Sdk,
    image_ids: &[String],
) -> Result<Option<Vec<ImageReference>>> {
    let mut found = Vec::new();
    for batch in image_ids.chunks(REFERENCE_BATCH) {
        let resource = format!("references to {}", batch.join(", "));
        let mut pages = sdk
            .ec2
            .describe_image_references()
            .set_image_ids(Some(batch.to_vec()))
            .set_resource_types(Some(reference_types()))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = match page.map_err(|e| sdk.fail("DescribeImageReferences", &resource, e)) {
                Ok(page) => page,
                Err(e) if e.aws_code().is_some_and(|c| NOT_OFFERED.contains(&c)) => {
                    return Ok(None)
                }
                Err(e) => return Err(e),
            };
            for reference in page.image_references() {
                let field = |name| format!("ImageReferences[].{name}");
                let image_id = sdk.required(
                    reference.image_id(),
                    "DescribeImageReferences",
                    &field("ImageId"),
                    &resource,
                )?;
                found.push(ImageReference {
                    image_id: image_id.to_owned(),
                    resource_type: reference
                        .resource_type()
                        .map(|t| t.as_str().to_owned())
                        .unwrap_or_default(),
                    arn: sdk
                        .required(
                            reference.arn(),
                            "DescribeImageReferences",
                            &field("Arn"),
                            image_id,
                        )?
                        .to_owned(),
                });
            }
        }
    }
    Ok(Some(found))
}

/// Launch permission on the image, create-volume permission on each of its snapshots.
pub async fn share_image(
    sdk: &Sdk,
    image_id: &str,
    snapshot_ids: &[String],
    accounts: &[String],
) -> Result<()> {
    if accounts.is_empty() {
        return Ok(());
    }
    let mut launch = LaunchPermissionModifications::builder();
    let mut volume = CreateVolumePermissionModifications::builder();
    for account in accounts {
        launch = launch.add(LaunchPermission::builder().user_id(account).build());
        volume = volume.add(CreateVolumePermission::builder().user_id(account).build());
    }
    sdk.ec2
        .modify_image_attribute()
        .image_id(image_id)
        .launch_permission(launch.build())
        .send()
        .await
        .map_err(|e| sdk.fail("ModifyImageAttribute", image_id, e))?;
    let volume = volume.build();
    for snapshot in snapshot_ids {
        sdk.ec2
            .modify_snapshot_attribute()
            .snapshot_id(snapshot)
            .create_volume_permission(volume.clone())
            .send()
            .await
            .map_err(|e| sdk.fail("ModifySnapshotAttribute", snapshot, e))?;
    }
    Ok(())
}

/// This account's snapshots whose description names `image_id` (AWS writes "Created by
/// CreateImage(...) for ami-... " there), every page.
pub async fn snapshots_of_image(sdk: &Sdk, image_id: &str) -> Result<Vec<String>> {
    let resource = format!("snapshots of {image_id}");
    let mut pages = sdk
        .ec2
        .describe_snapshots()
        .owner_ids("self")
        .filters(filter("description", [format!("*{image_id}*")]))
        .into_paginator()
        .send();
    let mut found = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| sdk.fail("DescribeSnapshots", &resource, e))?;
        for snapshot in page.snapshots() {
            let id = sdk.required(
                snapshot.snapshot_id(),
                "DescribeSnapshots",
                "Snapshots[].SnapshotId",
                &resource,
            )?;
            found.push(id.to_owned());
        }
    }
    Ok(found)
}

/// Deletes a snapshot. An unknown id is `InvalidSnapshot.NotFound`: right after CreateImage it
/// may only mean "not visible yet", so the caller decides.
pub async fn delete_snapshot(sdk: &Sdk, snapshot_id: &str) -> Result<()> {
    sdk.ec2
        .delete_snapshot()
        .snapshot_id(snapshot_id)
        .send()
        .await
        .map_err(|e| sdk.fail("DeleteSnapshot", snapshot_id, e))?;
    Ok(())
}

/// Tags resources (nothing to do without resources or tags).
pub async fn create_tags(
    sdk: &Sdk,
    resource_ids: &[String],
    tags: &[(String, String)],
) -> Result<()> {
    if resource_ids.is_empty() || tags.is_empty() {
        return Ok(());
    }
    sdk.ec2
        .create_tags()
        .set_resources(Some(resource_ids.to_vec()))
        .set_tags(Some(sdk_tags(tags)))
        .send()
        .await
        .map_err(|e| sdk.fail("CreateTags", resource_ids.join(", "), e))?;
    Ok(())
}

/// `DeleteTags` by key (any value).
pub async fn delete_tags(sdk: &Sdk, resource_ids: &[String], keys: &[String]) -> Result<()> {
    if resource_ids.is_empty() || keys.is_empty() {
        return Ok(());
    }
    let tags = keys
        .iter()
        .map(|k| aws_sdk_ec2::types::Tag::builder().key(k).build())
        .collect();
    sdk.ec2
        .delete_tags()
        .set_resources(Some(resource_ids.to_vec()))
        .set_tags(Some(tags))
        .send()
        .await
        .map_err(|e| sdk.fail("DeleteTags", resource_ids.join(", "), e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_query_becomes_filters() {
        let query = ImageQuery::own()
            .named("web-*")
            .in_state(ImageState::Available)
            .tagged("kiln:recipe", "web")
            .with_tag_key("kiln:build-id");
        let filters = image_filters(&query);
        let names: Vec<_> = filters.iter().filter_map(|f| f.name()).collect();
        assert_eq!(names, ["name", "state", "tag:kiln:recipe", "tag-key"]);
        assert_eq!(filters[1].values(), ["available"]);
        assert_eq!(filters[2].values(), ["web"]);
        assert_eq!(
            describe_query(&query),
            "images (owners self, name web-*, state available, tag:kiln:recipe=web, tag-key kiln:build-id)"
        );
        assert!(image_filters(&ImageQuery::default()).is_empty());
    }
}
