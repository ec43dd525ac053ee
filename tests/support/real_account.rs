//! The conformance suite's real-account backend (`KILN_TEST_AWS=1`); nothing here runs without
//! it ([`crate::conformance::Backend::aws`] checks the variable first).
//!
//! Uses the standard credential chain and region (`AWS_PROFILE`, `AWS_REGION`...). It needs:
//! - `KILN_TEST_INSTANCE_PROFILE`: an instance profile whose role has
//!   `AmazonSSMManagedInstanceCore` (builders, testers and the group's instance get it);
//! - a default VPC whose subnets reach the SSM endpoints (a public subnet, NAT, or VPC endpoints).
//!
//! Each backend creates a launch template `kiln-conformance-<pid>-<n>` (the newest Amazon Linux
//! 2023 image, t3.micro, the instance profile) and, for the behaviours that need one
//! ([`Group::Own`]), an auto scaling group of the same name on its `$Default`: min 0, desired =
//! max 1, in the default VPC's default subnets, EC2 health checks and no load balancer (an ALB
//! would cost money and minutes and kiln's release accepts a group without target groups). The
//! group is force-deleted, then the template deleted, when the backend is dropped. Instances
//! kiln launches are tagged `kiln:role=builder`/`tester` with their build id, so whatever a
//! failed test leaves is found by `kiln gc --older-than 0s`.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_autoscaling::types::{LaunchTemplateSpecification, Tag};
use aws_sdk_ec2::types::{Filter, LaunchTemplateIamInstanceProfileSpecificationRequest};
use kiln::aws::sdk::{ConnectOptions, Sdk};
use kiln::aws::Cloud;

use crate::conformance::{newest_al2023, poll, unique, Backend, Group};

/// How often the guard asks again when Auto Scaling refuses a deletion for now
/// (`ResourceContention`, a scaling activity starting), and how many times.
const DELETE_RETRY_INTERVAL: Duration = Duration::from_secs(10);
const DELETE_ATTEMPTS: u32 = 6;

/// Removes what the backend created when dropped: the group (with its instances), then the
/// launch template.
struct Guard {
    sdk: Sdk,
    template: String,
    group: Option<String>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let sdk = self.sdk.clone();
        let template = self.template.clone();
        let group = self.group.clone();
        // Drop cannot await: delete from a thread with its own runtime.
        let failures = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(remove(&sdk, group.as_deref(), &template))
        })
        .join()
        .unwrap_or_else(|_| vec!["the cleanup thread panicked".into()]);
        for failure in failures {
            eprintln!("{failure}: remove it by hand");
        }
    }
}

/// Force-deletes `group` (AWS terminates its instances), then deletes `template`; what failed.
async fn remove(sdk: &Sdk, group: Option<&str>, template: &str) -> Vec<String> {
    let mut failures = Vec::new();
    if let Some(group) = group {
        if let Err(e) = delete_group(sdk, group).await {
            failures.push(format!(
                "could not delete auto scaling group {group} in {}: {e}",
                sdk.region
            ));
        }
    }
    let deleted = sdk
        .ec2
        .delete_launch_template()
        .launch_template_name(template)
        .send()
        .await;
    if let Err(e) = deleted {
        failures.push(format!(
            "could not delete launch template {template} in {}: {e:?}",
            sdk.region
        ));
    }
    failures
}

/// `DeleteAutoScalingGroup` with `ForceDelete` (needed while the group has instances or
/// activities), asked again while Auto Scaling answers that another change is under way.
async fn delete_group(sdk: &Sdk, group: &str) -> Result<(), String> {
    let mut attempt = 1;
    loop {
        let answer = sdk
            .autoscaling
            .delete_auto_scaling_group()
            .auto_scaling_group_name(group)
            .force_delete(true)
            .send()
            .await;
        let Err(e) = answer else { return Ok(()) };
        let code = aws_sdk_autoscaling::error::ProvideErrorMetadata::code(&e)
            .unwrap_or_default()
            .to_owned();
        let transient = matches!(
            code.as_str(),
            "ResourceContention" | "ScalingActivityInProgress"
        );
        if !transient || attempt == DELETE_ATTEMPTS {
            return Err(format!("{code}: {e:?}"));
        }
        attempt += 1;
        tokio::time::sleep(DELETE_RETRY_INTERVAL).await;
    }
}

