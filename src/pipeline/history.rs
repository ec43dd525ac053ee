//! `kiln history`: the launch template's versions, newest first, joined with the images they
//! point at and the kiln tags on those images.

use serde::Serialize;

use crate::aws::{Cloud, ImageState, TemplateRef};
use crate::error::{Error, Result};
use crate::pipeline::images::failed_its_test;
use crate::pipeline::release::Hold;
use crate::plan::{Plan, ReleaseSpec};
use crate::tags;

/// One launch template version and what kiln knows of its image.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryEntry {
    pub version: i64,
    pub is_default: bool,
    pub image_id: Option<String>,
    pub image_name: Option<String>,
    /// `available`, `pending`, ..., or `missing` when the image is gone.
    pub image_state: String,
    pub image_exists: bool,
    pub recipe: Option<String>,
    /// The image's `kiln:identity` tag (`None` for images built before identities).
    pub identity: Option<String>,
    pub recipe_version: Option<String>,
    /// When the image was created (ISO 8601).
    pub image_created_at: Option<String>,
    /// The image failed its test phase (`kiln:test=failed`).
    pub test_failed: bool,
    /// When kiln last made the image the default (`kiln:released`); `None`: never by kiln.
    pub released_at: Option<String>,
    pub build_id: Option<String>,
    pub fingerprint: Option<String>,
    pub created_at: Option<String>,
    pub description: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct History {
    pub launch_template_id: String,
    pub launch_template_name: String,
    pub default_version: i64,
    pub latest_version: i64,
    /// The hold `kiln rollback` put on the template, if any: builds do not release meanwhile.
    pub hold: Option<Hold>,
    pub versions: Vec<HistoryEntry>,
}

/// The recipe's release section, or a usage error saying why history needs one.
pub fn release_spec<'p>(plan: &'p Plan, command: &str) -> Result<&'p ReleaseSpec> {
    plan.release.as_ref().ok_or_else(|| {
        Error::Usage(format!(
            "`kiln {command}` needs a recipe with a `release.launch_template`; {} has none",
            plan.recipe_path.display()
        ))
    })
}

pub async fn history(cloud: &dyn Cloud, spec: &ReleaseSpec) -> Result<History> {
    let template = cloud
        .launch_template(&TemplateRef::parse(&spec.launch_template))
        .await?;
    let versions = cloud.template_versions(&template.id).await?;
    let mut ids: Vec<String> = versions.iter().filter_map(|v| v.image_id.clone()).collect();
    ids.sort();
    ids.dedup();
    let images = cloud.images(&ids).await?;
    let entries = versions
        .into_iter()
        .map(|v| {
            let image = v
                .image_id
                .as_ref()
                .and_then(|id| images.iter().find(|i| &i.id == id));
            let tag = |key: &str| image.and_then(|i| i.tags.get(key).cloned());
            HistoryEntry {
                version: v.number,
                is_default: v.number == template.default_version,
                image_id: v.image_id.clone(),
                image_name: image.map(|i| i.name.clone()),
                image_state: image
                    .map(|i| i.state.to_string())
                    .unwrap_or_else(|| "missing".into()),
                image_exists: image.is_some(),
                recipe: tag(tags::RECIPE),
                identity: tag(tags::IDENTITY),
                recipe_version: tag(tags::VERSION),
                image_created_at: image.map(|i| i.creation_date.clone()),
                test_failed: image.is_some_and(failed_its_test),
                released_at: tag(tags::RELEASED),
                build_id: tag(tags::BUILD_ID),
                fingerprint: tag(tags::FINGERPRINT),
                created_at: v.created_at,
                description: v.description,
            }
        })
        .collect();
    Ok(History {
        hold: Hold::of(&template),
        launch_template_id: template.id,
        launch_template_name: template.name,
        default_version: template.default_version,
        latest_version: template.latest_version,
        versions: entries,
    })
}

impl HistoryEntry {
    /// kiln made the image a default before (`kiln:released`); an image kiln built before it
    /// tagged releases and identities (a `kiln:recipe` tag, no `kiln:identity`) counts as
    /// released, as `kiln rollback` always took such images.
    pub fn was_released(&self) -> bool {
        self.released_at.is_some() || (self.identity.is_none() && self.recipe.is_some())
    }

    /// The version points at an image that exists and is available.
    pub fn image_usable(&self) -> bool {
        self.image_exists && self.image_state == ImageState::Available.as_str()
    }
}
