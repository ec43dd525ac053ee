//! Teardown: removing what a failed or interrupted build created, newest first.
//!
//! The ledger says what was created; a search by the build's `kiln:build-id` tag adds what a call
//! created but could not report (an interrupt between the request and its answer). Every removal
//! is attempted even when one fails; the failures are returned as lines for the report, and the
//! original error of the build stays the error.

use std::time::Duration;

use crate::aws::poll::{wait_until, Probe, Wait};
use crate::aws::sdk::ec2::{self, filter};
use crate::aws::sdk::Sdk as Cloud;
use crate::error::Result;
use crate::ledger::{Ledger, Resource};
use crate::pipeline::{images, release};
use crate::tags;

/// How long teardown waits for a builder to be gone before it reports and moves on.
pub const TERMINATE_WAIT: Duration = Duration::from_secs(600);

/// Removes every resource of the build that is not a kept product; returns what it did, one
/// line each, failures included.
///
/// `template` is the recipe's launch template: a version this build created but never heard
/// back about (interrupted during the call) is found there by its description.
pub async fn tear_down(cloud: &Cloud, ledger: &Ledger, template: Option<&str>) -> Vec<String> {
    let mut report = Vec::new();
    let mut todo = ledger.to_tear_down();
    match find_tagged_leftovers(cloud, ledger.build_id(), template).await {
        Ok(found) => {
            let known = ledger.entries();
            for resource in found {
                if !known.iter().any(|(r, _)| *r == resource) && !todo.contains(&resource) {
                    todo.push(resource);
                }
            }
        }
        Err(e) => report.push(format!(
            "could not search for tagged leftovers: {}",
            e.to_string().lines().next().unwrap_or_default()
        )),
    }
    // Launch template versions first, then images, then instances: the reverse of creation.
    todo.sort_by_key(|r| match r {
        Resource::TemplateVersion { .. } => 0,
        Resource::Image { .. } => 1,
        Resource::Snapshot { .. } => 2,
        Resource::Instance { .. } => 3,
    });
    for resource in todo {
        match remove(cloud, &resource).await {
            Ok(detail) => {
                let _ = ledger.removed(resource.clone());
                report.push(format!("removed {resource}{detail}"));
            }
            Err(e) => report.push(format!(
                "FAILED to remove {resource}: {} (remove it by hand, or run `kiln gc`)",
                e.to_string().lines().next().unwrap_or_default()
            )),
        }
    }
    report
}

/// Instances and images tagged with this build id that are not terminated / deregistered, and
/// launch template versions whose description names this build and that are not the default.
async fn find_tagged_leftovers(
    cloud: &Cloud,
    build_id: &str,
    template: Option<&str>,
) -> Result<Vec<Resource>> {
    let by_tag = || filter(&format!("tag:{}", tags::BUILD_ID), [build_id]);
    let mut found = Vec::new();
    let states = ["pending", "running", "stopping", "stopped"];
    for instance in ec2::list_instances(
        cloud,
        vec![by_tag(), filter("instance-state-name", states)],
        build_id,
    )
    .await?
    {
        found.push(Resource::Instance {
            id: instance.id,
            region: cloud.region.clone(),
        });
    }
    // Every image of this build: the ones the ledger knows (kept products among them) are
    // filtered out by the caller; the others were made by a call whose answer never came.
    for image in ec2::list_images(cloud, &["self".to_owned()], vec![by_tag()], build_id).await? {
        found.push(Resource::Image {
            id: image.id,
            region: cloud.region.clone(),
        });
    }
    if let Some(template) = template {
        let info = ec2::describe_launch_template(cloud, template).await?;
        let marker = release::version_description(build_id, "", "", "");
        let marker = marker.split(':').next().unwrap_or_default().to_owned() + ":";
        for version in ec2::list_template_versions(cloud, &info.id).await? {
            if version.description.starts_with(&marker) && version.number != info.default_version {
                found.push(Resource::TemplateVersion {
                    template_id: info.id.clone(),
                    version: version.number,
                    region: cloud.region.clone(),
                });
            }
        }
    }
    Ok(found)
}

/// Removes one resource (in its own region); says what else went with it.
pub async fn remove(home: &Cloud, resource: &Resource) -> Result<String> {
    let cloud = home.in_region(resource.region());
    match resource {
        Resource::TemplateVersion {
            template_id,
            version,
            ..
        } => {
            let template = ec2::describe_launch_template(&cloud, template_id).await?;
            if template.default_version == *version {
                // It became the default: that release completed, so the version stays.
                return Ok(" (kept: it is the default version)".into());
            }
            ec2::delete_template_version(&cloud, template_id, *version).await?;
            Ok(String::new())
        }
        Resource::Image { id, .. } => {
            let snapshots = images::delete_image(&cloud, id).await?;
            Ok(if snapshots.is_empty() {
                String::new()
            } else {
                format!(" and its snapshots {}", snapshots.join(", "))
            })
        }
        Resource::Snapshot { id, .. } => {
            ec2::delete_snapshot(&cloud, id).await?;
            Ok(String::new())
        }
        Resource::Instance { id, .. } => {
            terminate_and_wait(&cloud, id, TERMINATE_WAIT).await?;
            Ok(" (terminated)".into())
        }
    }
}

/// Terminates an instance and waits until it is `terminated`.
pub async fn terminate_and_wait(cloud: &Cloud, id: &str, timeout: Duration) -> Result<()> {
    ec2::terminate_instances(cloud, &[id.to_owned()]).await?;
    let wait = Wait {
        phase: "waiting for the builder to terminate",
        resource: id,
        region: &cloud.region,
        timeout,
        hint: "check the instance in the EC2 console; termination protection blocks it",
    };
    wait_until(
        wait,
        |_| {},
        || async {
            match ec2::instance_state(cloud, id).await {
                Ok(state) if state == "terminated" => Ok(Probe::Done(())),
                Ok(state) => Ok(Probe::Pending(state)),
                Err(e) if e.aws_code() == Some("InvalidInstanceID.NotFound") => Ok(Probe::Done(())),
                Err(e) => Err(e),
            }
        },
    )
    .await
}
