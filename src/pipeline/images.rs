//! Images: resolving the source, finding an earlier build by fingerprint, waiting for a new
//! image, ordering images by age, and removing an image with its snapshots.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::aws::poll::{wait_until, Probe, Wait};
use crate::aws::{Cloud, Image, ImageQuery, ImageState, Meaning};
use crate::error::{Error, Result};
use crate::pipeline::consistency::{self, is_not_found, Removal};
use crate::plan::{Plan, SourceSpec};
use crate::tags;

/// The source image: a fixed id, or the newest available image matching the filter.
pub async fn resolve_source(cloud: &dyn Cloud, source: &SourceSpec) -> Result<Image> {
    match source {
        SourceSpec::Image(id) => fixed_source(cloud, id).await,
        SourceSpec::Filter {
            name,
            owners,
            architecture,
        } => {
            let query = ImageQuery {
                owners: owners.clone(),
                architecture: architecture.clone(),
                ..ImageQuery::default()
            }
            .named(name)
            .in_state(ImageState::Available);
            newest(cloud.find_images(&query).await?).ok_or_else(|| {
                Error::Refused(format!(
                    "no available image in {} matches name {name:?}, owners {owners:?}{}: check the pattern and the owners",
                    cloud.region(),
                    architecture.as_ref().map(|a| format!(", architecture {a}")).unwrap_or_default()
                ))
            })
        }
    }
}

async fn fixed_source(cloud: &dyn Cloud, id: &str) -> Result<Image> {
    let image = cloud.images(&[id.to_owned()]).await?.pop().ok_or_else(|| {
        Error::Refused(format!(
            "source image {id} does not exist in {} (or is not visible to this account): check the id and the region",
            cloud.region()
        ))
    })?;
    if image.state != ImageState::Available {
        return Err(Error::BadState {
            phase: "resolving the source image",
            resource: id.to_owned(),
            region: cloud.region().to_owned(),
            state: image.state.to_string(),
            reason: "a builder can only be launched from an available image".into(),
        });
    }
    Ok(image)
}

/// How images are ordered by age: creation date, then build id (which starts with the build's
/// start time in milliseconds, so builds in the same second still sort), then id (stable).
pub fn age_key(image: &Image) -> (String, String, String) {
    (
        image.creation_date.clone(),
        image.tags.get(tags::BUILD_ID).cloned().unwrap_or_default(),
        image.id.clone(),
    )
}

/// The newest image by [`age_key`].
pub fn newest(images: Vec<Image>) -> Option<Image> {
    images.into_iter().max_by_key(age_key)
}

/// An available image of this account already built from exactly this fingerprint.
pub async fn find_by_fingerprint(
    cloud: &dyn Cloud,
    fingerprint: &str,
    identity: &str,
) -> Result<Option<Image>> {
    let query = ImageQuery::own()
        .tagged(tags::FINGERPRINT, fingerprint)
        .in_state(ImageState::Available);
    let images = cloud.find_images(&query).await?;
    // An image that failed its test phase is never reused: the next build bakes again. Nor is
    // another recipe identity's image with the same content.
    let tested = images
        .into_iter()
        .filter(|i| !failed_its_test(i))
        .filter(|i| Identity::of(i, identity) != Identity::Other);
    Ok(newest(tested.collect()))
}

/// The image's test phase failed (`kiln:test=failed`): never reused, released or rolled back to.
pub fn failed_its_test(image: &Image) -> bool {
    image.tags.get(tags::TEST).map(String::as_str) == Some(tags::TEST_FAILED)
}

/// Whose an image is, by its `kiln:identity` tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    /// This recipe identity's.
    Own,
    /// Built before kiln tagged identities: only the recipe's name says whose it is.
    Legacy,
    /// Another recipe identity's, whatever its name.
    Other,
}

impl Identity {
    pub fn of(image: &Image, identity: &str) -> Identity {
        match image.tags.get(tags::IDENTITY) {
            Some(tagged) if tagged == identity => Identity::Own,
            Some(_) => Identity::Other,
            None => Identity::Legacy,
        }
    }
}

/// The images kiln built for a recipe identity (its name, then its `kiln:identity` tag).
pub struct RecipeImages {
    pub identity: String,
    /// Tagged with this identity.
    pub own: Vec<Image>,
    /// Tagged with the recipe's name but no identity: built before identities.
    pub legacy: Vec<Image>,
}

