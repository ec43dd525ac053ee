//! `kiln prune`: retention. Deregisters this recipe's kiln-built images beyond the newest N and
//! deletes their snapshots, in the home region and every region the recipe copies to.
//!
//! An image survives, whatever its age, when it is referenced by: the launch template's default
//! or latest version, any of its newest N versions, any version of any other launch template in
//! the account (in that region), or an instance that is not terminated. The choice is a pure
//! function ([`choose`]) so it is tested without AWS.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::aws::sdk::ec2::{self, filter, ImageInfo};
use crate::aws::sdk::Sdk as Cloud;
use crate::error::Result;
use crate::pipeline::images;
use crate::plan::Plan;
use crate::tags;

#[derive(Debug, Clone, Serialize)]
pub struct PrunedImage {
    pub region: String,
    pub image_id: String,
    pub name: String,
    pub snapshot_ids: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Survivor {
    pub region: String,
    pub image_id: String,
    pub name: String,
    pub reasons: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PruneReport {
    pub keep: u32,
    pub dry_run: bool,
    pub deleted: Vec<PrunedImage>,
    pub kept: Vec<Survivor>,
}

/// Splits `images` into (to delete, survivors with reasons). `protected` maps image ids to the
/// reasons they must stay. The newest `keep` images (by creation date) stay too.
pub fn choose<'a>(
    images: &'a [ImageInfo],
    keep: usize,
    protected: &BTreeMap<String, Vec<String>>,
) -> (Vec<&'a ImageInfo>, Vec<(&'a ImageInfo, Vec<String>)>) {
    let mut sorted: Vec<&ImageInfo> = images.iter().collect();
    // Creation dates may tie (an emulator, or builds in the same second): the build id, which
    // starts with the build's start time in milliseconds, breaks the tie.
    let key = |i: &ImageInfo| {
        (
            i.creation_date.clone(),
            i.tags.get(tags::BUILD_ID).cloned().unwrap_or_default(),
            i.id.clone(),
        )
    };
    sorted.sort_by_key(|i| std::cmp::Reverse(key(i)));
    let mut delete = Vec::new();
    let mut survive = Vec::new();
    for (rank, image) in sorted.into_iter().enumerate() {
        let mut reasons = protected.get(&image.id).cloned().unwrap_or_default();
        if rank < keep {
            reasons.insert(0, format!("among the newest {keep}"));
        }
        if reasons.is_empty() {
            delete.push(image);
        } else {
            survive.push((image, reasons));
        }
    }
    (delete, survive)
}

fn protect(map: &mut BTreeMap<String, Vec<String>>, image: Option<&String>, reason: String) {
    if let Some(id) = image {
        let reasons = map.entry(id.clone()).or_default();
        if !reasons.contains(&reason) {
            reasons.push(reason);
        }
    }
}

pub async fn prune(home: &Cloud, plan: &Plan, keep: u32, dry_run: bool) -> Result<PruneReport> {
    let mut report = PruneReport {
        keep,
        dry_run,
        deleted: Vec::new(),
        kept: Vec::new(),
    };
    let mut regions = vec![home.region.clone()];
    regions.extend(
        plan.image
            .regions
            .iter()
            .filter(|r| **r != home.region)
            .cloned(),
    );
    for region in regions {
        let cloud = home.in_region(&region);
        let images = ec2::list_images(
            &cloud,
            &["self".to_owned()],
            vec![filter(
                &format!("tag:{}", tags::RECIPE),
                [plan.name.as_str()],
            )],
            &plan.name,
        )
        .await?;
        let images: Vec<ImageInfo> = images
            .into_iter()
            .filter(|i| i.tags.contains_key(tags::BUILD_ID))
            .collect();
        let protected = references(&cloud, plan, keep).await?;
        let (delete, survive) = choose(&images, keep as usize, &protected);
        for (image, reasons) in survive {
            report.kept.push(Survivor {
                region: region.clone(),
                image_id: image.id.clone(),
                name: image.name.clone(),
                reasons,
            });
        }
        for image in delete {
            let snapshot_ids = if dry_run {
                image.snapshot_ids.clone()
            } else {
                images::delete_image(&cloud, &image.id).await?
            };
            report.deleted.push(PrunedImage {
                region: region.clone(),
                image_id: image.id.clone(),
                name: image.name.clone(),
                snapshot_ids,
            });
        }
    }
    Ok(report)
}

