//! Release: point the launch template's default version at an image, and optionally roll the
//! auto scaling group onto it with an instance refresh.
//!
//! A release never edits an existing version: it creates a new one from the current default
//! (`SourceVersion`, so every other setting is kept) with only `ImageId` changed, then makes it the
//! default. Releasing an image the default already points at does nothing (idempotent re-runs).
//!
//! With a group, `release.strategy` decides the order: `default-then-refresh` makes the version
//! the default and then refreshes the group ([`refresh_group`]); `verified` creates the version
//! without making it the default, refreshes the group onto exactly that version and makes it the
//! default only once the group is healthy on it ([`verified_rollout`]).

use std::time::Duration;

use serde::Serialize;

use crate::aws::poll::{wait_until, Probe, Wait};
use crate::aws::{Cloud, DesiredVersion, NewTemplateVersion, RefreshStatus, TemplateRef};
use crate::error::{Error, Result};
use crate::ledger::{Ledger, Making, Resource};
use crate::pipeline::rollout;
use crate::plan::ReleaseSpec;
use crate::report::{Phase, Reporter};

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

/// `CreateLaunchTemplateVersion`, noted in `ledger` while under way and recorded there once
/// made (so that a teardown removes it unless it became the default).
pub async fn create_version(
    cloud: &dyn Cloud,
    new_version: &NewTemplateVersion,
    ledger: Option<&Ledger>,
) -> Result<i64> {
    let created = cloud.create_template_version(new_version);
    let Some(ledger) = ledger else {
        return created.await;
    };
    let version = ledger.making(Making::TemplateVersion, created).await?;
    ledger.created(version_resource(cloud, &new_version.template_id, version))?;
    Ok(version)
}

fn version_resource(cloud: &dyn Cloud, template_id: &str, version: i64) -> Resource {
    Resource::TemplateVersion {
        template_id: template_id.to_owned(),
        version,
        region: cloud.region().to_owned(),
    }
}

/// Creates a version of the launch template that uses `image_id` and, with `make_default`, makes
/// it the default (the `verified` strategy does that after its refresh).
pub async fn release_image(
    cloud: &dyn Cloud,
    spec: &ReleaseSpec,
    image_id: &str,
    description: &str,
    client_token: &str,
    ledger: Option<&Ledger>,
    make_default: bool,
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
    let new_version = NewTemplateVersion {
        template_id: default.template_id.clone(),
        source_version: default.number,
        image_id: image_id.to_owned(),
        description: description.to_owned(),
        client_token: client_token.to_owned(),
    };
    let version = create_version(cloud, &new_version, ledger).await?;
    let resource = version_resource(cloud, &default.template_id, version);
    release.created_version = Some(version);
    if !make_default {
        // Torn down unless it becomes the default.
        return Ok(release);
    }
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
    let refresh_id = rollout::start_refresh(cloud, &rollout::default_request(spec, group)).await?;
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

/// The `verified` strategy once `version` exists (made by [`release_image`] without making it the
/// default, or an earlier version a rollback goes back to): refresh
/// the group onto exactly that version, and make it the default once the group is healthy on it.
///
/// The refresh is in the ledger while it runs, so an interrupt's teardown rolls it back; a
/// failure or timeout rolls it back here. Either way the default stays where it was, and the
/// error names the failed health check.
pub async fn verified_rollout(
    cloud: &dyn Cloud,
    spec: &ReleaseSpec,
    group: &str,
    (release, version): (&mut LaunchTemplateRelease, i64),
    timeout: Duration,
    ledger: Option<&Ledger>,
    on_state: impl FnMut(&str),
) -> Result<RefreshOutcome> {
    let desired = DesiredVersion {
        template_id: release.id.clone(),
        version,
    };
    let request = rollout::verified_request(spec, group, desired);
    let refresh_id = rollout::start_refresh(cloud, &request).await?;
    let resource = Resource::Refresh {
        group: group.to_owned(),
        refresh_id: refresh_id.clone(),
        region: cloud.region().to_owned(),
    };
    if let Some(ledger) = ledger {
        ledger.created(resource.clone())?;
    }
    let followed =
        rollout::follow_verified(cloud, group, &refresh_id, version, timeout, on_state).await;
    let outcome = match followed {
        Ok(outcome) => outcome,
        Err(e) => {
            return Err(roll_back_after(cloud, group, &refresh_id, e, ledger, resource).await)
        }
    };
    if let Some(ledger) = ledger {
        ledger.removed(resource)?;
    }
    ensure_refreshed(&outcome, cloud.region()).map_err(|e| Error::Build {
        primary: Box::new(e),
        cleanup: vec![format!(
            "the default stays version {} of {}: the group is back on its previous configuration (AutoRollback)",
            release.previous_default_version, release.name
        )],
    })?;
    cloud.set_default_version(&release.id, version).await?;
    release.default_version = version;
    if let Some(ledger) = ledger {
        ledger.kept(Resource::TemplateVersion {
            template_id: release.id.clone(),
            version,
            region: cloud.region().to_owned(),
        })?;
    }
    Ok(outcome)
}

/// How [`roll_group`] refreshes: the strategy, its bound, and the journal that lets an
/// interrupt's teardown roll a `verified` refresh back.
pub struct Rollout<'a> {
    pub verified: bool,
    pub timeout: Duration,
    pub ledger: Option<&'a Ledger>,
}

/// Refreshes `group` onto `target`'s version with the release's strategy (`verified`: the
/// default moves after the group is healthy on it; otherwise the default already moved), as
/// one reported phase; fails unless the refresh succeeded.
pub async fn roll_group(
    cloud: &dyn Cloud,
    reporter: &dyn Reporter,
    spec: &ReleaseSpec,
    group: &str,
    target: (&mut LaunchTemplateRelease, i64),
    how: Rollout<'_>,
) -> Result<RefreshOutcome> {
    let Rollout {
        verified,
        timeout,
        ledger,
    } = how;
    let phase = Phase::InstanceRefresh {
        group: group.to_owned(),
    };
    reporter.phase_started(&phase);
    let on_state = |state: &str| reporter.phase_progress(&phase, state);
    let result = if verified {
        verified_rollout(cloud, spec, group, target, timeout, ledger, on_state).await
    } else {
        match refresh_group(cloud, spec, group, timeout, on_state).await {
            Ok(outcome) => ensure_refreshed(&outcome, cloud.region()).map(|()| outcome),
            Err(e) => Err(e),
        }
    };
    match &result {
        Ok(outcome) => reporter.phase_finished(&phase, outcome.status.as_str()),
        Err(e) => reporter.phase_failed(&phase, &e.to_string()),
    }
    result
}

/// After a refresh could not be followed to its end (timeout, AWS error): roll it back.
async fn roll_back_after(
    cloud: &dyn Cloud,
    group: &str,
    refresh_id: &str,
    error: Error,
    ledger: Option<&Ledger>,
    resource: Resource,
) -> Error {
    let line = match cloud.rollback_refresh(group).await {
        Ok(()) => {
            if let Some(ledger) = ledger {
                let _ = ledger.removed(resource);
            }
            format!("instance refresh {refresh_id} of {group}: rolled back (the default did not move)")
        }
        Err(e) => format!(
            "instance refresh {refresh_id} of {group}: could not roll it back ({e}); roll it back with aws autoscaling rollback-instance-refresh --auto-scaling-group-name {group}"
        ),
    };
    Error::Build {
        primary: Box::new(error),
        cleanup: vec![line],
    }
}
