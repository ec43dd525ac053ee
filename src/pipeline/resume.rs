//! `kiln build --resume BUILD_ID`: where a build that stopped can go on from.
//!
//! Two cases, tried in this order:
//!
//! - **An image of that build exists** (pending or available): the build was killed (SIGKILL, a
//!   lost CI runner) while or after it waited for the image. Found by its `kiln:build-id` tag in
//!   AWS, so it works from any machine; the resumed build waits for that image instead of making
//!   another one, and terminates the old builder if it is still there.
//! - **A kept builder** (`--on-error=abort`): the build folder's [`StepRecord`] says which
//!   builder ran which steps. The steps that succeeded there must be unchanged (same digests, in
//!   the same order; else a refusal listing the differences); the resumed build runs the rest on
//!   that builder, which must still be running.
//!
//! Either way the image's fingerprint is the recipe's, from the same source image, as if it had
//! been built from scratch, and the image is tagged `kiln:resumed-from`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::aws::{Cloud, Image, ImageQuery, ImageState, InstanceQuery, InstanceState};
use crate::error::{Error, Result};
use crate::plan::{sha256_hex, Plan};
use crate::tags;

/// The name of the step record in a build's folder.
pub const RECORD_FILE: &str = "steps.json";

/// What a build's steps did on its builder, rewritten after each step.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    pub builder: String,
    pub region: String,
    pub source_image: String,
    /// The plan's [`Plan::builder_digest`].
    pub builder_digest: String,
    /// A digest per setting under it ([`settings_digests`]): `source`, `builder.instance_type`...,
    /// so a refusal can name what changed. Empty in records of kiln versions before it.
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    /// The steps that succeeded, in order.
    pub done: Vec<DoneStep>,
}

/// A digest of each setting the builder digest covers: the whole `source`, and each field of
/// `builder` (`builder.instance_type`...). Digests, not values: the record stays free of
/// anything a recipe may hold.
pub fn settings_digests(plan: &Plan) -> BTreeMap<String, String> {
    let digest = |value: &serde_json::Value| sha256_hex(value.to_string().as_bytes());
    let mut settings = BTreeMap::new();
    if let Ok(source) = serde_json::to_value(&plan.source) {
        settings.insert("source".to_owned(), digest(&source));
    }
    if let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(&plan.builder) {
        for (field, value) in &fields {
            settings.insert(format!("builder.{field}"), digest(value));
        }
    }
    settings
}

/// One step that succeeded on the builder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DoneStep {
    pub name: String,
    pub digest: String,
}

impl StepRecord {
    pub fn path(build_dir: &Path) -> PathBuf {
        build_dir.join(RECORD_FILE)
    }

