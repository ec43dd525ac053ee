//! Release: point the launch template's default version at an image, and optionally roll the
//! auto scaling group onto it with an instance refresh.
//!
//! A release never edits an existing version: it creates a new one from the current default
//! (`SourceVersion`, so every other setting is kept) with only `ImageId` changed, then makes it the
//! default. Releasing an image the default already points at does nothing (idempotent re-runs).

use std::time::Duration;

use serde::Serialize;

use crate::aws::poll::{wait_until, Probe, Wait};
use crate::aws::{Cloud, NewTemplateVersion, RefreshRequest, RefreshStatus, TemplateRef};
use crate::error::{Error, Result};
use crate::ledger::{Ledger, Resource};
use crate::plan::ReleaseSpec;

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

/// The prefix of the description of every version a build creates.
fn description_prefix(build_id: &str) -> String {
    format!("kiln build {build_id}:")
}

/// The description kiln writes into a version, so `history` and teardown can tell its builds.
pub fn version_description(build_id: &str, recipe: &str, version: &str, image_id: &str) -> String {
    format!(
        "{} {recipe} {version} {image_id}",
        description_prefix(build_id)
    )
}

/// Whether a version's description says build `build_id` created it.
pub fn created_by(description: &str, build_id: &str) -> bool {
    description.starts_with(&description_prefix(build_id))
}

/// Makes the launch template's default version use `image_id`.
pub async fn release_image(
    cloud: &dyn Cloud,
    spec: &ReleaseSpec,
    image_id: &str,
    description: &str,
    client_token: &str,
    ledger: Option<&Ledger>,
) -> Result<LaunchTemplateRelease> {
    // One call tells the template's id, its default version and that version's image.
    let default = cloud
        .default_template_version(&TemplateRef::parse(&spec.launch_template))
        .await?;
    let mut release = LaunchTemplateRelease {
        id: default.template_id.clone(),
        name: default.template_name.clone(),
        previous_default_version: default.number,
        default_version: default.number,
        created_version: None,
    };
    if default.image_id.as_deref() == Some(image_id) {
        return Ok(release);
    }
    let version = cloud
        .create_template_version(&NewTemplateVersion {
            template_id: default.template_id.clone(),
            source_version: default.number,
            image_id: image_id.to_owned(),
            description: description.to_owned(),
            client_token: client_token.to_owned(),
        })
        .await?;
    let resource = Resource::TemplateVersion {
        template_id: default.template_id.clone(),
        version,
        region: cloud.region().to_owned(),
    };
    if let Some(ledger) = ledger {
        ledger.created(resource.clone())?;
    }
    release.created_version = Some(version);
    if spec.set_default {
        cloud
            .set_default_version(&default.template_id, version)
            .await?;
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
    pub status: RefreshStatus,
    pub reason: String,
}

/// Starts an instance refresh of `group` with the release's preferences and follows it until it
/// ends or `timeout` passes.
pub async fn refresh_group(
    cloud: &dyn Cloud,
    spec: &ReleaseSpec,
    group: &str,
    timeout: Duration,
    on_state: impl FnMut(&str),
) -> Result<RefreshOutcome> {
    let refresh_id = cloud
        .start_refresh(&RefreshRequest {
            group: group.to_owned(),
            min_healthy_percentage: spec.min_healthy_percentage,
            instance_warmup_secs: spec.instance_warmup.as_secs() as i32,
            skip_matching: true,
        })
        .await?;
    let wait = Wait {
        phase: "waiting for the instance refresh",
        resource: &format!("instance refresh {refresh_id} of {group}"),
        region: cloud.region(),
        timeout,
        hint: "look at the group's activity history: new instances failing health checks are the usual cause",
    };
    wait_until(wait, on_state, || async {
        let Some(refresh) = cloud.refresh(group, &refresh_id).await? else {
            return Ok(Probe::Pending("not visible yet".into()));
        };
        if !refresh.status.is_finished() {
            return Ok(Probe::Pending(format!(
                "{} {}%",
                refresh.status, refresh.percentage_complete
            )));
        }
        Ok(Probe::Done(RefreshOutcome {
            auto_scaling_group: group.to_owned(),
            refresh_id: refresh_id.clone(),
            status: refresh.status,
            reason: refresh.status_reason,
        }))
    })
    .await
}

/// Fails with a clear message unless the refresh succeeded.
pub fn ensure_refreshed(outcome: &RefreshOutcome, region: &str) -> Result<()> {
    if outcome.status == RefreshStatus::Successful {
        return Ok(());
    }
    Err(Error::BadState {
        phase: "instance refresh",
        resource: format!("{} of {}", outcome.refresh_id, outcome.auto_scaling_group),
        region: region.to_owned(),
        state: outcome.status.to_string(),
        reason: outcome.reason.clone(),
    })
}
