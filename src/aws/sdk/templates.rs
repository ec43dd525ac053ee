//! Launch templates (EC2): looking templates up by id or name, listing them and their versions,
//! creating a version with a new image, moving the default version, deleting versions.

use aws_sdk_ec2::primitives::DateTimeFormat;
use aws_sdk_ec2::types::RequestLaunchTemplateData;

use super::common::{absent_on, truncate};
use super::Sdk;
use crate::aws::model::{LaunchTemplate, NewTemplateVersion, TemplateRef, TemplateVersion};
use crate::error::{Error, Result};

/// AWS keeps at most this many characters of a version description.
const MAX_VERSION_DESCRIPTION: usize = 255;

/// A template reference as the (id, name) pair the EC2 requests take: exactly one is set.
fn id_or_name(template: &TemplateRef) -> (Option<String>, Option<String>) {
    match template {
        TemplateRef::Id(id) => (Some(id.clone()), None),
        TemplateRef::Name(name) => (None, Some(name.clone())),
    }
}

fn to_template(
    sdk: &Sdk,
    resource: &str,
    template: &aws_sdk_ec2::types::LaunchTemplate,
) -> Result<LaunchTemplate> {
    const OP: &str = "DescribeLaunchTemplates";
    let id = sdk.required(
        template.launch_template_id(),
        OP,
        "LaunchTemplates[].LaunchTemplateId",
        resource,
    )?;
    let field = |name: &str| format!("LaunchTemplates[].{name}");
    Ok(LaunchTemplate {
        id: id.to_owned(),
        name: sdk
            .required(
                template.launch_template_name(),
                OP,
                &field("LaunchTemplateName"),
                id,
            )?
            .to_owned(),
        default_version: sdk.required(
            template.default_version_number(),
            OP,
            &field("DefaultVersionNumber"),
            id,
        )?,
        latest_version: sdk.required(
            template.latest_version_number(),
            OP,
            &field("LatestVersionNumber"),
            id,
        )?,
        tags: super::common::tag_map(template.tags()),
    })
}

fn to_version(
    sdk: &Sdk,
    resource: &str,
    version: &aws_sdk_ec2::types::LaunchTemplateVersion,
) -> Result<TemplateVersion> {
    const OP: &str = "DescribeLaunchTemplateVersions";
    let field = |name: &str| format!("LaunchTemplateVersions[].{name}");
    let template_id = sdk.required(
        version.launch_template_id(),
        OP,
        &field("LaunchTemplateId"),
        resource,
    )?;
    Ok(TemplateVersion {
        template_id: template_id.to_owned(),
        template_name: sdk
            .required(
                version.launch_template_name(),
                OP,
                &field("LaunchTemplateName"),
                template_id,
            )?
            .to_owned(),
        number: sdk.required(
            version.version_number(),
            OP,
            &field("VersionNumber"),
            template_id,
        )?,
        is_default: sdk.required(
            version.default_version(),
            OP,
            &field("DefaultVersion"),
            template_id,
        )?,
        image_id: version
            .launch_template_data()
            .and_then(|d| d.image_id())
            .map(str::to_owned),
        description: version.version_description().unwrap_or_default().to_owned(),
        created_at: version
            .create_time()
            .and_then(|t| t.fmt(DateTimeFormat::DateTime).ok()),
        instance_type: version
            .launch_template_data()
            .and_then(|d| d.instance_type())
            .map(|t| t.as_str().to_owned()),
        subnet_id: version
            .launch_template_data()
            .and_then(|d| d.network_interfaces().iter().find_map(|n| n.subnet_id()))
            .map(str::to_owned),
        instance_profile: version
            .launch_template_data()
            .and_then(|d| d.iam_instance_profile())
            .and_then(|p| p.arn().or(p.name()))
            .map(str::to_owned),
    })
}

/// One launch template, by id or by name.
pub async fn launch_template(sdk: &Sdk, template: &TemplateRef) -> Result<LaunchTemplate> {
    let resource = template.to_string();
    let (id, name) = id_or_name(template);
    let out = sdk
        .ec2
        .describe_launch_templates()
        .set_launch_template_ids(id.map(|id| vec![id]))
        .set_launch_template_names(name.map(|name| vec![name]))
        .send()
        .await
        .map_err(|e| sdk.fail("DescribeLaunchTemplates", &resource, e))?;
    let found = sdk.required(
        out.launch_templates().first(),
        "DescribeLaunchTemplates",
        "LaunchTemplates[0]",
        &resource,
    )?;
    to_template(sdk, &resource, found)
}

/// Every launch template of the account in this region.
pub async fn launch_templates(sdk: &Sdk) -> Result<Vec<LaunchTemplate>> {
    let resource = "all launch templates";
    let mut pages = sdk.ec2.describe_launch_templates().into_paginator().send();
    let mut found = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| sdk.fail("DescribeLaunchTemplates", resource, e))?;
        for template in page.launch_templates() {
            found.push(to_template(sdk, resource, template)?);
        }
    }
    Ok(found)
}