    pub fn save(&self, build_dir: &Path) -> Result<()> {
        let path = Self::path(build_dir);
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| Error::Internal(format!("could not encode the step record: {e}")))?;
        std::fs::write(&path, text).map_err(|e| Error::io("write the step record", &path, e))
    }

    /// The record of a build; `None` when its folder has none.
    pub fn load(build_dir: &Path) -> Result<Option<StepRecord>> {
        let path = Self::path(build_dir);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map(Some).map_err(|e| {
                Error::Refused(format!(
                    "the step record {} is damaged: {e}",
                    path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("read the step record", &path, e)),
        }
    }

    /// Records that step `index` of `plan` succeeded.
    pub fn step_done(&mut self, plan: &Plan, index: usize) {
        self.done.truncate(index);
        self.done.push(DoneStep {
            name: plan.steps[index].name.clone(),
            digest: plan.step_digests[index].clone(),
        });
    }

    /// Why `plan` cannot continue after these steps: one line per difference; empty when the
    /// steps that ran (and the builder settings) are the plan's.
    pub fn differences(&self, plan: &Plan) -> Vec<String> {
        let mut lines = Vec::new();
        if self.builder_digest != plan.builder_digest {
            let now = settings_digests(plan);
            let changed: Vec<String> = self
                .settings
                .keys()
                .chain(now.keys())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .filter(|key| self.settings.get(*key) != now.get(*key))
                .map(|key| format!("`{key}` changed"))
                .collect();
            if changed.is_empty() || self.settings.is_empty() {
                lines.push("`source` or `builder` changed".to_owned());
            } else {
                lines.extend(changed);
            }
        }
        for (index, done) in self.done.iter().enumerate() {
            let now = plan.steps.get(index).map(|step| step.name.as_str());
            let line = match now {
                None => format!(
                    "step {} `{}`: no longer in the recipe",
                    index + 1,
                    done.name
                ),
                Some(name) if name != done.name => {
                    format!("step {}: was `{}`, is now `{name}`", index + 1, done.name)
                }
                Some(_) if plan.step_digests[index] != done.digest => {
                    format!("step {} `{}`: changed", index + 1, done.name)
                }
                Some(_) => continue,
            };
            lines.push(line);
        }
        lines
    }
}

/// Where a resumed build starts.
#[derive(Debug, Clone)]
pub enum Start {
    /// Runs the steps from `first` (0-based; the plan's `total` steps) on the kept `builder`;
    /// `next` is the name of step `first`, `None` when every step ran there.
    Steps {
        builder: String,
        first: usize,
        total: usize,
        next: Option<String>,
    },
    /// Waits for this build's image; terminates its builder if it is still there.
    Image {
        image_id: String,
        builder: Option<String>,
    },
}

/// A build resumed from an earlier one.
#[derive(Debug, Clone)]
pub struct Resumption {
    /// The earlier build's id.
    pub from: String,
    /// The earlier build's source image.
    pub source: Image,
    pub start: Start,
}

/// Where build `from` can go on from, or a refusal that says why not and what to do.
pub async fn prepare(
    cloud: &dyn Cloud,
    state_dir: &Path,
    plan: &Plan,
    from: &str,
) -> Result<Resumption> {
    let images = ImageQuery::own().tagged(tags::BUILD_ID, from);
    let image = cloud
        .find_images(&images)
        .await?
        .into_iter()
        .find(|image| image.state != ImageState::Failed);
    if let Some(image) = image {
        return reattach(cloud, plan, from, image).await;
    }
    let build_dir = state_dir.join("builds").join(from);
    let Some(record) = StepRecord::load(&build_dir)? else {
        return Err(Error::Refused(format!(
            "cannot resume build {from}: it has no image in {} and no step record in {} \
             (resume works on the machine that ran the build, or once its image exists); run `kiln build` without --resume",
            cloud.region(),
            build_dir.display()
        )));
    };
    continue_steps(cloud, plan, from, record).await
}

/// The build had made its image: check it is this recipe's, from the same source.
async fn reattach(cloud: &dyn Cloud, plan: &Plan, from: &str, image: Image) -> Result<Resumption> {
    let source_id = image
        .tags
        .get(tags::SOURCE_IMAGE)
        .cloned()
        .unwrap_or_default();
    let expected = plan.fingerprint(&source_id).to_string();
    if image.tags.get(tags::FINGERPRINT) != Some(&expected) {
        return Err(Error::Refused(format!(
            "cannot resume build {from}: its image {} was made from another recipe or version \
             (fingerprint {}, this recipe's is {expected}); run `kiln build` without --resume",
            image.id,
            image
                .tags
                .get(tags::FINGERPRINT)
                .map_or("none", String::as_str)
        )));
    }
    let source = source_image(cloud, from, &source_id).await?;
    let builders = InstanceQuery::live().tagged(tags::BUILD_ID, from);
    let builder = cloud.find_instances(&builders).await?.into_iter().next();
    Ok(Resumption {
        from: from.to_owned(),
        source,
        start: Start::Image {
            image_id: image.id,
            builder: builder.map(|instance| instance.id),
        },
    })
}

/// The build stopped during its steps: its builder must still run, its done steps be unchanged.
async fn continue_steps(
    cloud: &dyn Cloud,
    plan: &Plan,
    from: &str,
    record: StepRecord,
) -> Result<Resumption> {
    let differences = record.differences(plan);
    if !differences.is_empty() {
        return Err(Error::Refused(format!(
            "cannot resume build {from}: what already ran on its builder {} differs from the recipe now:\n  {}\n\
             only the steps after the last one that succeeded may change; run `kiln build` without --resume to start over",
            record.builder,
            differences.join("\n  ")
        )));
    }
    let state = cloud.instance(&record.builder).await?.map(|i| i.state);
    if state != Some(InstanceState::Running) {
        let state = state.map_or("gone".to_owned(), |s| s.to_string());
        return Err(Error::Refused(format!(
            "cannot resume build {from}: its builder {} in {} is {state}, and a resume continues on that builder; \
             run `kiln build` without --resume to start over",
            record.builder, record.region
        )));
    }
    let source = source_image(cloud, from, &record.source_image).await?;
    Ok(Resumption {
        from: from.to_owned(),
        source,
        start: Start::Steps {
            builder: record.builder,
            first: record.done.len(),
            total: plan.steps.len(),
            next: plan.steps.get(record.done.len()).map(|s| s.name.clone()),
        },
    })
}

async fn source_image(cloud: &dyn Cloud, from: &str, id: &str) -> Result<Image> {
    let found = cloud.images(&[id.to_owned()]).await?.into_iter().next();
    found.ok_or_else(|| {
        Error::Refused(format!(
            "cannot resume build {from}: its source image {id} no longer exists in {}",
            cloud.region()
        ))
    })
}

impl crate::pipeline::PhaseResult for Resumption {
    fn summary(&self) -> String {
        match &self.start {
            Start::Steps {
                builder,
                first,
                total,
                next,
            } => {
                let at = match next {
                    Some(name) => format!("at step {}/{total} `{name}`", first + 1),
                    None => format!("after all {total} steps, with the image"),
                };
                let ran = match first {
                    0 => "no step had succeeded there".to_owned(),
                    1 => "step 1 ran there".to_owned(),
                    n => format!("steps 1-{n} ran there"),
                };
                format!(
                    "{} (resuming build {} on {builder} {at}; {ran})",
                    self.source.id, self.from
                )
            }
            Start::Image { image_id, .. } => format!(
                "{} (resuming build {}: its image {image_id})",
                self.source.id, self.from
            ),
        }
    }
}
