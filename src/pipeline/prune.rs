//! `kiln prune`: retention. Deregisters this recipe's kiln-built images beyond the newest N and
//! deletes their snapshots, in the home region and every region the recipe copies to; and
//! deletes the versions kiln made of the recipe's launch template beyond the newest N, never the
//! default or the latest, nor one that an auto scaling group, a group's instance or an active
//! instance refresh launches from (a version AWS does not delete is reported, not fatal).
//!
//! An image survives, whatever its age, when it is referenced by: the launch template's default
//! or latest version, any of its newest N versions, any version of any other launch template in
//! the account (in that region), an instance that is not terminated, or an SSM parameter; or
//! when it has deregistration protection (reported, never an error). AWS says what uses an image
//! (`DescribeImageReferences`); where it does not offer that, kiln scans the launch templates and
//! instances itself (SSM parameters are then not seen). The choice is a pure function
//! ([`choose`]) so it is tested without AWS.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::aws::LaunchTemplate;
use crate::aws::{Cloud, Image, ImageQuery, ImageReference, InstanceQuery, InstanceState};
use crate::aws::{TemplateRef, TemplateVersion};
use crate::error::Result;
use crate::pipeline::images::Identity;
use crate::pipeline::images::{self, age_key, Deletion};
use crate::pipeline::release::references::InUse;
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

/// A launch template version beyond the newest N.
#[derive(Debug, Clone, Serialize)]
pub struct PrunedVersion {
    pub region: String,
    pub template: String,
    pub version: i64,
    pub image_id: Option<String>,
    /// Why AWS did not delete it; `None` when deleted (or, with `--dry-run`, to be deleted).
    pub failure: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PruneReport {
    pub keep: u32,
    pub dry_run: bool,
    pub deleted: Vec<PrunedImage>,
    pub kept: Vec<Survivor>,
    /// The recipe's launch template versions beyond the newest `keep`.
    pub versions: Vec<PrunedVersion>,
}

impl PruneReport {
    /// Some launch template version was not deleted.
    pub fn has_failures(&self) -> bool {
        self.versions.iter().any(|v| v.failure.is_some())
    }
}

/// Descriptions of the versions kiln makes (`kiln build ...`, `kiln rollback ...`): only those
/// are pruned, never a version someone made by hand.
const KILN_VERSION_PREFIX: &str = "kiln ";

/// The versions of the recipe's template to delete: made by kiln, beyond the newest `keep`, and
/// neither the default nor the latest.
pub fn versions_to_prune<'a>(
    template: &LaunchTemplate,
    versions: &'a [TemplateVersion],
    keep: u32,
) -> Vec<&'a TemplateVersion> {
    let mut newest_first: Vec<&TemplateVersion> = versions.iter().collect();
    newest_first.sort_by_key(|v| std::cmp::Reverse(v.number));
    newest_first
        .into_iter()
        .skip(keep as usize)
        .filter(|v| v.number != template.default_version && v.number != template.latest_version)
        .filter(|v| v.description.starts_with(KILN_VERSION_PREFIX))
        .collect()
}

/// Deletes (or lists, with `dry_run`) the recipe's template versions beyond the newest `keep`.
async fn prune_versions(
    cloud: &dyn Cloud,
    plan: &Plan,
    keep: u32,
    dry_run: bool,
) -> Result<Vec<PrunedVersion>> {
    let Some(release) = &plan.release else {
        return Ok(Vec::new());
    };
    let template = cloud
        .launch_template(&TemplateRef::parse(&release.launch_template))
        .await?;
    let versions = cloud.template_versions(&template.id).await?;
    // A version a group, an instance or an active refresh launches from stays, however old.
    let in_use = InUse::read(cloud, &template).await?;
    let mut pruned = Vec::new();
    for version in versions_to_prune(&template, &versions, keep) {
        if in_use.why(version.number).is_some() {
            continue;
        }
        let failure = match dry_run {
            true => None,
            false => cloud
                .delete_template_version(&template.id, version.number)
                .await
                .err()
                .map(|e| crate::pipeline::first_line(&e.to_string())),
        };
        pruned.push(PrunedVersion {
            region: cloud.region().to_owned(),
            template: template.name.clone(),
            version: version.number,
            image_id: version.image_id.clone(),
            failure,
        });
    }
    Ok(pruned)
}

/// Why each referenced image must stay, by image id.
type Protected = BTreeMap<String, Vec<String>>;

