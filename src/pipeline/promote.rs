//! `kiln release`: release an image explicitly and clear the launch template's hold.
//!
//! The image is the newest available one built by kiln from the recipe, or the one named with
//! `--image` (refused when kiln did not build it from this recipe, unless `--allow-foreign`, as
//! `rollback --image`). It is released with the recipe's strategy, exactly as a build releases:
//! a new version from the current default with only the image changed, and with a group either
//! a `verified` refresh before the default moves or `default-then-refresh`. The hold is cleared
//! once the release succeeded.

use serde::Serialize;

use crate::aws::{Cloud, Image, ImageQuery, ImageState, LaunchTemplate, TemplateRef};
use crate::error::{Error, Result};
use crate::ledger::Ledger;
use crate::pipeline::hold::{self, Hold};
use crate::pipeline::release::{self, LaunchTemplateRelease, RefreshOutcome, Rollout};
use crate::pipeline::rollback::usable_image;
use crate::pipeline::rollout;
use crate::plan::{Plan, ReleaseSpec, ReleaseStrategy};
use crate::report::Reporter;
use crate::tags;

#[derive(Debug, Clone, Serialize)]
pub struct PromoteOutcome {
    pub image_id: String,
    pub launch_template: LaunchTemplateRelease,
    pub instance_refresh: Option<RefreshOutcome>,
    /// The hold this release cleared.
    pub cleared_hold: Option<Hold>,
}

/// What to release, and how.
pub struct Request<'a> {
    pub image: Option<&'a str>,
    pub allow_foreign: bool,
    pub refresh: bool,
    /// The command's journal: the version it creates and its refresh, so an interrupt's
    /// teardown removes the one and rolls back the other.
    pub ledger: Option<&'a Ledger>,
}

pub async fn promote(
    cloud: &dyn Cloud,
    reporter: &dyn Reporter,
    plan: &Plan,
    spec: &ReleaseSpec,
    request: &Request<'_>,
) -> Result<PromoteOutcome> {
    let image = match request.image {
        Some(id) => usable_image(cloud, plan, id, request.allow_foreign).await?,
        None => newest_image(cloud, plan).await?,
    };
    let template = cloud
        .launch_template(&TemplateRef::parse(&spec.launch_template))
        .await?;
    let group = spec
        .auto_scaling_group
        .as_deref()
        .filter(|_| request.refresh);
    let verified = group.is_some() && spec.strategy == ReleaseStrategy::Verified;
    if let Some(group) = group {
        warn_about_group(cloud, reporter, spec, group, &template.id).await?;
    }
    let description = version_description(plan, &image);
    let token = format!("kiln-release-{}-{}", template.default_version, image.id);
    let mut released = release::release_image(
        cloud,
        spec,
        &image.id,
        &description,
        &token,
        request.ledger,
        !verified,
    )
    .await?;
    let instance_refresh = match (group, released.created_version) {
        (Some(group), Some(version)) => {
            let target = (&mut released, version);
            let how = Rollout {
                verified,
                timeout: plan.timeouts.instance_refresh,
                ledger: request.ledger,
            };
            Some(release::roll_group(cloud, reporter, spec, group, target, how).await?)
        }
        _ => None,
    };
    let cleared_hold = clear_hold(cloud, &template).await?;
    Ok(PromoteOutcome {
        image_id: image.id,
        launch_template: released,
        instance_refresh,
        cleared_hold,
    })
}

/// Reports what about the group may keep its refresh from going well.
async fn warn_about_group(
    cloud: &dyn Cloud,
    reporter: &dyn Reporter,
    spec: &ReleaseSpec,
    group: &str,
    template_id: &str,
) -> Result<()> {
    let default = cloud
        .default_template_version(&TemplateRef::Id(template_id.to_owned()))
        .await?;
    for warning in rollout::check_group(cloud, spec, group, &default).await? {
        reporter.warning(&warning);
    }
    Ok(())
}

/// The new version's description: the image's build, or `kiln release` for an image without one.
fn version_description(plan: &Plan, image: &Image) -> String {
    let built_by = image
        .tags
        .get(tags::BUILD_ID)
        .map_or("kiln release", String::as_str);
    release::version_description(built_by, &plan.name, &plan.version, &image.id)
}

/// Clears the launch template's hold, if it has one; returns the hold cleared.
async fn clear_hold(cloud: &dyn Cloud, template: &LaunchTemplate) -> Result<Option<Hold>> {
    let cleared_hold = Hold::of(template);
    if cleared_hold.is_some() {
        hold::clear(cloud, &template.id).await?;
    }
    Ok(cleared_hold)
}

/// The newest available image kiln built from this recipe.
async fn newest_image(cloud: &dyn Cloud, plan: &Plan) -> Result<Image> {
    let query = ImageQuery::own().tagged(tags::RECIPE, &plan.name);
    let images = cloud.find_images(&query).await?;
    images
        .into_iter()
        .filter(|i| i.state == ImageState::Available)
        .max_by(|a, b| a.creation_date.cmp(&b.creation_date))
        .ok_or_else(|| {
            Error::Refused(format!(
                "no available image built by kiln from recipe {} in {}: build one first, or name one with --image",
                plan.name,
                cloud.region()
            ))
        })
}
