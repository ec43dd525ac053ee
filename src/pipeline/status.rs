//! `kiln status`: where a recipe's release stands. The launch template's default and latest
//! versions with their images, the hold, the auto scaling group with each instance's version,
//! image and health, and the group's active instance refresh. `--wait` follows that refresh to
//! its end (an interrupted `kiln release` or `kiln rollback` can be followed again this way).

use std::time::Duration;

use serde::Serialize;

use crate::aws::{Cloud, RefreshStatus, TemplateRef};
use crate::error::{Error, Result};
use crate::pipeline::release::group::GroupView;
use crate::pipeline::release::{strategy, version_images, Hold};
use crate::pipeline::Context;
use crate::plan::ReleaseSpec;

/// One version pointer and its image.
#[derive(Debug, Clone, Serialize)]
pub struct VersionImage {
    pub version: i64,
    pub image_id: Option<String>,
}

/// A refresh, as `status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RefreshView {
    pub id: String,
    pub status: RefreshStatus,
    pub status_reason: String,
    pub percentage_complete: i32,
    /// The version it replaces instances onto, when it names one.
    pub desired_version: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub region: String,
    pub launch_template_id: String,
    pub launch_template_name: String,
    pub default: VersionImage,
    pub latest: VersionImage,
    pub hold: Option<Hold>,
    pub group: Option<GroupView>,
    /// Each instance's image, by the version it runs (for reading `group`).
    pub images: std::collections::BTreeMap<i64, String>,
    pub active_refresh: Option<RefreshView>,
}

/// Reads the release state of `spec`'s template and group.
pub async fn status(cloud: &dyn Cloud, spec: &ReleaseSpec) -> Result<Status> {
    let template = cloud
        .launch_template(&TemplateRef::parse(&spec.launch_template))
        .await?;
    let images = version_images(cloud, &template.id).await?;
    let pointer = |version: i64| VersionImage {
        version,
        image_id: images.get(&version).cloned(),
    };
    let (group, active_refresh) = match &spec.auto_scaling_group {
        Some(name) => {
            let view = GroupView::read(cloud, name).await?;
            let refresh = match view {
                Some(_) => cloud.active_refresh(name).await?.map(|r| RefreshView {
                    id: r.id,
                    status: r.status,
                    status_reason: r.status_reason,
                    percentage_complete: r.percentage_complete,
                    desired_version: r.desired.map(|d| d.version),
                }),
                None => None,
            };
            (view, refresh)
        }
        None => (None, None),
    };
    Ok(Status {
        region: cloud.region().to_owned(),
        default: pointer(template.default_version),
        latest: pointer(template.latest_version),
        hold: Hold::of(&template),
        launch_template_id: template.id,
        launch_template_name: template.name,
        group,
        images,
        active_refresh,
    })
}

/// `--wait`: follows the group's active refresh, a line per change, until it ends (bounded by
/// `timeout`); then reads the status again. Fails when the refresh ended other than
/// `Successful`, with what that means.
pub async fn wait(ctx: &Context<'_>, spec: &ReleaseSpec, timeout: Duration) -> Result<Status> {
    let cloud = ctx.cloud.as_ref();
    let before = status(cloud, spec).await?;
    let (Some(group), Some(refresh)) = (&spec.auto_scaling_group, &before.active_refresh) else {
        return Ok(before);
    };
    let phase = crate::report::Phase::InstanceRefresh {
        group: group.clone(),
    };
    ctx.reporter.phase_started(&phase);
    let changed = |line: &str| ctx.reporter.notice(&format!("{group}: {line}"));
    let outcome = strategy::follow(
        cloud,
        group,
        &refresh.id,
        None,
        timeout,
        ctx.progress(&phase),
        &changed,
    )
    .await;
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(e) => {
            ctx.reporter
                .phase_failed(&phase, &crate::pipeline::first_line(&e.to_string()));
            return Err(e);
        }
    };
    ctx.reporter.phase_finished(&phase, outcome.status.as_str());
    if !outcome.succeeded() {
        return Err(Error::Release {
            what: outcome.meaning(),
            state: vec!["`kiln status` shows what the group runs now".into()],
        });
    }
    status(cloud, spec).await
}
