//! `kiln prune`: retention. Deregisters this recipe's kiln-built images beyond the newest N and
//! deletes their snapshots, in the home region and every region the recipe copies to.
//!
//! An image survives, whatever its age, when it is referenced by: the launch template's default
//! or latest version, any of its newest N versions, any version of any other launch template in
//! the account (in that region), or an instance that is not terminated. The choice is a pure
//! function ([`choose`]) so it is tested without AWS.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::aws::{Cloud, Image, ImageQuery, InstanceQuery, InstanceState, LaunchTemplate};
use crate::aws::{TemplateRef, TemplateVersion};
use crate::error::Result;
use crate::pipeline::images::{self, age_key};
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

/// Why each referenced image must stay, by image id.
type Protected = BTreeMap<String, Vec<String>>;

/// Splits `images` into (to delete, survivors with reasons). `protected` maps image ids to the
/// reasons they must stay. The newest `keep` images (by [`age_key`]) stay too.
pub fn choose<'a>(
    images: &'a [Image],
    keep: usize,
    protected: &Protected,
) -> (Vec<&'a Image>, Vec<(&'a Image, Vec<String>)>) {
    let mut sorted: Vec<&Image> = images.iter().collect();
    sorted.sort_by_key(|i| std::cmp::Reverse(age_key(i)));
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

fn protect(map: &mut Protected, image: Option<&String>, reason: String) {
    if let Some(id) = image {
        let reasons = map.entry(id.clone()).or_default();
        if !reasons.contains(&reason) {
            reasons.push(reason);
        }
    }
}

pub async fn prune(home: &dyn Cloud, plan: &Plan, keep: u32, dry_run: bool) -> Result<PruneReport> {
    let mut report = PruneReport {
        keep,
        dry_run,
        deleted: Vec::new(),
        kept: Vec::new(),
    };
    let mut regions = vec![home.region().to_owned()];
    regions.extend(
        plan.image
            .regions
            .iter()
            .filter(|r| r.as_str() != home.region())
            .cloned(),
    );
    for region in regions {
        let cloud = home.in_region(&region);
        prune_region(cloud.as_ref(), plan, keep, dry_run, &mut report).await?;
    }
    Ok(report)
}

async fn prune_region(
    cloud: &dyn Cloud,
    plan: &Plan,
    keep: u32,
    dry_run: bool,
    report: &mut PruneReport,
) -> Result<()> {
    let region = cloud.region().to_owned();
    let query = ImageQuery::own()
        .tagged(tags::RECIPE, &plan.name)
        .with_tag_key(tags::BUILD_ID);
    let images = cloud.find_images(&query).await?;
    let protected = references(cloud, plan, keep).await?;
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
            images::delete_image(cloud, &image.id).await?
        };
        report.deleted.push(PrunedImage {
            region: region.clone(),
            image_id: image.id.clone(),
            name: image.name.clone(),
            snapshot_ids,
        });
    }
    Ok(())
}

/// Every image id referenced in this region, with why.
async fn references(cloud: &dyn Cloud, plan: &Plan, keep: u32) -> Result<Protected> {
    let mut protected = Protected::new();
    let own = plan
        .release
        .as_ref()
        .map(|r| TemplateRef::parse(&r.launch_template));
    for template in cloud.launch_templates().await? {
        let versions = cloud.template_versions(&template.id).await?;
        if own.as_ref().is_some_and(|own| own.matches(&template)) {
            protect_own_versions(&mut protected, &template, &versions, keep);
        } else {
            for version in &versions {
                let reason = format!(
                    "used by launch template {} version {}",
                    template.name, version.number
                );
                protect(&mut protected, version.image_id.as_ref(), reason);
            }
        }
    }
    let mut states = InstanceState::LIVE.to_vec();
    states.push(InstanceState::ShuttingDown);
    let query = InstanceQuery {
        tags: Vec::new(),
        states,
    };
    for instance in cloud.find_instances(&query).await? {
        let reason = format!("used by instance {} ({})", instance.id, instance.state);
        protect(&mut protected, instance.image_id.as_ref(), reason);
    }
    Ok(protected)
}

/// The recipe's own template: its default, its latest and its newest `keep` versions stay.
fn protect_own_versions(
    protected: &mut Protected,
    template: &LaunchTemplate,
    versions: &[TemplateVersion],
    keep: u32,
) {
    let name = &template.name;
    for (rank, version) in versions.iter().enumerate() {
        let (image, number) = (version.image_id.as_ref(), version.number);
        if number == template.default_version {
            let reason = format!("the default version ({number}) of {name}");
            protect(protected, image, reason);
        }
        if number == template.latest_version {
            let reason = format!("the latest version ({number}) of {name}");
            protect(protected, image, reason);
        }
        if rank < keep as usize {
            let reason = format!("version {number} of {name} is within the newest {keep}");
            protect(protected, image, reason);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(id: &str, date: &str) -> Image {
        Image {
            id: id.into(),
            name: id.into(),
            state: crate::aws::ImageState::Available,
            state_reason: String::new(),
            creation_date: date.into(),
            owner_id: String::new(),
            root_device_name: None,
            root_volume_size: None,
            architecture: None,
            snapshot_ids: vec![format!("snap-{id}")],
            imds_support: None,
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