/// Every image of `plan`'s recipe identity, and the legacy images of its name.
pub async fn of_recipe(cloud: &dyn Cloud, plan: &crate::plan::Plan) -> Result<RecipeImages> {
    let identity = plan.identity();
    let query = ImageQuery::own().tagged(tags::RECIPE, &plan.name);
    let mut found = RecipeImages {
        identity: identity.clone(),
        own: Vec::new(),
        legacy: Vec::new(),
    };
    for image in cloud.find_images(&query).await? {
        match Identity::of(&image, &identity) {
            Identity::Own => found.own.push(image),
            Identity::Legacy => found.legacy.push(image),
            Identity::Other => {}
        }
    }
    Ok(found)
}

impl RecipeImages {
    /// Available images, own and legacy, that did not fail their test phase.
    pub fn releasable(&self) -> impl Iterator<Item = &Image> {
        self.own
            .iter()
            .chain(&self.legacy)
            .filter(|i| i.state == ImageState::Available && !failed_its_test(i))
    }

    /// The newest available image, own or legacy.
    pub fn newest_available(&self) -> Option<&Image> {
        self.own
            .iter()
            .chain(&self.legacy)
            .filter(|i| i.state == ImageState::Available)
            .max_by(|a, b| a.creation_date.cmp(&b.creation_date))
    }

    /// Says, once, that images without an identity were counted as this recipe's.
    pub fn warn_about_legacy(&self, reporter: &dyn crate::report::Reporter) {
        if self.legacy.is_empty() {
            return;
        }
        let ids: Vec<&str> = self.legacy.iter().map(|i| i.id.as_str()).collect();
        reporter.warning(&format!(
            "{} image(s) carry this recipe's name but no kiln:identity tag (built before recipe identities): {}; \
             they are counted as identity {} — if another project's recipe has the same name, tag its images kiln:identity=<its identity>",
            ids.len(),
            ids.join(", "),
            self.identity
        ));
    }
}

/// Waits until an image is `available`; fails at once if it fails.
pub async fn wait_available(
    cloud: &dyn Cloud,
    image_id: &str,
    timeout: std::time::Duration,
    on_state: impl FnMut(&str),
) -> Result<Image> {
    let wait = Wait {
        phase: "waiting for the image to become available",
        resource: image_id,
        region: cloud.region(),
        timeout,
        hint: "snapshots of large volumes can take long: raise timeouts.image_available, and check the image in the EC2 console",
    };
    wait_until(wait, on_state, || async {
        let Some(image) = cloud.images(&[image_id.to_owned()]).await?.pop() else {
            // Right after CreateImage the id may not be visible yet.
            return Ok(Probe::Pending("not visible yet".into()));
        };
        if image.state == ImageState::Available {
            return Ok(Probe::Done(image));
        }
        if image.state.is_final_failure() {
            return Err(Error::BadState {
                phase: "waiting for the image",
                resource: image_id.to_owned(),
                region: cloud.region().to_owned(),
                state: image.state.to_string(),
                reason: image.state_reason.clone(),
            });
        }
        Ok(Probe::Pending(image.state.to_string()))
    })
    .await
}

/// How long a snapshot may still be "in use" by an image just deregistered: AWS answers
/// `InvalidSnapshot.InUse` for a while after `DeregisterImage`.
pub const SNAPSHOT_RELEASE_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// Deletes a snapshot, waiting (up to [`SNAPSHOT_RELEASE_TIMEOUT`]) while AWS still says an
/// image just deregistered uses it. `created`: when kiln created it, if it just did (a new id
/// may answer NotFound for a while; see [`consistency`]).
pub async fn delete_snapshot_when_free(
    cloud: &dyn Cloud,
    snapshot_id: &str,
    created: Option<SystemTime>,
) -> Result<Removal> {
    let wait = Wait {
        phase: "deleting a snapshot of a deregistered image",
        resource: snapshot_id,
        region: cloud.region(),
        timeout: SNAPSHOT_RELEASE_TIMEOUT,
        hint: "another image may use the snapshot: find it with `aws ec2 describe-images --filters Name=block-device-mapping.snapshot-id,Values=<id>`",
    };
    let settled_at = Instant::now() + consistency::settling_time(created);
    wait_until(
        wait,
        |_| {},
        || async {
            match cloud.delete_snapshot(snapshot_id).await {
                Ok(()) => Ok(Probe::Done(Removal::Removed)),
                Err(e) if e.meaning() == Some(Meaning::InUse) => {
                    Ok(Probe::Pending(format!("in use ({e})")))
                }
                Err(e) if is_not_found(&e) && Instant::now() < settled_at => {
                    Ok(Probe::Pending("not visible yet".into()))
                }
                Err(e) if is_not_found(&e) => Ok(Probe::Done(Removal::AlreadyGone)),
                Err(e) => Err(e),
            }
        },
    )
    .await
}

