//! AWS behaviours the release and the build rely on beyond single calls, each modelled in the
//! emulator (which quotes AWS for it) and in the fake: a launch template version not visible
//! yet, a script that asks for a reboot (exit 194), a region without a default VPC, and target
//! groups attached as traffic sources. On a real account the behaviours that need a world kiln
//! cannot make (no default VPC, a load balancer) are skipped with a line that says so.

use std::time::Duration;

use kiln::aws::fake::Fake;
use kiln::aws::{
    CommandStatus, Meaning, NewTemplateVersion, PingStatus, ShellCommand, TemplateRef,
};

use super::{poll, unique, Backend, PATIENCE};
use crate::support::Emulator;

impl Backend {
    fn as_fake(&self) -> Option<&Fake> {
        self._guard
            .as_deref()
            .and_then(|g| g.downcast_ref::<Fake>())
    }

    fn as_emulator(&self) -> Option<&Emulator> {
        self._guard
            .as_deref()
            .and_then(|g| g.downcast_ref::<Emulator>())
    }
}

/// EC2's eventual consistency ("the result of an API command you run that affects your Amazon
/// EC2 resources might not be immediately visible to all subsequent commands you run"): a new
/// launch template version may answer `InvalidLaunchTemplateId.VersionNotFound` for a moment,
/// which is kiln's `NotFound`, never another error, and then becomes the default as asked.
pub async fn a_new_template_version_may_be_unknown_for_a_moment(b: Backend) {
    let lag = Duration::from_secs(3);
    let modelled = if let Some(fake) = b.as_fake() {
        let mut timings = fake.timings();
        timings.version_invisible = lag;
        fake.set_timings(timings);
        true
    } else if let Some(emulator) = b.as_emulator() {
        emulator
            .behaviour(serde_json::json!({"invisible_seconds": {"launch_template_version": 3}}));
        true
    } else {
        false
    };
    let cloud = b.cloud.as_ref();
    let template = cloud
        .launch_template(&TemplateRef::parse(&b.template))
        .await
        .expect("template");
    let version = cloud
        .create_template_version(&NewTemplateVersion {
            template_id: template.id.clone(),
            source_version: template.default_version,
            image_id: b.source_image.clone(),
            description: format!("kiln build {}: conformance visibility", b.run_id),
            client_token: format!("{}-visibility-{}", b.run_id, unique()),
        })
        .await
        .expect("create");
    let first = cloud.set_default_version(&template.id, version).await;
    if modelled {
        assert!(first.is_err(), "the new version was visible at once");
    }
    if let Err(e) = &first {
        assert_eq!(e.meaning(), Some(Meaning::NotFound), "{e}");
    }
    poll("the new version to become the default", || async {
        match cloud.set_default_version(&template.id, version).await {
            Ok(()) => Ok(true),
            Err(e) if e.meaning() == Some(Meaning::NotFound) => Ok(false),
            Err(e) => Err(e),
        }
    })
    .await;
    let listed = cloud
        .template_versions(&template.id)
        .await
        .expect("versions");
    assert!(
        listed.iter().any(|v| v.number == version && v.is_default),
        "{listed:?}"
    );
    cloud
        .set_default_version(&template.id, template.default_version)
        .await
        .expect("restore");
    cloud
        .delete_template_version(&template.id, version)
        .await
        .expect("delete");
}

