//! Images: resolving the source, finding an existing build by fingerprint, waiting for a new
//! image, tagging its snapshots, and copying it to other regions.

use crate::aws::poll::{wait_until, Probe, Wait};
use crate::aws::sdk::ec2::{self, filter, ImageInfo};
use crate::aws::sdk::Sdk as Cloud;
use crate::error::{Error, Result};
use crate::plan::SourceSpec;
use crate::tags;

/// The source image: a fixed id, or the newest available image matching the filter.
pub async fn resolve_source(cloud: &Cloud, source: &SourceSpec) -> Result<ImageInfo> {
    match source {
        SourceSpec::Image(id) => {
            let image = ec2::find_image(cloud, id).await?.ok_or_else(|| {
                Error::Refused(format!(
                    "source image {id} does not exist in {} (or is not visible to this account): check the id and the region",
                    cloud.region
                ))
            })?;
            if image.state != "available" {
                return Err(Error::BadState {
                    phase: "resolving the source image",
                    resource: id.clone(),
                    region: cloud.region.clone(),
                    state: image.state.clone(),
                    reason: "a builder can only be launched from an available image".into(),
                });
            }
            Ok(image)
        }
        SourceSpec::Filter {
            name,
            owners,
            architecture,
        } => {
            let mut filters = vec![
                filter("name", [name.as_str()]),
                filter("state", ["available"]),
            ];
            if let Some(arch) = architecture {
                filters.push(filter("architecture", [arch.as_str()]));
            }
            let what = format!("images named {name}");
            let images = ec2::list_images(cloud, owners, filters, &what).await?;
            newest(images).ok_or_else(|| {
                Error::Refused(format!(
                    "no available image in {} matches name {name:?}, owners {owners:?}{}: check the pattern and the owners",
                    cloud.region,
                    architecture.as_ref().map(|a| format!(", architecture {a}")).unwrap_or_default()
                ))
            })
        }
    }
}

/// The newest image by creation date (ties broken by id, so the choice is stable).
pub fn newest(mut images: Vec<ImageInfo>) -> Option<ImageInfo> {
    images.sort_by_key(|i| {
        (
            i.creation_date.clone(),
            i.tags.get(tags::BUILD_ID).cloned().unwrap_or_default(),
            i.id.clone(),
        )
    });
    images.pop()
}

/// An available image of this account already built from exactly this fingerprint.
pub async fn find_by_fingerprint(cloud: &Cloud, fingerprint: &str) -> Result<Option<ImageInfo>> {
    let filters = vec![
        filter(&format!("tag:{}", tags::FINGERPRINT), [fingerprint]),
        filter("state", ["available"]),
    ];
    let images = ec2::list_images(
        cloud,
        &["self".to_owned()],
        filters,
        &format!("images with {fingerprint}"),
    )
    .await?;
    Ok(newest(images))
}

/// Waits until an image is `available`; fails at once if it becomes `failed`.
pub async fn wait_available(
    cloud: &Cloud,
    image_id: &str,
    timeout: std::time::Duration,
    on_state: impl FnMut(&str),
) -> Result<ImageInfo> {
    let wait = Wait {
        phase: "waiting for the image to become available",
        resource: image_id,
        region: &cloud.region,
        timeout,
        hint: "snapshots of large volumes can take long: raise timeouts.image_available, and check the image in the EC2 console",
    };
    wait_until(wait, on_state, || async {
        let Some(image) = ec2::find_image(cloud, image_id).await? else {
            // Right after CreateImage the id may not be visible yet.
            return Ok(Probe::Pending("not visible yet".into()));
        };
        match image.state.as_str() {
            "available" => Ok(Probe::Done(image)),
            "failed" | "error" | "invalid" | "deregistered" => Err(Error::BadState {
                phase: "waiting for the image",
                resource: image_id.to_owned(),
                region: cloud.region.clone(),
                state: image.state.clone(),
                reason: image.state_reason.clone(),
            }),
            other => Ok(Probe::Pending(other.to_owned())),
        }
    })
    .await
}

/// Deregisters an image and deletes its snapshots, including snapshots of a still-pending image
/// (found by the description AWS gives them: "Created by CreateImage(...) for ami-...").
pub async fn delete_image(cloud: &Cloud, image_id: &str) -> Result<Vec<String>> {
    let mut snapshots = ec2::find_image(cloud, image_id)
        .await?
        .map(|i| i.snapshot_ids)
        .unwrap_or_default();
    let described = ec2::list_snapshots(
        cloud,
        vec![filter("description", [format!("*{image_id}*")])],
        image_id,
    )
    .await?;
    for (id, _) in described {
        if !snapshots.contains(&id) {
            snapshots.push(id);
        }
    }
    ec2::deregister_image(cloud, image_id).await?;
    for snapshot in &snapshots {
        ec2::delete_snapshot(cloud, snapshot).await?;
    }
    Ok(snapshots)
}
