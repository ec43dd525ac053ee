//! A builder that dies: kiln says why, with the instance's state reason, and cleans up. A builder
//! whose instance profile is missing or holds no role is never launched.

use serde_json::json;

use crate::support::*;

#[test]
fn a_builder_that_fails_to_start_shows_its_state_reason() {
    let emulator = Emulator::seeded();
    emulator.behaviour(json!({"instance_launch_failure": "Client.InternalError"}));
    let aws = emulator.aws();
    let kiln = Kiln::new(&emulator);
    let path = kiln.write("app.yaml", &recipe("  - name: install\n    run: echo hi"));
    let run = kiln.run(&["build", path.to_str().unwrap()]);
    run.assert_code(1);
    assert!(
        run.stderr
            .contains("Client.InternalError: Client error on launch"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("failed to start"), "{}", run.stderr);
    assert!(aws.live_builders().is_empty());
}

/// SSM refuses commands for a while after the agent reports Online, and delivers them late:
/// kiln retries the refusal and counts the step's time from delivery.
#[test]
fn commands_refused_at_first_and_delivered_late_still_run() {
    let emulator = Emulator::seeded();
    emulator.behaviour(json!({
        "ssm_send_ready_after_seconds": 2,
        "commands": [{"match": "echo hi", "pending_seconds": 2, "in_progress_seconds": 1}]
    }));
    let kiln = Kiln::new(&emulator);
    let path = kiln.write("app.yaml", &recipe("  - name: install\n    run: echo hi"));
    let run = kiln.run(&["build", path.to_str().unwrap(), "--no-release"]);
    run.assert_code(0);
    let sends = emulator.kiln_action_count("SendCommand");
    assert!(sends > 1, "never refused: {:?}", emulator.kiln_actions());
}

/// New ids answer NotFound for a while (here every kind, 3 s): kiln waits for the builder and
/// the image, tags the new snapshots once they are visible, and terminates the builder.
#[test]
fn new_ids_not_visible_yet_do_not_fail_the_build() {
    let emulator = Emulator::seeded();
    emulator.behaviour(json!({
        "invisible_seconds": {"instance": 3, "image": 3, "snapshot": 3}
    }));
    let aws = emulator.aws();
    let kiln = Kiln::new(&emulator);
    let path = kiln.write("app.yaml", &recipe("  - name: install\n    run: echo hi"));
    let run = kiln.run(&["build", path.to_str().unwrap(), "--no-release"]);
    run.assert_code(0);
    assert!(aws.live_builders().is_empty());
    let image = &aws.kiln_images()[0];
    let snapshot = &image.snapshots[0];
    let tags = aws.snapshot_tags(snapshot).expect("snapshot");
    assert_eq!(
        tags.get("kiln:recipe").map(String::as_str),
        Some("demo-app")
    );
    let refused = emulator
        .kiln_requests()
        .iter()
        .filter(|r| r["status"] == json!(400))
        .count();
    assert!(refused > 0, "nothing was invisible: the test shows nothing");
}

/// A builder interrupted right after its launch, while its id is not visible yet, is
/// terminated: TerminateInstances' NotFound is not taken as "already gone".
#[test]
fn a_builder_interrupted_before_its_id_is_visible_is_terminated() {
    let emulator = Emulator::seeded();
    emulator.behaviour(json!({
        "invisible_seconds": {"instance": 4},
        "instance_pending_seconds": 30
    }));
    let aws = emulator.aws();
    let kiln = Kiln::new(&emulator);
    let path = kiln.write("app.yaml", &recipe("  - name: install\n    run: echo hi"));
    let child = kiln.spawn(&["build", path.to_str().unwrap()]);
    assert!(eventually(std::time::Duration::from_secs(30), || emulator
        .kiln_actions()
        .iter()
        .any(|a| a == "RunInstances")));
    send_signal(&child, libc::SIGINT);
    let run = finish(child);
    run.assert_code(130);
    assert!(aws.live_builders().is_empty(), "{}", run.stderr);
}

/// What kiln asked of EC2 that creates something.
fn creating_calls(emulator: &Emulator) -> Vec<String> {
    emulator
        .kiln_actions()
        .into_iter()
        .filter(|a| {
            ["RunInstances", "CreateImage", "CreateLaunchTemplateVersion"].contains(&a.as_str())
        })
        .collect()
}

#[test]
fn a_builder_profile_that_is_missing_or_has_no_role_fails_before_any_launch() {
    let emulator = Emulator::seeded();
    let aws = emulator.aws();
    let kiln = Kiln::new(&emulator);
    let missing = recipe("  - name: install\n    run: echo hi").replace(
        "iam_instance_profile: kiln-builder",
        "iam_instance_profile: no-such-profile",
    );
    let path = kiln.write("missing.yaml", &missing);
    let run = kiln.run(&["build", path.to_str().unwrap()]);
    run.assert_code(1);
    for expected in [
        "instance profile `no-such-profile` does not exist",
        "the build runs in us-east-1",
        "aws iam create-instance-profile --instance-profile-name no-such-profile",
        "fix `builder.iam_instance_profile`",
        "wait a few seconds",
    ] {
        assert!(
            run.stderr.contains(expected),
            "{expected} in {}",
            run.stderr
        );
    }
    assert_eq!(emulator.kiln_action_count("GetInstanceProfile"), 1);

    let arn = aws.empty_instance_profile("roleless");
    let roleless = recipe("  - name: install\n    run: echo hi").replace(
        "iam_instance_profile: kiln-builder",
        &format!("iam_instance_profile: \"{arn}\""),
    );
    let path = kiln.write("roleless.yaml", &roleless);
    let run = kiln.run(&["build", path.to_str().unwrap()]);
    run.assert_code(1);
    assert!(
        run.stderr
            .contains(&format!("instance profile `roleless` ({arn}) has no role")),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("aws iam add-role-to-instance-profile --instance-profile-name roleless"),
        "{}",
        run.stderr
    );
    assert_eq!(creating_calls(&emulator), Vec::<String>::new());
    assert!(aws.builders().is_empty());
}

/// A caller whose policy lacks iam:GetInstanceProfile gets one warning, and the build goes on.
#[test]
fn a_caller_denied_the_profile_check_is_warned_and_builds() {
    let emulator = Emulator::seeded();
    emulator.faults(
        json!({"rules": [{"action": "GetInstanceProfile", "fault": "denied", "count": -1}]}),
    );
    let kiln = Kiln::new(&emulator);
    let path = kiln.write("app.yaml", &recipe("  - name: install\n    run: echo hi"));
    let run = kiln.run(&["build", path.to_str().unwrap(), "--no-release"]);
    run.assert_code(0);
    let warning = "could not check instance profile `kiln-builder`: the caller may not call iam:GetInstanceProfile (AccessDenied)";
    assert_eq!(run.stderr.matches(warning).count(), 1, "{}", run.stderr);
    assert_eq!(
        emulator.kiln_action_count("GetInstanceProfile"),
        1,
        "not retried"
    );
    assert_eq!(emulator.kiln_action_count("RunInstances"), 1);
}