/// The default version of a template, with the template's id and name, in one call; an image
/// id written as `resolve:ssm:...` is resolved to the AMI the parameter holds (`ResolveAlias`).
pub async fn default_template_version(
    sdk: &Sdk,
    template: &TemplateRef,
) -> Result<TemplateVersion> {
    let resource = template.to_string();
    let (id, name) = id_or_name(template);
    let out = sdk
        .ec2
        .describe_launch_template_versions()
        .set_launch_template_id(id)
        .set_launch_template_name(name)
        .versions("$Default")
        .resolve_alias(true)
        .send()
        .await
        .map_err(|e| sdk.fail("DescribeLaunchTemplateVersions", &resource, e))?;
    let version = sdk.required(
        out.launch_template_versions().first(),
        "DescribeLaunchTemplateVersions",
        "LaunchTemplateVersions[0]",
        &resource,
    )?;
    to_version(sdk, &resource, version)
}

/// Every version of a template, newest first. Image ids written as `resolve:ssm:...` are
/// resolved to the AMI the parameter holds (`ResolveAlias`), as for [`default_template_version`].
pub async fn template_versions(sdk: &Sdk, template_id: &str) -> Result<Vec<TemplateVersion>> {
    let resource = format!("launch template {template_id}");
    let mut pages = sdk
        .ec2
        .describe_launch_template_versions()
        .launch_template_id(template_id)
        .resolve_alias(true)
        .into_paginator()
        .send();
    let mut found = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| sdk.fail("DescribeLaunchTemplateVersions", &resource, e))?;
        for version in page.launch_template_versions() {
            found.push(to_version(sdk, &resource, version)?);
        }
    }
    found.sort_by_key(|v| std::cmp::Reverse(v.number));
    Ok(found)
}

/// A version from `source_version` with only the image changed; returns its number.
pub async fn create_template_version(sdk: &Sdk, request: &NewTemplateVersion) -> Result<i64> {
    let resource = format!(
        "launch template {} (from version {})",
        request.template_id, request.source_version
    );
    let out = sdk
        .ec2
        .create_launch_template_version()
        .launch_template_id(&request.template_id)
        .source_version(request.source_version.to_string())
        .launch_template_data(
            RequestLaunchTemplateData::builder()
                .image_id(&request.image_id)
                .build(),
        )
        .version_description(truncate(&request.description, MAX_VERSION_DESCRIPTION))
        .client_token(&request.client_token)
        .send()
        .await
        .map_err(|e| sdk.fail("CreateLaunchTemplateVersion", &resource, e))?;
    sdk.required(
        out.launch_template_version()
            .and_then(|v| v.version_number()),
        "CreateLaunchTemplateVersion",
        "LaunchTemplateVersion.VersionNumber",
        &resource,
    )
}

pub async fn set_default_version(sdk: &Sdk, template_id: &str, version: i64) -> Result<()> {
    sdk.ec2
        .modify_launch_template()
        .launch_template_id(template_id)
        .default_version(version.to_string())
        .send()
        .await
        .map_err(|e| {
            sdk.fail(
                "ModifyLaunchTemplate",
                format!("launch template {template_id} default version {version}"),
                e,
            )
        })?;
    Ok(())
}

/// Deletes one version; one that is already gone is fine. AWS reports a version it did not
/// delete (the default one, say) inside a successful response: that is an error here.
pub async fn delete_template_version(sdk: &Sdk, template_id: &str, version: i64) -> Result<()> {
    let resource = format!("launch template {template_id} version {version}");
    let out = sdk
        .ec2
        .delete_launch_template_versions()
        .launch_template_id(template_id)
        .versions(version.to_string())
        .send()
        .await
        .map_err(|e| sdk.fail("DeleteLaunchTemplateVersions", &resource, e))?;
    let deleted = out
        .successfully_deleted_launch_template_versions()
        .iter()
        .any(|v| v.version_number() == Some(version));
    match out
        .unsuccessfully_deleted_launch_template_versions()
        .first()
    {
        None if deleted => Ok(()),
        // Neither list names it: AWS did not say it deleted the version, so it is not counted.
        None => Err(sdk.error(
            "DeleteLaunchTemplateVersions",
            resource,
            Some("MissingField".into()),
            "the response lists the version neither as deleted nor as not deleted",
        )),
        Some(failed) => {
            let refused = Err(unsuccessful(sdk, resource, failed));
            absent_on::<()>(refused, &["launchTemplateVersionDoesNotExist"])?;
            Ok(())
        }
    }
}

fn unsuccessful(
    sdk: &Sdk,
    resource: String,
    failed: &aws_sdk_ec2::types::DeleteLaunchTemplateVersionsResponseErrorItem,
) -> Error {
    let info = failed.response_error();
    sdk.error(
        "DeleteLaunchTemplateVersions",
        resource,
        info.and_then(|i| i.code()).map(|c| c.as_str().to_owned()),
        info.and_then(|i| i.message())
            .unwrap_or("the version was not deleted"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_ref_sets_exactly_one_of_id_and_name() {
        assert_eq!(
            id_or_name(&TemplateRef::parse("lt-0abc")),
            (Some("lt-0abc".into()), None)
        );
        assert_eq!(
            id_or_name(&TemplateRef::parse("rudder-dataplane")),
            (None, Some("rudder-dataplane".into()))
        );
    }
}