/// "Handling reboots when running commands" (Systems Manager user guide): a script that exits
/// 194 has the agent reboot the instance and run the script again. The agent is offline
/// meanwhile; the invocation does not end before the rerun does, and ends `Success`.
pub async fn a_script_that_exits_194_runs_again_after_a_reboot(b: Backend) {
    let marker = format!("/var/tmp/kiln-conformance-reboot-{}-{}", b.run_id, unique());
    if let Some(fake) = b.as_fake() {
        fake.reboot_rule(&marker, 1, Duration::from_secs(5));
        b.script_output(&marker, "ran after the reboot\n", "");
    } else if let Some(emulator) = b.as_emulator() {
        emulator.behaviour(serde_json::json!({"commands": [
            {"match": marker, "status": "Success", "stdout": "ran after the reboot\n",
             "in_progress_seconds": 2, "reboots": 1, "reboot_seconds": 5}
        ]}));
    }
    let cloud = b.cloud.as_ref();
    let id = b.online_builder("reboot").await;
    let command_id = cloud
        .send_command(&ShellCommand {
            instance_id: id.clone(),
            script: format!(
                "#!/bin/bash\nif [ -e {marker} ]; then echo ran after the reboot; else touch {marker}; exit 194; fi\n"
            ),
            execution_timeout_secs: 600,
            comment: "kiln conformance reboot".into(),
        })
        .await
        .expect("SendCommand");
    let mut offline = false;
    let started = tokio::time::Instant::now();
    let invocation = loop {
        assert!(started.elapsed() < PATIENCE, "the command never ended");
        if cloud.agent_status(&id).await.expect("agent") != Some(PingStatus::Online) {
            offline = true;
        }
        match cloud
            .invocation(&command_id, &id)
            .await
            .expect("invocation")
        {
            Some(inv) if inv.is_finished() => break inv,
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    };
    assert!(offline, "the agent never went offline for the reboot");
    assert_eq!(invocation.status, CommandStatus::Success, "{invocation:?}");
    assert!(
        invocation.stdout.contains("ran after the reboot"),
        "{invocation:?}"
    );
    b.terminate(&id).await;
}

/// Without a default VPC (an account that deleted it), RunInstances naming no subnet fails
/// with `VPCIdNotSpecified`; naming a subnet of the group's `VPCZoneIdentifier` works (what
/// kiln's tester does when its launch template names none).
pub async fn without_a_default_vpc_a_launch_needs_a_subnet(b: Backend) {
    if let Some(fake) = b.as_fake() {
        fake.without_default_vpc();
    } else if let Some(emulator) = b.as_emulator() {
        emulator.behaviour(serde_json::json!({"default_vpc": false}));
    } else {
        println!("skipped: a real account's default VPC is not this test's to remove");
        return;
    }
    let cloud = b.cloud.as_ref();
    let refused = cloud
        .launch_instance(&b.launch_request("no-vpc"))
        .await
        .expect_err("a launch without a subnet");
    assert!(
        refused.to_string().contains("VPCIdNotSpecified"),
        "{refused}"
    );
    let group = b.group.clone().expect("a group");
    let subnet = cloud
        .auto_scaling_group(&group)
        .await
        .expect("describe")
        .expect("group")
        .subnet_ids
        .remove(0);
    let mut request = b.launch_request("in-subnet");
    request.subnet_id = Some(subnet.clone());
    let id = cloud.launch_instance(&request).await.expect("RunInstances");
    b.terminate(&id).await;
}

/// A group's target groups are its `TargetGroupARNs` and its `elbv2` traffic sources
/// (AttachTrafficSources; DescribeLoadBalancerTargetGroups "not for target groups that were
/// attached by using AttachTrafficSources"); a source of another type is listed apart, as one
/// whose health kiln cannot read.
pub async fn traffic_sources_count_as_the_group_s_target_groups(b: Backend) {
    let group = b.group.clone().expect("a group");
    let lattice = format!(
        "arn:aws:vpc-lattice:{}:123456789012:targetgroup/tg-0123456789abcdef0",
        b.cloud.region()
    );
    let moved = if let Some(fake) = b.as_fake() {
        let arn = fake.target_group_of(&group);
        fake.attach_traffic_source(&group, "vpc-lattice", &lattice);
        arn
    } else if let Some(emulator) = b.as_emulator() {
        // As the test, not as kiln (the IAM check counts only kiln's calls).
        let aws = crate::support::sdk_as(&emulator.url, crate::support::CHECK_ACCESS_KEY).await;
        let out = aws
            .autoscaling
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(&group)
            .send()
            .await
            .expect("DescribeAutoScalingGroups");
        let arn = out.auto_scaling_groups()[0].target_group_arns()[0].clone();
        aws.autoscaling
            .detach_load_balancer_target_groups()
            .auto_scaling_group_name(&group)
            .target_group_arns(&arn)
            .send()
            .await
            .expect("DetachLoadBalancerTargetGroups");
        for (kind, id) in [("elbv2", arn.as_str()), ("vpc-lattice", lattice.as_str())] {
            let source = aws_sdk_autoscaling::types::TrafficSourceIdentifier::builder()
                .identifier(id)
                .r#type(kind)
                .build();
            aws.autoscaling
                .attach_traffic_sources()
                .auto_scaling_group_name(&group)
                .traffic_sources(source)
                .send()
                .await
                .expect("AttachTrafficSources");
        }
        arn
    } else {
        println!("skipped: the real account's test group has no load balancer");
        return;
    };
    let found = b
        .cloud
        .auto_scaling_group(&group)
        .await
        .expect("describe")
        .expect("group");
    assert_eq!(found.target_group_arns, vec![moved], "{found:?}");
    assert_eq!(
        found.other_traffic_sources,
        vec![format!("vpc-lattice {lattice}")],
        "{found:?}"
    );
}