pub async fn backend(group: Group) -> Backend {
    let sdk = Sdk::connect(&ConnectOptions::default())
        .await
        .expect("AWS credentials and region (KILN_TEST_AWS=1)");
    let profile = std::env::var("KILN_TEST_INSTANCE_PROFILE").expect(
        "KILN_TEST_INSTANCE_PROFILE: an instance profile with AmazonSSMManagedInstanceCore",
    );
    let source = newest_al2023(&sdk).await;
    // Unique per backend: the tests of one run create theirs side by side.
    let name = format!("kiln-conformance-{}-{}", std::process::id(), unique());
    let data = aws_sdk_ec2::types::RequestLaunchTemplateData::builder()
        .image_id(&source.0)
        .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
        .iam_instance_profile(
            LaunchTemplateIamInstanceProfileSpecificationRequest::builder()
                .name(&profile)
                .build(),
        )
        .build();
    sdk.ec2
        .create_launch_template()
        .launch_template_name(&name)
        .launch_template_data(data)
        .send()
        .await
        .expect("CreateLaunchTemplate");
    let mut guard = Guard {
        sdk: sdk.clone(),
        template: name.clone(),
        group: None,
    };
    let own_group = match group {
        Group::None => None,
        Group::Own => create_group(&sdk, &name, &mut guard).await,
    };
    let mut backend = Backend::new(
        Arc::new(sdk),
        source,
        name,
        Some(profile),
        Some(Box::new(guard)),
    );
    backend.group = own_group;
    backend
}

/// Creates auto scaling group `name` on `$Default` of template `name` and waits until its one
/// instance is in service; `None` (after one line saying why) when the account refuses it.
async fn create_group(sdk: &Sdk, name: &str, guard: &mut Guard) -> Option<String> {
    let subnets = match default_subnets(sdk).await {
        Ok(subnets) => subnets,
        Err(why) => {
            eprintln!(
                "no auto scaling group for this backend ({why}): its group behaviours are skipped"
            );
            return None;
        }
    };
    let created = sdk
        .autoscaling
        .create_auto_scaling_group()
        .auto_scaling_group_name(name)
        .launch_template(
            LaunchTemplateSpecification::builder()
                .launch_template_name(name)
                .version("$Default")
                .build(),
        )
        .min_size(0)
        .max_size(1)
        .desired_capacity(1)
        .vpc_zone_identifier(subnets.join(","))
        .health_check_type("EC2")
        .tags(
            Tag::builder()
                .key("kiln:conformance")
                .value(name)
                .propagate_at_launch(true)
                .build(),
        )
        .send()
        .await;
    if let Err(e) = created {
        eprintln!(
            "could not create auto scaling group {name} in {} ({e:?}): its group behaviours are skipped",
            sdk.region
        );
        return None;
    }
    guard.group = Some(name.to_owned());
    // The group may not be visible at once (eventual consistency): poll reads `None` as not yet.
    poll("the group's instance in service", || async {
        let found = sdk.auto_scaling_group(name).await?;
        Ok(found.is_some_and(|g| {
            g.instances.len() == 1
                && g.instances
                    .iter()
                    .all(|i| i.lifecycle_state == "InService" && i.health_status == "Healthy")
        }))
    })
    .await;
    Some(name.to_owned())
}

/// The default subnets of the region's default VPC (`DescribeSubnets`, `default-for-az`).
async fn default_subnets(sdk: &Sdk) -> Result<Vec<String>, String> {
    let answer = sdk
        .ec2
        .describe_subnets()
        .filters(
            Filter::builder()
                .name("default-for-az")
                .values("true")
                .build(),
        )
        .send()
        .await
        .map_err(|e| format!("DescribeSubnets: {e:?}"))?;
    let subnets: Vec<String> = answer
        .subnets()
        .iter()
        .filter_map(|s| s.subnet_id().map(str::to_owned))
        .collect();
    if subnets.is_empty() {
        return Err(format!("no default subnets in {}", sdk.region));
    }
    Ok(subnets)
}
