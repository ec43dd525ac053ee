//! Release: point the launch template's default version at an image, and optionally roll the
//! auto scaling group onto it with an instance refresh.
//!
//! A release never edits an existing version: it creates a new one from the current default
//! (`SourceVersion`, so every other setting is kept) with only `ImageId` changed, then makes it the
//! default. Releasing an image the default already points at does nothing (idempotent re-runs).

use std::time::Duration;

use aws_sdk_autoscaling::types::RefreshPreferences;
use serde::Serialize;

use crate::aws::poll::{wait_until, Probe, Wait};
use crate::aws::sdk::ec2;
use crate::aws::sdk::Sdk as Cloud;
use crate::error::{Error, Result};
use crate::ledger::{Ledger, Resource};
use crate::plan::ReleaseSpec;
use crate::report::Reporter;

/// The launch template part of the manifest.
#[derive(Debug, Clone, Serialize)]
pub struct LaunchTemplateRelease {
    pub id: String,
    pub name: String,
    pub previous_default_version: i64,
    pub default_version: i64,
    /// The version this release created; `None` when the default already had the image.
    pub created_version: Option<i64>,
}

/// The version kiln writes into the version description, so `history` can tell its builds.
pub fn version_description(build_id: &str, recipe: &str, version: &str, image_id: &str) -> String {
    format!("kiln build {build_id}: {recipe} {version} {image_id}")
}

/// Makes the launch template's default version use `image_id`.
pub async fn release_image(
    cloud: &Cloud,
    spec: &ReleaseSpec,
    image_id: &str,
    description: &str,
    client_token: &str,
    ledger: Option<&Ledger>,
) -> Result<LaunchTemplateRelease> {
    // One call tells the template's id, its default version and that version's image.
    let (template, default_image) = ec2::default_version(cloud, &spec.launch_template).await?;
    let mut release = LaunchTemplateRelease {
        id: template.id.clone(),
        name: template.name.clone(),
        previous_default_version: template.default_version,
        default_version: template.default_version,
        created_version: None,
    };
    if default_image.as_deref() == Some(image_id) {
        return Ok(release);
    }
    let version = ec2::create_template_version(
        cloud,
        &template.id,
        template.default_version,
        image_id,
        description,
        client_token,
    )
    .await?;
    let resource = Resource::TemplateVersion {
        template_id: template.id.clone(),
        version,
        region: cloud.region.clone(),
    };
    if let Some(ledger) = ledger {
        ledger.created(resource.clone())?;
    }
    release.created_version = Some(version);
    if spec.set_default {
        ec2::set_default_version(cloud, &template.id, version).await?;
        release.default_version = version;
    }
    if let Some(ledger) = ledger {
        ledger.kept(resource)?;
    }
    Ok(release)
}

/// How an instance refresh ended.
#[derive(Debug, Clone, Serialize)]
pub struct RefreshOutcome {
    pub auto_scaling_group: String,
    pub refresh_id: String,
    pub status: String,
    pub reason: String,
}

/// Starts an instance refresh of `group` with the release's preferences and follows it until it
/// ends or `timeout` passes.
pub async fn refresh_group(
    cloud: &Cloud,
    reporter: &dyn Reporter,
    phase: &str,
    spec: &ReleaseSpec,
    group: &str,
    timeout: Duration,
) -> Result<RefreshOutcome> {
    let preferences = RefreshPreferences::builder()
        .min_healthy_percentage(spec.min_healthy_percentage)
        .instance_warmup(spec.instance_warmup.as_secs() as i32)
        .skip_matching(true)
        .build();
    let out = cloud
        .autoscaling
        .start_instance_refresh()
        .auto_scaling_group_name(group)
        .preferences(preferences)
        .send()
        .await
        .map_err(|e| {
            cloud.fail(
                "StartInstanceRefresh",
                format!("auto scaling group {group}"),
                e,
            )
        })?;
    let refresh_id = out.instance_refresh_id().unwrap_or_default().to_owned();
    let wait = Wait {
        phase: "waiting for the instance refresh",
        resource: &format!("instance refresh {refresh_id} of {group}"),
        region: &cloud.region,
        timeout,
        hint: "look at the group's activity history: new instances failing health checks are the usual cause",
    };
    wait_until(
        wait,
        |state| reporter.phase_progress(phase, state),
        || async {
            let out = cloud
                .autoscaling
                .describe_instance_refreshes()
                .auto_scaling_group_name(group)
                .instance_refresh_ids(&refresh_id)
                .send()
                .await
                .map_err(|e| {
                    cloud.fail(
                        "DescribeInstanceRefreshes",
                        format!("{refresh_id} of {group}"),
                        e,
                    )
                })?;
            let Some(refresh) = out.instance_refreshes().first() else {
                return Ok(Probe::Pending("not visible yet".into()));
            };
            let status = refresh
                .status()
                .map(|s| s.as_str().to_owned())
                .unwrap_or_default();
            Ok(match status.as_str() {
                "Successful" | "Failed" | "Cancelled" | "RollbackSuccessful" | "RollbackFailed" => {
                    Probe::Done(RefreshOutcome {
                        auto_scaling_group: group.to_owned(),
                        refresh_id: refresh_id.clone(),
                        status: status.clone(),
                        reason: refresh.status_reason().unwrap_or_default().to_owned(),
                    })
                }
                _ => Probe::Pending(format!(
                    "{status} {}%",
                    refresh.percentage_complete().unwrap_or(0)
                )),
            })
        },
    )
    .await
}

/// Fails with a clear message unless the refresh succeeded.
pub fn ensure_refreshed(outcome: &RefreshOutcome, region: &str) -> Result<()> {
    if outcome.status == "Successful" {
        return Ok(());
    }
    Err(Error::BadState {
        phase: "instance refresh",
        resource: format!("{} of {}", outcome.refresh_id, outcome.auto_scaling_group),
        region: region.to_owned(),
        state: outcome.status.clone(),
        reason: outcome.reason.clone(),
    })
}