/// Splits `images` into (to delete, survivors with reasons). `protected` maps image ids to the
/// reasons they must stay. The newest `keep` images (by [`age_key`]) stay too, not counting
/// images that failed their test phase (`kiln:test=failed`): those are never released, so only a
/// reference keeps them.
pub fn choose<'a>(
    images: &'a [Image],
    keep: usize,
    protected: &Protected,
) -> (Vec<&'a Image>, Vec<(&'a Image, Vec<String>)>) {
    let mut sorted: Vec<&Image> = images.iter().collect();
    sorted.sort_by_key(|i| std::cmp::Reverse(age_key(i)));
    let mut delete = Vec::new();
    let mut survive = Vec::new();
    let mut rank = 0;
    for image in sorted {
        let mut reasons = protected.get(&image.id).cloned().unwrap_or_default();
        let failed = image.tags.get(tags::TEST).map(String::as_str) == Some(tags::TEST_FAILED);
        if !failed {
            if rank < keep {
                reasons.insert(0, format!("among the newest {keep}"));
            }
            rank += 1;
        }
        if reasons.is_empty() {
            delete.push(image);
        } else {
            survive.push((image, reasons));
        }
    }
    (delete, survive)
}

/// An image built before recipe identities (no `kiln:identity` tag) may be another project's
/// with the same recipe name: it stays unless the recipe's own launch template has a version
/// that uses it (which proves it is this recipe's).
async fn protect_legacy(
    cloud: &dyn Cloud,
    plan: &Plan,
    images: &[Image],
    protected: &mut Protected,
) -> Result<()> {
    let legacy: Vec<&Image> = images
        .iter()
        .filter(|i| !i.tags.contains_key(tags::IDENTITY))
        .collect();
    if legacy.is_empty() {
        return Ok(());
    }
    let own = match &plan.release {
        // The template is in the home region, not in the regions the recipe copies to.
        Some(release) if !plan.image.regions.iter().any(|r| r == cloud.region()) => {
            crate::pipeline::release::version_images(cloud, &release.launch_template)
                .await
                .unwrap_or_default()
        }
        _ => BTreeMap::new(),
    };
    for image in legacy {
        if !own.values().any(|id| id == &image.id) {
            let reason = format!(
                "built before recipe identities (no kiln:identity tag) and not used by this recipe's launch template: it may be another project's; tag it kiln:identity={} to let prune manage it",
                plan.identity()
            );
            protect(protected, Some(&image.id), reason);
        }
    }
    Ok(())
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
        versions: Vec::new(),
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
    report.versions = prune_versions(home, plan, keep, dry_run).await?;
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
    // Only this recipe identity's images: another project's recipe may have the same name.
    let identity = plan.identity();
    let images: Vec<Image> = cloud
        .find_images(&query)
        .await?
        .into_iter()
        .filter(|i| Identity::of(i, &identity) != Identity::Other)
        .collect();
    let mut protected = references(cloud, plan, keep, &images).await?;
    protect_legacy(cloud, plan, &images, &mut protected).await?;
    for image in images.iter().filter(|i| i.is_protected()) {
        let state = image.deregistration_protection.clone().unwrap_or_default();
        let reason = format!("deregistration protection is {state}");
        protect(&mut protected, Some(&image.id), reason);
    }
    let (delete, survive) = choose(&images, keep as usize, &protected);
    let survivor = |image: &Image, reasons| Survivor {
        region: region.clone(),
        image_id: image.id.clone(),
        name: image.name.clone(),
        reasons,
    };
    for (image, reasons) in survive {
        report.kept.push(survivor(image, reasons));
    }
    for image in delete {
        let snapshot_ids = if dry_run {
            image.snapshot_ids.clone()
        } else {
            match images::delete_image(cloud, &image.id).await? {
                Deletion::Deleted(snapshots) => snapshots,
                // Removed by someone else since it was listed: what prune wanted.
                Deletion::AlreadyGone => Vec::new(),
                Deletion::Protected(state) => {
                    let reason = format!("deregistration protection is {state}");
                    report.kept.push(survivor(image, vec![reason]));
                    continue;
                }
            }
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

/// Every image id among `images` referenced in this region, with why: the recipe's own launch
/// template by its retention rules, everything else as AWS reports it (or as scanned).
async fn references(
    cloud: &dyn Cloud,
    plan: &Plan,
    keep: u32,
    images: &[Image],
) -> Result<Protected> {
    let own = plan
        .release
        .as_ref()
        .map(|r| TemplateRef::parse(&r.launch_template));
    let own = own.as_ref();
    let ids: Vec<String> = images.iter().map(|i| i.id.clone()).collect();
    let Some(found) = cloud.image_references(&ids).await? else {
        return scanned_references(cloud, own, keep).await;
    };
    let mut protected = Protected::new();
    let templates = cloud.launch_templates().await?;
    let own_template = own.and_then(|own| templates.iter().find(|t| own.matches(t)));
    if let Some(template) = own_template {
        let versions = cloud.template_versions(&template.id).await?;
        protect_own_versions(&mut protected, template, &versions, keep);
    }
    let names: BTreeMap<&str, &str> = templates
        .iter()
        .map(|t| (t.id.as_str(), t.name.as_str()))
        .collect();
    for reference in found {
        let Some(reason) = reference_reason(&reference, &names, own_template) else {
            continue;
        };
        protect(&mut protected, Some(&reference.image_id), reason);
    }
    Ok(protected)
}

/// Why a reference AWS reported keeps its image: `used by launch template web`; `None` for the
/// recipe's own template, whose versions follow the retention rules instead.
fn reference_reason(
    reference: &ImageReference,
    template_names: &BTreeMap<&str, &str>,
    own_template: Option<&LaunchTemplate>,
) -> Option<String> {
    // arn:aws:ec2:us-east-1:123456789012:instance/i-..., .../launch-template/lt-...,
    // arn:aws:ssm:...:parameter/name
    let tail = reference
        .arn
        .splitn(6, ':')
        .nth(5)
        .unwrap_or(&reference.arn);
    let reason = match reference.resource_type.as_str() {
        "ec2:Instance" => format!("used by instance {}", tail.trim_start_matches("instance/")),
        "ec2:LaunchTemplate" => {
            let id = tail.trim_start_matches("launch-template/");
            if own_template.is_some_and(|t| t.id == id) {
                return None;
            }
            let name = template_names.get(id).copied().unwrap_or(id);
            format!("used by launch template {name}")
        }
        "ssm:Parameter" => {
            let name = tail.trim_start_matches("parameter");
            format!("used by SSM parameter {name}")
        }
        other => format!("used by {other} {}", reference.arn),
    };
    Some(reason)
}

/// [`references`] where AWS does not offer `DescribeImageReferences`: every version of every
/// launch template, and every instance that is not terminated.
async fn scanned_references(
    cloud: &dyn Cloud,
    own: Option<&TemplateRef>,
    keep: u32,
) -> Result<Protected> {
    let mut protected = Protected::new();
    for template in cloud.launch_templates().await? {
        let versions = cloud.template_versions(&template.id).await?;
        if own.is_some_and(|own| own.matches(&template)) {
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
        client_token: None,
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
            deprecation_time: None,
            deregistration_protection: None,
            tags: BTreeMap::new(),
        }
    }

    fn version(number: i64, description: &str) -> TemplateVersion {
        TemplateVersion {
            template_id: "lt-1".into(),
            template_name: "web".into(),
            number,
            is_default: false,
            image_id: Some(format!("ami-{number}")),
            description: description.into(),
            created_at: None,
            instance_type: None,
            subnet_id: None,
            instance_profile: None,
        }
    }

    #[test]
    fn template_versions_beyond_keep_go_but_never_default_latest_or_foreign_ones() {
        let template = LaunchTemplate {
            id: "lt-1".into(),
            name: "web".into(),
            default_version: 2,
            latest_version: 7,
            tags: BTreeMap::new(),
        };
        let versions: Vec<TemplateVersion> = [
            (1, "made by hand"),
            (2, "kiln build b2: web 2 ami-2"),
            (3, "kiln build b3: web 3 ami-3"),
            (4, "kiln rollback to 3"),
            (5, "kiln build b5: web 5 ami-5"),
            (6, "kiln build b6: web 6 ami-6"),
            (7, "kiln build b7: web 7 ami-7"),
        ]
        .iter()
        .map(|(n, d)| version(*n, d))
        .collect();
        let numbers = |keep| -> Vec<i64> {
            versions_to_prune(&template, &versions, keep)
                .iter()
                .map(|v| v.number)
                .collect()
        };
        assert_eq!(numbers(2), [5, 4, 3]);
        assert_eq!(numbers(5), [] as [i64; 0]);
        assert_eq!(numbers(0), [6, 5, 4, 3]);
    }

    #[test]
    fn an_image_that_failed_its_test_does_not_count_among_the_newest() {
        let mut failed = image("c", "2026-01-03");
        failed
            .tags
            .insert(tags::TEST.into(), tags::TEST_FAILED.into());
        let images = vec![image("a", "2026-01-01"), image("b", "2026-01-02"), failed];
        let (delete, survive) = choose(&images, 2, &BTreeMap::new());
        assert_eq!(
            delete.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
            vec!["c"]
        );
        assert_eq!(survive.len(), 2);
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