/// Every image id referenced in this region, with why.
async fn references(
    cloud: &Cloud,
    plan: &Plan,
    keep: u32,
) -> Result<BTreeMap<String, Vec<String>>> {
    let mut protected = BTreeMap::new();
    let own_template = plan.release.as_ref().map(|r| r.launch_template.as_str());
    for template in ec2::list_launch_templates(cloud).await? {
        let versions = ec2::list_template_versions(cloud, &template.id).await?;
        let is_own = own_template.is_some_and(|t| t == template.name || t == template.id);
        for (rank, version) in versions.iter().enumerate() {
            let image = version.image_id.as_ref();
            if !is_own {
                protect(
                    &mut protected,
                    image,
                    format!(
                        "used by launch template {} version {}",
                        template.name, version.number
                    ),
                );
                continue;
            }
            if version.number == template.default_version {
                protect(
                    &mut protected,
                    image,
                    format!(
                        "the default version ({}) of {}",
                        version.number, template.name
                    ),
                );
            }
            if version.number == template.latest_version {
                protect(
                    &mut protected,
                    image,
                    format!(
                        "the latest version ({}) of {}",
                        version.number, template.name
                    ),
                );
            }
            if rank < keep as usize {
                protect(
                    &mut protected,
                    image,
                    format!(
                        "version {} of {} is within the newest {keep}",
                        version.number, template.name
                    ),
                );
            }
        }
    }
    let states = ["pending", "running", "stopping", "stopped", "shutting-down"];
    let instances = cloud
        .ec2
        .describe_instances()
        .filters(filter("instance-state-name", states))
        .into_paginator()
        .send()
        .collect::<Vec<_>>()
        .await;
    for page in instances {
        let page =
            page.map_err(|e| cloud.fail("DescribeInstances", "instances using kiln images", e))?;
        for instance in page.reservations().iter().flat_map(|r| r.instances()) {
            let state = instance
                .state()
                .and_then(|s| s.name())
                .map(|n| n.as_str().to_owned())
                .unwrap_or_default();
            protect(
                &mut protected,
                instance.image_id().map(str::to_owned).as_ref(),
                format!(
                    "used by instance {} ({state})",
                    instance.instance_id().unwrap_or_default()
                ),
            );
        }
    }
    Ok(protected)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(id: &str, date: &str) -> ImageInfo {
        ImageInfo {
            id: id.into(),
            name: id.into(),
            state: "available".into(),
            state_reason: String::new(),
            creation_date: date.into(),
            owner_id: String::new(),
            root_device_name: None,
            root_volume_size: None,
            architecture: None,
            snapshot_ids: vec![format!("snap-{id}")],
            tags: BTreeMap::new(),
        }
    }

    #[test]
    fn keeps_the_newest_and_the_referenced() {
        let images = vec![
            image("a", "2026-01-01"),
            image("b", "2026-01-02"),
            image("c", "2026-01-03"),
            image("d", "2026-01-04"),
        ];
        let mut protected = BTreeMap::new();
        protect(
            &mut protected,
            Some(&"a".to_owned()),
            "used by instance i-1 (running)".into(),
        );
        let (delete, survive) = choose(&images, 2, &protected);
        assert_eq!(
            delete.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
            vec!["b"]
        );
        let reasons: Vec<(&str, &Vec<String>)> =
            survive.iter().map(|(i, r)| (i.id.as_str(), r)).collect();
        assert_eq!(reasons[0], ("d", &vec!["among the newest 2".to_owned()]));
        assert_eq!(
            reasons[2],
            ("a", &vec!["used by instance i-1 (running)".to_owned()])
        );
    }

    #[test]
    fn keep_zero_would_delete_unreferenced_everything_but_prune_never_gets_zero() {
        let images = vec![image("a", "1"), image("b", "2")];
        let (delete, _) = choose(&images, 0, &BTreeMap::new());
        assert_eq!(delete.len(), 2);
    }
}
