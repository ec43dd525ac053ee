//! `kiln release`: release an image explicitly and clear the launch template's hold.
//!
//! The image is the newest available one kiln built for this recipe identity that did not fail
//! its test phase, or the one named with `--image` (refused when kiln did not build it for this
//! recipe, unless `--allow-foreign`, and when it failed its test phase, unless
//! `--allow-failed-test`). The release itself is the one release path ([`release::release`]),
//! as a build's.

use crate::aws::{Cloud, Image};
use crate::error::{Error, Result};
use crate::ledger::Ledger;
use crate::pipeline::images::{self, failed_its_test, usable_image};
use crate::pipeline::release::{self, Command, Parameter, Released, Target};
use crate::pipeline::Context;
use crate::plan::{Plan, ReleaseSpec};

/// What to release, and how.
pub struct Request<'a> {
    pub image: Option<&'a str>,
    pub allow_foreign: bool,
    pub allow_failed_test: bool,
    pub refresh: bool,
    /// The command's journal: the version it creates and its refresh.
    pub journal: &'a Ledger,
    /// The `kiln release …` line (with the `--var` names the recipe needs) for messages.
    pub release_hint: String,
}

pub async fn promote(
    ctx: &Context<'_>,
    plan: &Plan,
    spec: &ReleaseSpec,
    request: &Request<'_>,
) -> Result<Released> {
    let cloud = ctx.cloud.as_ref();
    let image = match request.image {
        Some(id) => {
            let image = usable_image(cloud, plan, id, request.allow_foreign).await?;
            if failed_its_test(&image) && !request.allow_failed_test {
                return Err(Error::Refused(format!(
                    "image {id} failed its test phase (tag kiln:test=failed): releasing it would put a broken image into production; \
                     pass --allow-failed-test to release it anyway"
                )));
            }
            image
        }
        None => newest_image(ctx, plan).await?,
    };
    let parameter = plan.image.ssm_parameter.as_ref().map(|name| Parameter {
        name: name.clone(),
        images: vec![(cloud.region().to_owned(), image.id.clone())],
        description: format!("{} {} (kiln release)", plan.name, plan.version),
    });
    let release_request = release::Request {
        command: Command::Release,
        spec,
        recipe: &plan.name,
        recipe_version: image_version(&image, plan),
        release_hint: request.release_hint.clone(),
        target: Target::Image {
            id: image.id.clone(),
        },
        refresh: request.refresh,
        refresh_timeout: plan.timeouts.instance_refresh,
        parameter,
        journal: request.journal,
    };
    release::release(ctx, &release_request).await
}

/// The recipe version the image was built at (its `kiln:version` tag), else the recipe's.
fn image_version<'a>(image: &'a Image, plan: &'a Plan) -> &'a str {
    image
        .tags
        .get(crate::tags::VERSION)
        .map_or(plan.version.as_str(), String::as_str)
}

/// The newest available image kiln built for this recipe identity that did not fail its test.
async fn newest_image(ctx: &Context<'_>, plan: &Plan) -> Result<Image> {
    let cloud: &dyn Cloud = ctx.cloud.as_ref();
    let found = images::of_recipe(cloud, plan).await?;
    found.warn_about_legacy(ctx.reporter);
    found
        .releasable()
        .max_by(|a, b| a.creation_date.cmp(&b.creation_date))
        .cloned()
        .ok_or_else(|| {
            Error::Refused(format!(
                "no available image built by kiln for recipe {} (identity {}) in {} that passed its test phase: build one first, or name one with --image",
                plan.name,
                plan.identity(),
                cloud.region()
            ))
        })
}