/// What [`delete_image`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deletion {
    /// Deregistered, with the snapshots deleted.
    Deleted(Vec<String>),
    /// Left alone: AWS's deregistration protection is on (its state, e.g.
    /// `enabled-without-cooldown`).
    Protected(String),
    /// AWS no longer knew the image, and it left no snapshots.
    AlreadyGone,
}

/// Deregisters an image made long enough ago and deletes its snapshots; see
/// [`delete_image_created_at`].
pub async fn delete_image(cloud: &dyn Cloud, image_id: &str) -> Result<Deletion> {
    delete_image_created_at(cloud, image_id, None).await
}

/// Deregisters an image and deletes its snapshots, including snapshots of a still-pending image
/// (found by the description AWS gives them). An image with deregistration protection is left
/// alone and reported, never an error. `created`: when kiln created the image, if it just did:
/// until a new id is visible, NotFound is not taken as "already gone".
pub async fn delete_image_created_at(
    cloud: &dyn Cloud,
    image_id: &str,
    created: Option<SystemTime>,
) -> Result<Deletion> {
    let ids = [image_id.to_owned()];
    let image =
        consistency::find_created(created, || async { Ok(cloud.images(&ids).await?.pop()) })
            .await?;
    if let Some(image) = image.as_ref().filter(|i| i.is_protected()) {
        let state = image.deregistration_protection.clone().unwrap_or_default();
        return Ok(Deletion::Protected(state));
    }
    let mut snapshots: Vec<String> = image.map(|i| i.snapshot_ids).unwrap_or_default();
    // A pending image names no snapshot yet; its snapshot is found by its description, and a
    // new one may be missing from that search for a while.
    let described = consistency::find_created(created, || async {
        let found = cloud.snapshots_of_image(image_id).await?;
        Ok((!found.is_empty() || !snapshots.is_empty()).then_some(found))
    })
    .await?;
    for id in described.unwrap_or_default() {
        if !snapshots.contains(&id) {
            snapshots.push(id);
        }
    }
    let image_removal = consistency::remove_created(created, || cloud.deregister_image(image_id))
        .await
        .or_else(|e| match e.aws_code() {
            // AWS's answer about an image deregistered moments ago.
            Some("InvalidAMIID.Unavailable") => Ok(Removal::AlreadyGone),
            _ => Err(e),
        })?;
    let mut deleted = Vec::new();
    for snapshot in snapshots {
        if delete_snapshot_when_free(cloud, &snapshot, created).await? == Removal::Removed {
            deleted.push(snapshot);
        }
    }
    if image_removal == Removal::AlreadyGone && deleted.is_empty() {
        return Ok(Deletion::AlreadyGone);
    }
    Ok(Deletion::Deleted(deleted))
}

/// The refusal of an image kiln did not build for this recipe identity.
pub fn foreign(image_id: &str, plan: &Plan, tagged: Option<&str>) -> Error {
    Error::Refused(format!(
        "image {image_id} was not built by kiln for recipe {} (identity {}; its kiln:recipe tag is {}): pass --allow-foreign to use it anyway",
        plan.name,
        plan.identity(),
        tagged.map(|r| format!("{r:?}")).unwrap_or_else(|| "missing".into())
    ))
}

/// Image `id`, refused unless it exists, is available and (without `allow_foreign`) was built by
/// kiln for `plan`'s recipe identity.
pub async fn usable_image(
    cloud: &dyn Cloud,
    plan: &Plan,
    id: &str,
    allow_foreign: bool,
) -> Result<crate::aws::Image> {
    let image = cloud.images(&[id.to_owned()]).await?.pop().ok_or_else(|| {
        Error::Refused(format!("image {id} does not exist in {}", cloud.region()))
    })?;
    if image.state != ImageState::Available {
        return Err(Error::Refused(format!(
            "image {id} is {}, not available",
            image.state
        )));
    }
    let recipe = image.tags.get(tags::RECIPE).map(String::as_str);
    let own = recipe == Some(plan.name.as_str())
        && Identity::of(&image, &plan.identity()) != Identity::Other;
    if !allow_foreign && !own {
        return Err(foreign(id, plan, recipe));
    }
    Ok(image)
}
