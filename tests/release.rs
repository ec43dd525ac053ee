//! Releasing to the seed's layout (one instance in an auto scaling group behind a target group)
//! through the compiled kiln: the `verified` strategy against `default-then-refresh`, measured by
//! the emulator's record of healthy targets; broken images, interrupts and rollbacks.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::*;

const GROUP: &str = "rudder-dataplane";
/// How long a new target stays `initial` before the emulator calls it healthy.
const HEALTHY_AFTER: f64 = 1.0;

/// The test recipe released to the seed's group with `release_extra`; a var makes each build
/// a new image.
fn group_recipe(kiln: &Kiln, release_extra: &str) -> String {
    let text = recipe("  - name: install\n    run: echo install {{ vars.flavour }}")
        .replace("steps:\n", "vars: { flavour: vanilla }\nsteps:\n")
        .replace(
            "  tags: { app: demo }\n",
            "  name: \"{{ name }}-{{ version }}-{{ build_id }}\"\n  tags: { app: demo }\n",
        )
        .replace(
            "  keep: 2\n",
            &format!("  keep: 2\n  auto_scaling_group: {GROUP}\n{release_extra}"),
        );
    kiln.write("app.yaml", &text).to_str().unwrap().to_owned()
}

fn slow_health(emulator: &Emulator, extra: Value) {
    let mut health = json!({"healthy_after_seconds": HEALTHY_AFTER});
    if let (Some(health), Some(extra)) = (health.as_object_mut(), extra.as_object()) {
        health.extend(extra.clone());
    }
    emulator.behaviour(json!({ "target_health": health }));
}

/// The one target group's record: (seconds without a healthy target, most healthy at once,
/// when it first had two healthy targets).
fn health_record(emulator: &Emulator) -> (f64, i64, Option<f64>) {
    let record = emulator.target_health();
    let (_, group) = record
        .as_object()
        .and_then(|m| m.iter().next())
        .unwrap_or_else(|| panic!("no target group in the record: {record}"));
    let samples = group["samples"].as_array().expect("samples");
    let most = samples
        .iter()
        .filter_map(|s| s[1].as_i64())
        .max()
        .unwrap_or(0);
    let both = samples
        .iter()
        .find(|s| s[1].as_i64() == Some(2))
        .and_then(|s| s[0].as_f64());
    (
        group["seconds_without_healthy"].as_f64().unwrap(),
        most,
        both,
    )
}

/// Two builds of `recipe`, each released (two versions of the template use kiln's images).
fn two_releases(kiln: &Kiln, recipe: &str) {
    kiln.run(&["build", recipe]).assert_code(0);
    kiln.run(&["build", recipe, "--var", "flavour=second"])
        .assert_code(0);
}

/// Runs kiln with `args`, sends SIGINT once the group has a second instance (its refresh under
/// way), and checks that kiln stopped with 130 after rolling the refresh back.
fn interrupt_during_the_refresh(aws: &Aws, kiln: &Kiln, args: &[&str]) {
    let child = kiln.spawn(args);
    assert!(eventually(Duration::from_secs(30), || {
        aws.group(GROUP).1.len() == 2
    }));
    send_signal(&child, libc::SIGINT);
    let run = finish(child);
    run.assert_code(130);
    assert!(
        run.stderr.contains("rolled back instance refresh"),
        "{}",
        run.stderr
    );
}

/// A seeded emulator with slow target health, and the group recipe built and released twice.
fn released_twice_with_slow_health() -> (Emulator, Kiln, String) {
    let emulator = Emulator::seeded();
    slow_health(&emulator, json!({}));
    let kiln = Kiln::new(&emulator);
    let recipe = group_recipe(&kiln, "");
    two_releases(&kiln, &recipe);
    (emulator, kiln, recipe)
}

#[test]
fn a_verified_release_never_leaves_the_group_without_a_healthy_target() {
    let emulator = Emulator::seeded();
    slow_health(&emulator, json!({}));
    let aws = emulator.aws();
    let (_, before) = aws.group(GROUP);
    let kiln = Kiln::new(&emulator);
    let recipe = group_recipe(&kiln, "");
    emulator.clear_target_health();
    let run = kiln.run(&["build", &recipe, "--json"]);
    run.assert_code(0);
    let manifest = run.json();
    let version = manifest["launch_template"]["default_version"]
        .as_i64()
        .unwrap();
    assert_eq!(
        manifest["launch_template"]["created_version"],
        json!(version)
    );
    assert_eq!(manifest["instance_refresh"]["status"], json!("Successful"));

    let (gap, most, both_healthy) = health_record(&emulator);
    assert_eq!(gap, 0.0, "seconds without a healthy target");
    assert_eq!(most, 2, "the new instance was healthy beside the old one");
    // The default moved only after the new instance was healthy.
    let set_default = emulator.first_kiln_request("ModifyLaunchTemplate").unwrap();
    assert!(
        set_default > both_healthy.unwrap(),
        "default moved before the new target was healthy"
    );
    // The old instance is gone; the group runs the new version.
    let (setting, after) = aws.group(GROUP);
    assert_eq!(after.len(), 1);
    assert_ne!(after[0].0, before[0].0);
    assert_eq!(after[0].1, version.to_string());
    // AWS cannot roll back a refresh of a group on $Default: kiln pinned the group to the
    // default's number for the release and set it back to $Default afterwards, which now names
    // the new version.
    assert_eq!(setting, "$Default", "the group's own setting is restored");
    assert_eq!(aws.template_versions(GROUP).0, version);
    // Pinned and set back; MaxSize raised to 2 and set back.
    assert_eq!(emulator.kiln_action_count("UpdateAutoScalingGroup"), 4);
    assert!(eventually(Duration::from_secs(5), || {
        aws.instance_state(&before[0].0) == "terminated"
    }));
}

#[test]
fn the_old_strategy_leaves_the_group_without_a_healthy_target_for_a_while() {
    let emulator = Emulator::seeded();
    slow_health(&emulator, json!({}));
    let kiln = Kiln::new(&emulator);
    let recipe = group_recipe(
        &kiln,
        "  strategy: default-then-refresh\n  refresh: { min_healthy_percentage: 0 }\n",
    );
    emulator.clear_target_health();
    kiln.run(&["build", &recipe]).assert_code(0);
    let (gap, most, _) = health_record(&emulator);
    assert!(gap >= HEALTHY_AFTER * 0.8, "gap of {gap} s");
    assert_eq!(most, 1);
}

#[test]
fn a_broken_image_is_rolled_back_and_the_default_stays() {
    let emulator = Emulator::seeded();
    // Every image kiln builds answers 503 on /health.
    slow_health(
        &emulator,
        json!({"unhealthy": [{"image_tagged": "kiln:build-id", "reason": "Target.ResponseCodeMismatch",
                               "description": "Health checks failed with these codes: [503]"}]}),
    );
    let aws = emulator.aws();
    let before = aws.template_versions("rudder-dataplane");
    let (_, instances) = aws.group(GROUP);
    let kiln = Kiln::new(&emulator);
    let recipe = group_recipe(&kiln, "");
    emulator.clear_target_health();
    let run = kiln.run(&["build", &recipe]);
    run.assert_code(1);
    for needle in [
        "RollbackSuccessful",
        "Target.ResponseCodeMismatch",
        "Health checks failed with these codes: [503]",
        "the default stays version 1",
    ] {
        assert!(
            run.stderr.contains(needle),
            "{needle:?} not in:\n{}",
            run.stderr
        );
    }
    assert_eq!(aws.template_versions("rudder-dataplane"), before);
    let (setting, after) = aws.group(GROUP);
    assert_eq!(after, instances, "the group is back on its old instance");
    assert_eq!(setting, "$Default");
    assert_eq!(health_record(&emulator).0, 0.0);
    assert_eq!(aws.kiln_images().len(), 1, "the image is kept");
}

#[test]
fn an_interrupt_during_the_refresh_rolls_it_back() {
    let emulator = Emulator::seeded();
    emulator.behaviour(json!({"target_health": {"healthy_after_seconds": 60}}));
    let aws = emulator.aws();
    let before = aws.template_versions("rudder-dataplane");
    let (_, instances) = aws.group(GROUP);
    let kiln = Kiln::new(&emulator);
    let recipe = group_recipe(&kiln, "");
    interrupt_during_the_refresh(&aws, &kiln, &["build", &recipe]);
    assert!(emulator
        .kiln_actions()
        .iter()
        .any(|a| a == "RollbackInstanceRefresh"));
    assert_eq!(aws.template_versions("rudder-dataplane"), before);
    let (setting, after) = aws.group(GROUP);
    assert_eq!(after, instances);
    // The teardown set back what the release changed on the group: its setting and MaxSize.
    assert_eq!(setting, "$Default");
    assert_eq!(max_size(&aws), 1);
}

#[test]
fn rollback_releases_the_older_image_through_the_verified_strategy() {
    let (emulator, kiln, recipe) = released_twice_with_slow_health();
    let aws = emulator.aws();
    let (default, _) = aws.template_versions("rudder-dataplane");
    emulator.clear_target_health();
    emulator.clear_requests();
    let run = kiln.run(&["rollback", &recipe, "--json"]);
    run.assert_code(0);
    let outcome = run.json();
    let target = outcome["after"]["version"].as_i64().unwrap();
    assert!(target < default, "{outcome}");
    assert_eq!(outcome["instance_refresh"]["status"], json!("Successful"));
    assert_eq!(aws.template_versions("rudder-dataplane").0, target);
    let (_, instances) = aws.group(GROUP);
    assert_eq!(instances.len(), 1);
    assert_eq!(instances[0].1, target.to_string());
    assert_eq!(health_record(&emulator).0, 0.0);
    // The refresh went first, the default after it.
    let refresh = emulator.first_kiln_request("StartInstanceRefresh").unwrap();
    let moved = emulator.first_kiln_request("ModifyLaunchTemplate").unwrap();
    assert!(refresh < moved);
}

#[test]
fn a_group_pinned_to_a_version_is_refused_for_the_old_strategy() {
    let emulator = Emulator::seeded();
    let aws = emulator.aws();
    aws.block_on(
        aws.autoscaling
            .update_auto_scaling_group()
            .auto_scaling_group_name(GROUP)
            .launch_template(
                aws_sdk_autoscaling::types::LaunchTemplateSpecification::builder()
                    .launch_template_name("rudder-dataplane")
                    .version("1")
                    .build(),
            )
            .send(),
    )
    .expect("pin the group");
    let kiln = Kiln::new(&emulator);
    let recipe = group_recipe(&kiln, "  strategy: default-then-refresh\n");
    let run = kiln.run(&["build", &recipe]);
    run.assert_code(1);
    assert!(run.stderr.contains("pins version 1"), "{}", run.stderr);
    assert!(!emulator.kiln_actions().iter().any(|a| a == "RunInstances"));
}

#[test]
fn a_rollback_holds_until_kiln_release() {
    let emulator = Emulator::seeded();
    let aws = emulator.aws();
    let kiln = Kiln::new(&emulator);
    let recipe = group_recipe(&kiln, "");
    two_releases(&kiln, &recipe);
    let rolled = kiln.run(&["rollback", &recipe, "--json"]);
    rolled.assert_code(0);
    let rolled = rolled.json();
    let held_version = rolled["after"]["version"].as_i64().unwrap();
    let held_image = rolled["after"]["image_id"].as_str().unwrap().to_owned();
    assert_eq!(rolled["hold"]["version"], json!(held_version));

    // The nightly's unchanged build skips and does not release; a changed one builds, and does
    // not release either. Both exit 0, say so, and record the hold.
    for flavour in ["second", "third"] {
        let run = kiln.run(&[
            "build",
            &recipe,
            "--json",
            "--var",
            &format!("flavour={flavour}"),
        ]);
        run.assert_code(0);
        assert!(run.stderr.contains("RELEASE HELD"), "{}", run.stderr);
        let manifest = run.json();
        assert_eq!(manifest["release"], json!("held"), "{manifest}");
        assert_eq!(manifest["hold"]["image_id"], json!(held_image));
        assert_eq!(manifest["launch_template"], Value::Null);
        assert_eq!(aws.template_versions("rudder-dataplane").0, held_version);
    }
    let history = kiln.run(&["history", &recipe]);
    history.assert_code(0);
    assert!(
        history
            .stdout
            .contains(&format!("HELD at version {held_version} ({held_image})")),
        "{}",
        history.stdout
    );

    // `kiln release` releases the newest image, through the refresh, and clears the hold.
    let newest = aws
        .kiln_images()
        .into_iter()
        .max_by(|a, b| a.name.cmp(&b.name))
        .unwrap();
    let run = kiln.run(&["release", &recipe, "--json"]);
    run.assert_code(0);
    let released = run.json();
    assert_eq!(released["image_id"], json!(newest.id), "{released}");
    assert_eq!(released["instance_refresh"]["status"], json!("Successful"));
    assert_eq!(released["cleared_hold"]["version"], json!(held_version));
    let (default, _) = aws.template_versions("rudder-dataplane");
    assert_eq!(aws.template_image("rudder-dataplane", default), newest.id);
    let (_, instances) = aws.group(GROUP);
    assert_eq!(instances[0].1, default.to_string());
    // Released again: the next build releases as usual.
    let next = kiln.run(&["build", &recipe, "--json", "--var", "flavour=fourth"]);
    next.assert_code(0);
    assert_eq!(next.json()["release"], json!("released"));
}

#[test]
fn rollback_to_a_version_kiln_did_not_build_needs_allow_foreign() {
    let emulator = Emulator::seeded();
    let kiln = Kiln::new(&emulator);
    let recipe = group_recipe(&kiln, "");
    kiln.run(&["build", &recipe, "--no-refresh"]).assert_code(0);
    // Version 1 is the seed's: an Amazon Linux image kiln did not build.
    let run = kiln.run(&["rollback", &recipe, "--to", "1", "--no-refresh"]);
    run.assert_code(1);
    assert!(
        run.stderr.contains("pass --allow-foreign"),
        "{}",
        run.stderr
    );
    kiln.run(&[
        "rollback",
        &recipe,
        "--to",
        "1",
        "--no-refresh",
        "--allow-foreign",
    ])
    .assert_code(0);
}

#[test]
fn a_failed_test_phase_releases_nothing_and_keeps_the_image() {
    let emulator = Emulator::seeded();
    // The same check passes on the builder and fails on the fresh tester.
    emulator.behaviour(json!({"commands": [
        {"match": "systemctl is-active rudder-server", "role": "tester", "status": "Failed",
         "stdout": "activating", "exit_code": 3}
    ]}));
    let aws = emulator.aws();
    let before = aws.template_versions("rudder-dataplane");
    let (_, instances) = aws.group(GROUP);
    let kiln = Kiln::new(&emulator);
    let text = std::fs::read_to_string(group_recipe(&kiln, ""))
        .unwrap()
        .replace(
        "steps:\n",
        "steps:\n  - name: on the builder\n    run: systemctl is-active rudder-server || true\n",
    )
        + "test:\n  - name: rudder-server runs\n    run: systemctl is-active rudder-server\n";
    let recipe = kiln.write("tested.yaml", &text);
    let run = kiln.run(&["build", recipe.to_str().unwrap()]);
    run.assert_code(1);
    assert!(run.stderr.contains("rudder-server runs"), "{}", run.stderr);
    assert!(run.stderr.contains("kiln:test=failed"), "{}", run.stderr);
    let images = aws.kiln_images();
    assert_eq!(images.len(), 1, "the image is kept");
    assert_eq!(
        images[0].tags.get("kiln:test").map(String::as_str),
        Some("failed")
    );
    assert_eq!(aws.template_versions("rudder-dataplane"), before);
    assert_eq!(aws.group(GROUP).1, instances);
    // The tester ran the image, from the launch template, and is gone.
    let testers = testers(&aws);
    assert_eq!(testers.len(), 1);
    assert_eq!(testers[0].image_id(), Some(images[0].id.as_str()));
    let state = testers[0]
        .state()
        .and_then(|s| s.name())
        .map(|n| n.as_str().to_owned());
    assert!(
        matches!(state.as_deref(), Some("terminated" | "shutting-down")),
        "{state:?}"
    );
}

/// The seed group's `MaxSize`.
fn max_size(aws: &Aws) -> i32 {
    let out = aws
        .block_on(
            aws.autoscaling
                .describe_auto_scaling_groups()
                .auto_scaling_group_names(GROUP)
                .send(),
        )
        .expect("DescribeAutoScalingGroups");
    out.auto_scaling_groups()[0].max_size().expect("MaxSize")
}

/// The instances tagged `kiln:role=tester`, any state.
fn testers(aws: &Aws) -> Vec<aws_sdk_ec2::types::Instance> {
    let out = aws
        .block_on(
            aws.ec2
                .describe_instances()
                .filters(
                    aws_sdk_ec2::types::Filter::builder()
                        .name("tag:kiln:role")
                        .values("tester")
                        .build(),
                )
                .send(),
        )
        .expect("DescribeInstances");
    out.reservations()
        .iter()
        .flat_map(|r| r.instances())
        .cloned()
        .collect()
}

#[test]
fn an_interrupted_rollback_rolls_its_refresh_back_and_keeps_the_default() {
    let (emulator, kiln, recipe) = released_twice_with_slow_health();
    let aws = emulator.aws();
    let before = aws.template_versions("rudder-dataplane");
    let (_, instances) = aws.group(GROUP);
    emulator.behaviour(json!({"target_health": {"healthy_after_seconds": 60}}));
    interrupt_during_the_refresh(&aws, &kiln, &["rollback", &recipe]);
    assert_eq!(aws.template_versions("rudder-dataplane"), before);
    assert_eq!(aws.group(GROUP).1, instances);
}

/// `rollback --image` makes a new version for the image; interrupted during its verified
/// refresh, it removes that version too (it never became the default).
#[test]
fn an_interrupted_rollback_to_an_image_removes_the_version_it_made() {
    let (emulator, kiln, recipe) = released_twice_with_slow_health();
    let aws = emulator.aws();
    let before = aws.template_versions("rudder-dataplane");
    let (_, instances) = aws.group(GROUP);
    let mut images = aws.kiln_images();
    images.sort_by(|a, b| a.name.cmp(&b.name));
    let first = images[0].id.clone();
    emulator.behaviour(json!({"target_health": {"healthy_after_seconds": 60}}));
    interrupt_during_the_refresh(&aws, &kiln, &["rollback", &recipe, "--image", &first]);
    assert_eq!(aws.template_versions("rudder-dataplane"), before);
    assert_eq!(aws.group(GROUP).1, instances);
}

// --- The release rules (one release path): each test fails when its rule is broken. ---

/// The newest kiln image (by name: the test recipe names images by build id, which sorts by
/// time).
fn newest_image(aws: &Aws) -> String {
    aws.kiln_images()
        .into_iter()
        .max_by(|a, b| a.name.cmp(&b.name))
        .expect("a kiln image")
        .id
}

#[test]
fn a_failed_kiln_release_removes_its_version_and_the_next_rollback_never_moves_forward() {
    let emulator = Emulator::seeded();
    let aws = emulator.aws();
    let kiln = Kiln::new(&emulator);
    let recipe = group_recipe(&kiln, "");
    two_releases(&kiln, &recipe);
    let b = newest_image(&aws);
    let rolled = kiln.run(&["rollback", &recipe, "--json"]);
    rolled.assert_code(0);
    let held_at = aws.template_versions(GROUP);
    // Image B now fails its health check: releasing it again fails and AWS rolls back.
    emulator.behaviour(json!({"target_health": {"unhealthy": [
        {"image_id": b, "reason": "Target.ResponseCodeMismatch", "description": "Health checks failed with these codes: [503]"}
    ]}}));
    let run = kiln.run(&["release", &recipe]);
    run.assert_code(1);
    assert!(run.stderr.contains("RollbackSuccessful"), "{}", run.stderr);
    assert!(
        run.stderr.contains("removed launch template"),
        "{}",
        run.stderr
    );
    assert_eq!(
        aws.template_versions(GROUP),
        held_at,
        "no version left behind by the failed release"
    );
    // The rollback goes further back (there is nothing kiln released before A), never forward
    // onto B, which the user rolled back from.
    let again = kiln.run(&["rollback", &recipe]);
    again.assert_code(1);
    assert!(
        again.stderr.contains("no earlier release"),
        "{}",
        again.stderr
    );
    assert_eq!(aws.template_versions(GROUP), held_at);
    assert_ne!(aws.template_image(GROUP, held_at.0), b);
}

#[test]
fn prune_never_deletes_a_version_the_group_s_instance_runs() {
    let emulator = Emulator::seeded();
    let aws = emulator.aws();
    let kiln = Kiln::new(&emulator);
    let recipe = group_recipe(&kiln, "");
    kiln.run(&["build", &recipe]).assert_code(0);
    let (running, _) = aws.template_versions(GROUP);
    // Two more releases without a refresh: the group's instance still runs `running`.
    for flavour in ["second", "third"] {
        let var = format!("flavour={flavour}");
        kiln.run(&["build", &recipe, "--var", &var, "--no-refresh"])
            .assert_code(0);
    }
    let (default, latest) = aws.template_versions(GROUP);
    assert_eq!((default, latest), (running + 2, running + 2));
    assert_eq!(aws.group(GROUP).1[0].1, running.to_string());
    let run = kiln.run(&["prune", &recipe, "--keep", "1", "--json"]);
    run.assert_code(0);
    let pruned: Vec<i64> = run.json()["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_i64().unwrap())
        .collect();
    assert_eq!(pruned, [running + 1], "only the version nothing uses");
    let out = aws
        .block_on(
            aws.ec2
                .describe_launch_template_versions()
                .launch_template_name(GROUP)
                .versions(running.to_string())
                .send(),
        )
        .expect("the version the group's instance runs still exists");
    assert_eq!(out.launch_template_versions().len(), 1);
}

#[test]
fn interrupted_after_the_refresh_succeeded_kiln_keeps_the_version_the_group_now_runs() {
    let emulator = Emulator::seeded();
    // AWS reports success before the load balancer registers the new target.
    emulator.behaviour(json!({
        "refresh": {"success_before_healthy": true},
        "target_health": {"register_after_seconds": 120}
    }));
    let aws = emulator.aws();
    let kiln = Kiln::new(&emulator);
    let recipe = group_recipe(&kiln, "");
    let before = aws.template_versions(GROUP);
    let child = kiln.spawn(&["build", &recipe]);
    // The refresh succeeded: AWS moved the group onto the new version.
    assert!(eventually(Duration::from_secs(60), || {
        aws.group(GROUP).0 == (before.1 + 1).to_string()
    }));
    std::thread::sleep(Duration::from_secs(2));
    send_signal(&child, libc::SIGINT);
    let run = finish(child);
    run.assert_code(130);
    let new = before.1 + 1;
    let (default, latest) = aws.template_versions(GROUP);
    assert_eq!(default, before.0, "the default never moved: {}", run.stderr);
    assert_eq!(
        latest, new,
        "the version the group runs stays: {}",
        run.stderr
    );
    assert_eq!(aws.group(GROUP).0, new.to_string());
    assert!(
        run.stderr.contains("had already ended") && run.stderr.contains("spared"),
        "{}",
        run.stderr
    );
}

#[test]
fn the_default_waits_for_a_healthy_target_even_when_the_refresh_reports_success() {
    let emulator = Emulator::seeded();
    emulator.behaviour(json!({
        "refresh": {"success_before_healthy": true},
        "target_health": {"register_after_seconds": 3, "healthy_after_seconds": 1}
    }));
    let aws = emulator.aws();
    let kiln = Kiln::new(&emulator);
    let recipe = group_recipe(&kiln, "");
    emulator.clear_target_health();
    let path = kiln.path("manifest.json");
    let run = kiln.run(&["build", &recipe, "--manifest", path.to_str().unwrap()]);
    run.assert_code(0);
    let manifest: Value = serde_json::from_str(&read(&path)).unwrap();
    let version = manifest["launch_template"]["default_version"]
        .as_i64()
        .unwrap();
    // kiln saw the refresh succeed, kept following the new target until it was healthy, and
    // only then moved the default.
    let healthy = run.stderr.find("→ healthy").unwrap_or(usize::MAX);
    let moved = run
        .stderr
        .find("is the default: the group is healthy on it");
    assert!(
        moved.is_some_and(|moved| healthy < moved),
        "the default moved before kiln saw the new target healthy:\n{}",
        run.stderr
    );
    let record = emulator.target_health();
    let (_, group) = record.as_object().unwrap().iter().next().unwrap();
    let samples = group["samples"].as_array().unwrap();
    // The last time no target was healthy (the new one not registered yet) came before the
    // default moved.
    let last_unhealthy = samples
        .iter()
        .filter(|s| s[1].as_i64() == Some(0))
        .filter_map(|s| s[0].as_f64())
        .fold(0.0, f64::max);
    let set_default = emulator.first_kiln_request("ModifyLaunchTemplate").unwrap();
    assert!(
        set_default > last_unhealthy,
        "the default moved at {set_default}, before the target was healthy ({last_unhealthy})"
    );
    assert_eq!(aws.template_versions(GROUP).0, version);
}

#[test]
fn a_new_version_keeps_the_current_default_s_other_settings() {
    let emulator = Emulator::seeded();
    let aws = emulator.aws();
    let kiln = Kiln::new(&emulator);
    let recipe = group_recipe(&kiln, "");
    // By hand: a newer default with another instance type and user data.
    let data = aws_sdk_ec2::types::RequestLaunchTemplateData::builder()
        .instance_type(aws_sdk_ec2::types::InstanceType::T3Small)
        .user_data("IyEvYmluL3NoCmVjaG8gaGFuZC1tYWRlCg==")
        .build();
    aws.new_default_version(GROUP, data);
    let run = kiln.run(&["build", &recipe, "--json"]);
    run.assert_code(0);
    let manifest = run.json();
    let version = manifest["launch_template"]["default_version"]
        .as_i64()
        .unwrap();
    let data = aws.template_data(GROUP, version);
    assert_eq!(data.image_id(), manifest["images"][0]["image_id"].as_str());
    assert_eq!(
        data.instance_type(),
        Some(&aws_sdk_ec2::types::InstanceType::T3Small)
    );
    assert_eq!(
        data.user_data(),
        Some("IyEvYmluL3NoCmVjaG8gaGFuZC1tYWRlCg==")
    );
}

/// Deregisters an image through the SDK (as someone cleaning up by hand would).
fn deregister(aws: &Aws, image: &str) {
    aws.block_on(aws.ec2.deregister_image().image_id(image).send())
        .expect("DeregisterImage");
}

#[test]
fn rollback_to_a_version_whose_image_is_gone_fails_and_changes_nothing() {
    let emulator = Emulator::seeded();
    let aws = emulator.aws();
    let kiln = Kiln::new(&emulator);
    let recipe = group_recipe(&kiln, "");
    kiln.run(&["build", &recipe, "--no-refresh"]).assert_code(0);
    let (first, _) = aws.template_versions(GROUP);
    let gone = aws.template_image(GROUP, first);
    kiln.run(&["build", &recipe, "--no-refresh", "--var", "flavour=second"])
        .assert_code(0);
    let before = aws.template_versions(GROUP);
    deregister(&aws, &gone);
    let run = kiln.run(&["rollback", &recipe, "--to", &first.to_string()]);
    run.assert_code(1);
    assert!(
        run.stderr
            .contains(&format!("points at {gone}, which is deregistered")),
        "{}",
        run.stderr
    );
    assert_eq!(aws.template_versions(GROUP), before);
    assert!(aws.template_image(GROUP, before.0) != gone);
}

#[test]
fn rollback_passes_over_a_release_whose_image_is_gone() {
    let emulator = Emulator::seeded();
    let aws = emulator.aws();
    let kiln = Kiln::new(&emulator);
    let recipe = group_recipe(&kiln, "");
    let mut images = Vec::new();
    for flavour in ["first", "second", "third"] {
        let var = format!("flavour={flavour}");
        kiln.run(&["build", &recipe, "--no-refresh", "--var", &var])
            .assert_code(0);
        images.push(aws.template_image(GROUP, aws.template_versions(GROUP).0));
    }
    deregister(&aws, &images[1]);
    let run = kiln.run(&["rollback", &recipe, "--no-refresh", "--json"]);
    run.assert_code(0);
    assert_eq!(run.json()["after"]["image_id"], json!(images[0]));
    assert_eq!(
        aws.template_image(GROUP, aws.template_versions(GROUP).0),
        images[0]
    );
}

#[test]
fn a_changed_source_image_rebuilds_and_says_so() {
    let emulator = Emulator::seeded();
    let aws = emulator.aws();
    let kiln = Kiln::new(&emulator);
    // A source of this account's own: an image of the seed group's instance.
    let (_, instances) = aws.group(GROUP);
    let source = |name: &str| {
        let made = aws
            .block_on(
                aws.ec2
                    .create_image()
                    .instance_id(&instances[0].0)
                    .name(name)
                    .send(),
            )
            .expect("CreateImage");
        made.image_id().unwrap().to_owned()
    };
    let first = source("app-source-1");
    let text = std::fs::read_to_string(group_recipe(&kiln, ""))
        .unwrap()
        .replace(
            "  filter: { name: \"al2023-ami-2023.*-x86_64\", owners: [\"amazon\"], architecture: x86_64 }",
            "  filter: { name: \"app-source-*\", owners: [\"self\"] }",
        );
    let recipe = kiln.write("sourced.yaml", &text);
    let recipe = recipe.to_str().unwrap();
    let built = kiln.run(&["build", recipe, "--no-refresh", "--json"]);
    built.assert_code(0);
    assert_eq!(built.json()["source_image"], json!(first));
    let skipped = kiln.run(&["build", recipe, "--no-refresh", "--json"]);
    skipped.assert_code(0);
    assert_eq!(skipped.json()["skipped"], json!(true));
    std::thread::sleep(Duration::from_millis(1100));
    let second = source("app-source-2");
    let path = kiln.path("rebuilt.json");
    let rebuilt = kiln.run(&[
        "build",
        recipe,
        "--no-refresh",
        "--manifest",
        path.to_str().unwrap(),
    ]);
    rebuilt.assert_code(0);
    let manifest: Value = serde_json::from_str(&read(&path)).unwrap();
    assert_eq!(manifest["skipped"], json!(false));
    assert_eq!(manifest["source_image"], json!(second));
    assert!(
        rebuilt
            .stderr
            .contains(&format!("the source image: {first} → {second}")),
        "{}",
        rebuilt.stderr
    );
}

#[test]
fn a_held_build_exits_3_with_require_release_and_the_examples_tell_the_two_apart() {
    let emulator = Emulator::seeded();
    let kiln = Kiln::new(&emulator);
    let recipe = group_recipe(&kiln, "");
    two_releases(&kiln, &recipe);
    kiln.run(&["rollback", &recipe]).assert_code(0);
    let nightly = kiln.run(&["build", &recipe, "--json", "--var", "flavour=n"]);
    nightly.assert_code(0);
    assert_eq!(nightly.json()["release"], json!("held"));
    let tagged = kiln.run(&[
        "build",
        &recipe,
        "--json",
        "--require-release",
        "--var",
        "flavour=t",
    ]);
    tagged.assert_code(3);
    assert_eq!(tagged.json()["release"], json!("held"));
    assert!(
        tagged.stderr.contains("--require-release") && tagged.stderr.contains("kiln release"),
        "{}",
        tagged.stderr
    );
    kiln.run(&["release", &recipe]).assert_code(0);
    let released = kiln.run(&["build", &recipe, "--json", "--require-release"]);
    released.assert_code(0);
    assert_eq!(released.json()["release"], json!("released"));
}

#[test]
fn release_and_rollback_never_choose_an_image_that_failed_its_test() {
    let emulator = Emulator::seeded();
    let aws = emulator.aws();
    let kiln = Kiln::new(&emulator);
    let text = std::fs::read_to_string(group_recipe(&kiln, "")).unwrap()
        + "test:\n  - name: serves\n    run: echo serves {{ vars.flavour }}\n";
    let recipe = kiln.write("tested.yaml", &text);
    let recipe = recipe.to_str().unwrap();
    kiln.run(&["build", recipe]).assert_code(0);
    let good = newest_image(&aws);
    emulator.behaviour(json!({"commands": [
        {"match": "echo serves broken", "role": "tester", "status": "Failed", "exit_code": 1}
    ]}));
    kiln.run(&["build", recipe, "--var", "flavour=broken"])
        .assert_code(1);
    let failed = newest_image(&aws);
    assert_ne!(failed, good);
    let before = aws.template_versions(GROUP);
    // The hint kiln printed would have released the failed image: it releases the good one,
    // which the default already uses.
    let run = kiln.run(&["release", recipe, "--json"]);
    run.assert_code(0);
    assert_eq!(run.json()["image_id"], json!(good));
    assert_eq!(aws.template_versions(GROUP), before);
    let refused = kiln.run(&["release", recipe, "--image", &failed]);
    refused.assert_code(1);
    assert!(
        refused.stderr.contains("--allow-failed-test"),
        "{}",
        refused.stderr
    );
    let refused = kiln.run(&["rollback", recipe, "--image", &failed]);
    refused.assert_code(1);
    assert_eq!(aws.template_versions(GROUP), before);
    kiln.run(&[
        "release",
        recipe,
        "--image",
        &failed,
        "--allow-failed-test",
        "--no-refresh",
    ])
    .assert_code(0);
    assert_eq!(
        aws.template_image(GROUP, aws.template_versions(GROUP).0),
        failed
    );
}

#[test]
fn two_projects_with_the_same_recipe_name_never_touch_each_other_s_images() {
    let emulator = Emulator::seeded();
    let aws = emulator.aws();
    let kiln = Kiln::new(&emulator);
    // A second project: its own launch template, the same recipe name and steps.
    let seed_image = aws.template_image(GROUP, 1);
    let data = aws_sdk_ec2::types::RequestLaunchTemplateData::builder()
        .image_id(&seed_image)
        .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
        .build();
    aws.block_on(
        aws.ec2
            .create_launch_template()
            .launch_template_name("other-project")
            .launch_template_data(data)
            .send(),
    )
    .expect("CreateLaunchTemplate");
    let ours = recipe("  - name: install\n    run: echo same");
    let theirs = ours.replace(
        "launch_template: rudder-dataplane",
        "launch_template: other-project",
    );
    let ours = kiln.write("ours.yaml", &ours);
    let theirs = kiln.write("theirs.yaml", &theirs);
    let (ours, theirs) = (ours.to_str().unwrap(), theirs.to_str().unwrap());
    let a = kiln.run(&["build", ours, "--json"]);
    a.assert_code(0);
    let a_image = a.json()["images"][0]["image_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Same content, same fingerprint: the other project still builds its own image.
    let b = kiln.run(&["build", theirs, "--json"]);
    b.assert_code(0);
    let b = b.json();
    assert_eq!(b["skipped"], json!(false), "{b}");
    assert_eq!(b["fingerprint"], a.json()["fingerprint"]);
    let b_image = b["images"][0]["image_id"].as_str().unwrap().to_owned();
    assert_ne!(b_image, a_image);
    // A newer build of theirs; prune of theirs keeping one lists only theirs.
    kiln.run(&["build", theirs, "--force"]).assert_code(0);
    let run = kiln.run(&["prune", theirs, "--dry-run", "--keep", "1", "--json"]);
    run.assert_code(0);
    let report = run.json();
    let listed: Vec<&str> = report["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .chain(report["kept"].as_array().unwrap())
        .map(|i| i["image_id"].as_str().unwrap())
        .collect();
    assert!(!listed.contains(&a_image.as_str()), "{report}");
    assert!(listed.contains(&b_image.as_str()), "{report}");
}

#[test]
fn status_shows_the_release_and_follows_a_refresh_to_its_end() {
    let emulator = Emulator::seeded();
    let aws = emulator.aws();
    let kiln = Kiln::new(&emulator);
    let recipe = group_recipe(&kiln, "");
    kiln.run(&["build", &recipe]).assert_code(0);
    let status = kiln.run(&["status", &recipe, "--json"]);
    status.assert_code(0);
    let status = status.json();
    let (default, _) = aws.template_versions(GROUP);
    assert_eq!(status["default"]["version"], json!(default));
    assert_eq!(status["hold"], Value::Null);
    let instances = status["group"]["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 1);
    assert_eq!(instances[0]["version"], json!(default.to_string()));
    assert_eq!(instances[0]["targets"][0]["state"], json!("healthy"));
    // A release killed while its refresh runs (no cleanup): `status --wait` follows the
    // refresh to its end, a line per change.
    emulator.behaviour(json!({"target_health": {"healthy_after_seconds": 4}}));
    let child = kiln.spawn(&["build", &recipe, "--var", "flavour=next"]);
    assert!(eventually(Duration::from_secs(30), || {
        aws.group(GROUP).1.len() == 2
    }));
    send_signal(&child, libc::SIGKILL);
    let _ = finish(child);
    let waited = kiln.run(&["status", &recipe, "--wait"]);
    waited.assert_code(0);
    assert!(
        waited.stderr.contains("target initial → healthy"),
        "{}",
        waited.stderr
    );
    assert!(
        waited.stdout.contains("no instance refresh in progress"),
        "{}",
        waited.stdout
    );
}

/// `script` gives kiln a terminal, so it asks before rolling back.
fn rollback_on_a_terminal(kiln: &Kiln, recipe: &str, answer: &str) -> Run {
    let kiln_bin = env!("CARGO_BIN_EXE_kiln");
    let line = format!("{kiln_bin} rollback {recipe} --no-refresh");
    let mut cmd = kiln.command(&[]);
    let envs: Vec<_> = cmd
        .get_envs()
        .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned())))
        .collect();
    cmd = std::process::Command::new("script");
    cmd.args(["-qec", &line, "/dev/null"])
        .current_dir(kiln.dir.path())
        .env_clear()
        .envs(envs)
        .env_remove("CI")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("script");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(answer.as_bytes())
        .unwrap();
    finish(child)
}

#[test]
fn rollback_asks_on_a_terminal_and_dry_run_only_prints() {
    let emulator = Emulator::seeded();
    let aws = emulator.aws();
    let kiln = Kiln::new(&emulator);
    let recipe = group_recipe(&kiln, "");
    for flavour in ["first", "second"] {
        let var = format!("flavour={flavour}");
        kiln.run(&["build", &recipe, "--no-refresh", "--var", &var])
            .assert_code(0);
    }
    let before = aws.template_versions(GROUP);
    let dry = kiln.run(&["rollback", &recipe, "--dry-run", "--json"]);
    dry.assert_code(0);
    let choice = dry.json();
    assert_eq!(choice["before"]["version"], json!(before.0));
    assert_eq!(choice["after"]["version"], json!(before.0 - 1));
    assert_eq!(
        aws.template_versions(GROUP),
        before,
        "--dry-run changes nothing"
    );
    let no = rollback_on_a_terminal(&kiln, &recipe, "n\n");
    assert!(
        no.stdout.contains("roll back? [y/N]") && no.stdout.contains("not confirmed"),
        "{}",
        no.stdout
    );
    assert_eq!(aws.template_versions(GROUP), before);
    let yes = rollback_on_a_terminal(&kiln, &recipe, "y\n");
    assert!(
        yes.stdout.contains("held: builds will not release"),
        "{}",
        yes.stdout
    );
    assert_eq!(aws.template_versions(GROUP).0, before.0 - 1);
}

/// The group recipe with a short refresh timeout, so that kiln's own health wait gives up.
fn impatient_recipe(kiln: &Kiln) -> String {
    let text = std::fs::read_to_string(group_recipe(kiln, "")).unwrap()
        + "timeouts: { instance_refresh: 15s }\n";
    kiln.write("impatient.yaml", &text)
        .to_str()
        .unwrap()
        .to_owned()
}

/// After a refresh that succeeded while kiln's health gate never opened: exit 1, the default
/// where it was, the version the group now runs kept, and a message that says so.
fn assert_kept_after_success(aws: &Aws, run: &Run, before: (i64, i64), needle: &str) {
    run.assert_code(1);
    let new = before.1 + 1;
    assert_eq!(
        aws.template_versions(GROUP),
        (before.0, new),
        "{}",
        run.stderr
    );
    assert_eq!(aws.group(GROUP).0, new.to_string(), "{}", run.stderr);
    for words in [
        "the refresh itself succeeded",
        &format!("version {new} stays: the group launches from it"),
        "the default stays version 1",
        needle,
    ] {
        assert!(
            run.stderr.contains(words),
            "{words:?} not in:\n{}",
            run.stderr
        );
    }
}

#[test]
fn a_target_stuck_unused_is_named_and_the_refresh_rolled_back_when_kiln_gives_up() {
    let emulator = Emulator::seeded();
    // The new instance's Availability Zone is not enabled on the load balancer: the refresh
    // never sees it healthy and does not end by itself.
    emulator.behaviour(json!({"target_health": {"unhealthy": [
        {"image_tagged": "kiln:build-id", "state": "unused", "reason": "Target.NotInUse",
         "description": "Target is in an Availability Zone that is not enabled for the load balancer"}
    ]}}));
    let aws = emulator.aws();
    let kiln = Kiln::new(&emulator);
    let before = aws.template_versions(GROUP);
    let run = kiln.run(&["build", &impatient_recipe(&kiln)]);
    run.assert_code(1);
    for words in [
        "is unused in target group",
        "Target.NotInUse",
        "RollbackSuccessful: it failed and AWS rolled it back",
        "the default stays version 1",
        "set auto scaling group rudder-dataplane back to $Default",
    ] {
        assert!(
            run.stderr.contains(words),
            "{words:?} not in:\n{}",
            run.stderr
        );
    }
    assert_eq!(aws.template_versions(GROUP), before);
    assert_eq!(aws.group(GROUP).0, "$Default");
}

/// The group's health check type becomes EC2: it never looks at target health.
fn ec2_health_checks(aws: &Aws) {
    aws.block_on(
        aws.autoscaling
            .update_auto_scaling_group()
            .auto_scaling_group_name(GROUP)
            .health_check_type("EC2")
            .send(),
    )
    .expect("UpdateAutoScalingGroup");
}

#[test]
fn ec2_health_checks_let_a_refresh_succeed_with_an_unhealthy_target_and_kiln_says_so() {
    let emulator = Emulator::seeded();
    emulator.behaviour(json!({
        "refresh_rules": {"elb_grace_period": true},
        "target_health": {"unhealthy": [
            {"image_tagged": "kiln:build-id", "reason": "Target.ResponseCodeMismatch",
             "description": "Health checks failed with these codes: [503]"}
        ]}
    }));
    let aws = emulator.aws();
    ec2_health_checks(&aws);
    let kiln = Kiln::new(&emulator);
    let before = aws.template_versions(GROUP);
    let run = kiln.run(&["build", &impatient_recipe(&kiln)]);
    assert!(
        run.stderr.contains("health check type EC2"),
        "{}",
        run.stderr
    );
    assert_kept_after_success(&aws, &run, before, "is unhealthy in target group");
}

#[test]
fn a_group_scaled_to_zero_is_released_without_an_instance_to_verify() {
    let emulator = Emulator::seeded();
    let aws = emulator.aws();
    aws.block_on(
        aws.autoscaling
            .update_auto_scaling_group()
            .auto_scaling_group_name(GROUP)
            .min_size(0)
            .desired_capacity(0)
            .send(),
    )
    .expect("UpdateAutoScalingGroup");
    assert!(eventually(Duration::from_secs(30), || aws
        .group(GROUP)
        .1
        .is_empty()));
    let kiln = Kiln::new(&emulator);
    let run = kiln.run(&["build", &impatient_recipe(&kiln), "--json"]);
    run.assert_code(0);
    let manifest = run.json();
    let version = manifest["launch_template"]["default_version"]
        .as_i64()
        .unwrap();
    assert_eq!(
        manifest["launch_template"]["created_version"],
        json!(version)
    );
    assert_eq!(aws.template_versions(GROUP).0, version);
    assert_eq!(aws.group(GROUP).0, "$Default");
}

#[test]
fn a_target_group_attached_as_a_traffic_source_gates_the_default() {
    let emulator = Emulator::seeded();
    let aws = emulator.aws();
    // The seed's target group, moved from TargetGroupARNs to the group's traffic sources.
    let out = aws
        .block_on(
            aws.autoscaling
                .describe_auto_scaling_groups()
                .auto_scaling_group_names(GROUP)
                .send(),
        )
        .expect("DescribeAutoScalingGroups");
    let arn = out.auto_scaling_groups()[0].target_group_arns()[0].clone();
    aws.block_on(
        aws.autoscaling
            .detach_load_balancer_target_groups()
            .auto_scaling_group_name(GROUP)
            .target_group_arns(&arn)
            .send(),
    )
    .expect("DetachLoadBalancerTargetGroups");
    let source = aws_sdk_autoscaling::types::TrafficSourceIdentifier::builder()
        .identifier(&arn)
        .r#type("elbv2")
        .build();
    aws.block_on(
        aws.autoscaling
            .attach_traffic_sources()
            .auto_scaling_group_name(GROUP)
            .traffic_sources(source)
            .send(),
    )
    .expect("AttachTrafficSources");
    emulator.behaviour(json!({
        "refresh": {"success_before_healthy": true},
        "target_health": {"register_after_seconds": 2, "healthy_after_seconds": 1}
    }));
    let kiln = Kiln::new(&emulator);
    let run = kiln.run(&["build", &group_recipe(&kiln, "")]);
    run.assert_code(0);
    assert!(
        !run.stderr.contains("has no target group"),
        "{}",
        run.stderr
    );
    let healthy = run.stderr.find("→ healthy").unwrap_or(usize::MAX);
    let moved = run
        .stderr
        .find("is the default: the group is healthy on it");
    assert!(
        moved.is_some_and(|moved| healthy < moved),
        "the default moved before the traffic source's target was healthy:\n{}",
        run.stderr
    );
}

#[test]
fn the_ssm_parameter_is_written_only_once_the_default_moved() {
    let emulator = Emulator::seeded();
    let aws = emulator.aws();
    let kiln = Kiln::new(&emulator);
    let text = std::fs::read_to_string(group_recipe(&kiln, ""))
        .unwrap()
        .replace(
            "  tags: { app: demo }\n",
            "  tags: { app: demo }\n  ssm_parameter: /kiln/demo-app/ami\n",
        );
    let recipe = kiln.write("published.yaml", &text);
    let recipe = recipe.to_str().unwrap();
    let parameter = || {
        aws.block_on(aws.ssm.get_parameter().name("/kiln/demo-app/ami").send())
            .ok()
            .and_then(|p| p.parameter().and_then(|p| p.value()).map(str::to_owned))
    };
    // A failed verified release writes nothing.
    emulator.behaviour(json!({"target_health": {"unhealthy": [
        {"image_tagged": "kiln:build-id", "reason": "Target.ResponseCodeMismatch",
         "description": "Health checks failed with these codes: [503]"}
    ]}}));
    kiln.run(&["build", recipe]).assert_code(1);
    assert_eq!(parameter(), None, "written before the release was verified");
    emulator.behaviour(json!({"target_health": {"unhealthy": []}}));
    let run = kiln.run(&["build", recipe, "--var", "flavour=good", "--json"]);
    run.assert_code(0);
    let image = run.json()["images"][0]["image_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(parameter(), Some(image));
    let actions = emulator.kiln_actions();
    let position = |action: &str| actions.iter().rposition(|a| a == action).unwrap();
    assert!(position("PutParameter") > position("ModifyLaunchTemplate"));
}

#[test]
fn a_new_version_not_visible_yet_is_made_the_default_once_it_is() {
    let emulator = Emulator::seeded();
    // EC2: "the result of an API command [...] might not be immediately visible to all
    // subsequent commands you run": ModifyLaunchTemplate answers VersionNotFound for a while.
    emulator.behaviour(json!({"invisible_seconds": {"launch_template_version": 3}}));
    let aws = emulator.aws();
    let kiln = Kiln::new(&emulator);
    let run = kiln.run(&["build", &recipe_path(&kiln), "--json"]);
    run.assert_code(0);
    let version = run.json()["launch_template"]["default_version"]
        .as_i64()
        .unwrap();
    assert_eq!(aws.template_versions(GROUP).0, version);
    assert!(
        emulator.kiln_action_count("ModifyLaunchTemplate") > 1,
        "it was tried again"
    );
}

/// The plain test recipe (release to the template only), written to the scratch folder.
fn recipe_path(kiln: &Kiln) -> String {
    let path = kiln.write(
        "plain.yaml",
        &recipe("  - name: install\n    run: echo install"),
    );
    path.to_str().unwrap().to_owned()
}

#[test]
fn without_a_default_vpc_the_tester_launches_in_a_subnet_of_the_group() {
    let emulator = Emulator::start();
    let seeded = emulator.seed_with(json!({"default_vpc": false}));
    let subnets: Vec<String> = seeded["subnet_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect();
    let aws = emulator.aws();
    let kiln = Kiln::new(&emulator);
    // The builder names its subnet; the tester takes one from the group (the template names
    // none), as a recipe that only says `release.auto_scaling_group` gets.
    let text = std::fs::read_to_string(group_recipe(&kiln, ""))
        .unwrap()
        .replace(
            "  volume_size_gb: 10\n",
            &format!("  volume_size_gb: 10\n  subnet_id: {}\n", subnets[0]),
        )
        + "test:\n  - name: boots\n    run: echo boots\n";
    let recipe = kiln.write("vpc.yaml", &text);
    let run = kiln.run(&["build", recipe.to_str().unwrap()]);
    run.assert_code(0);
    let tester = &testers(&aws)[0];
    assert!(
        subnets
            .iter()
            .any(|s| Some(s.as_str()) == tester.subnet_id()),
        "{:?} not in {subnets:?}",
        tester.subnet_id()
    );
}

#[test]
fn a_group_at_its_max_size_gets_room_to_launch_before_it_terminates() {
    let emulator = Emulator::seeded();
    // The pessimistic reading of AWS: a refresh never exceeds MaxSize (desired = max = 1), so
    // without room it would terminate the only instance first.
    emulator.behaviour(json!({"refresh_rules": {"max_size": true}}));
    slow_health(&emulator, json!({}));
    let aws = emulator.aws();
    let kiln = Kiln::new(&emulator);
    let recipe = group_recipe(&kiln, "");
    emulator.clear_target_health();
    let run = kiln.run(&["build", &recipe]);
    run.assert_code(0);
    assert!(run.stderr.contains("kiln raises it to 2"), "{}", run.stderr);
    let (gap, most, _) = health_record(&emulator);
    assert_eq!(gap, 0.0, "seconds without a healthy target");
    assert_eq!(most, 2);
    assert_eq!(max_size(&aws), 1, "set back");
}

#[test]
fn an_unhealthy_new_instance_is_replaced_by_the_group_before_the_refresh_fails() {
    let emulator = Emulator::seeded();
    // AWS: an ELB health check counts only after the grace period, and then the group
    // *replaces* the instance; the refresh fails once replacements keep failing.
    emulator.behaviour(json!({
        "refresh_rules": {"elb_grace_period": true},
        "refresh": {"replacements_before_failure": 2},
        "target_health": {"healthy_after_seconds": 1, "unhealthy": [
            {"image_tagged": "kiln:build-id", "reason": "Target.ResponseCodeMismatch",
             "description": "Health checks failed with these codes: [503]"}
        ]}
    }));
    let aws = emulator.aws();
    aws.block_on(
        aws.autoscaling
            .update_auto_scaling_group()
            .auto_scaling_group_name(GROUP)
            .health_check_grace_period(0)
            .send(),
    )
    .expect("UpdateAutoScalingGroup");
    let (_, instances) = aws.group(GROUP);
    let before = aws.template_versions(GROUP);
    let kiln = Kiln::new(&emulator);
    let recipe = group_recipe(&kiln, "");
    let run = kiln.run(&["build", &recipe]);
    run.assert_code(1);
    for words in [
        "RollbackSuccessful: it failed and AWS rolled it back",
        "Target.ResponseCodeMismatch",
        "the default stays version 1",
    ] {
        assert!(
            run.stderr.contains(words),
            "{words:?} not in:\n{}",
            run.stderr
        );
    }
    // kiln followed the replacements (more than one new instance launched) rather than
    // failing on the first unhealthy report.
    let launched = run.stderr.matches(" launched (version 2)").count();
    assert!(launched >= 2, "{launched} launches seen:\n{}", run.stderr);
    assert_eq!(aws.template_versions(GROUP), before);
    assert_eq!(aws.group(GROUP).1, instances);
}

#[test]
fn an_instance_that_turns_unhealthy_during_its_warm_up_keeps_the_default_where_it_was() {
    let emulator = Emulator::seeded();
    // The new target is healthy 1 s after it is registered and turns unhealthy 3 s later,
    // within its 5 s warm-up; the refresh succeeds after the warm-up. With health check type
    // EC2 the group keeps the instance, so the refresh's success stands: kiln's own gate, which
    // looks at the target when the refresh has ended, is what must notice.
    emulator.behaviour(json!({
        "refresh_rules": {"elb_grace_period": true, "instance_warmup": true},
        "target_health": {"healthy_after_seconds": 1, "unhealthy": [
            {"image_tagged": "kiln:build-id", "after_seconds": 4,
             "reason": "Target.ResponseCodeMismatch",
             "description": "Health checks failed with these codes: [502]"}
        ]}
    }));
    let aws = emulator.aws();
    ec2_health_checks(&aws);
    let kiln = Kiln::new(&emulator);
    let before = aws.template_versions(GROUP);
    let text = std::fs::read_to_string(group_recipe(&kiln, "  refresh: { instance_warmup: 5s }\n"))
        .unwrap()
        + "timeouts: { instance_refresh: 12s }\n";
    let recipe = kiln.write("warm-up.yaml", &text);
    let run = kiln.run(&["build", recipe.to_str().unwrap()]);
    // kiln saw the new target healthy before it turned.
    assert!(run.stderr.contains("→ healthy"), "{}", run.stderr);
    assert_kept_after_success(&aws, &run, before, "is unhealthy in target group");
    assert!(
        run.stderr.contains("Target.ResponseCodeMismatch"),
        "{}",
        run.stderr
    );
}

#[test]
fn gc_sets_back_what_a_killed_release_changed_on_the_group() {
    let emulator = Emulator::seeded();
    // A group at its MaxSize (kiln raises it) on $Default (kiln pins it to a number); the new
    // target never gets healthy, so the refresh is still under way when kiln is killed.
    emulator.behaviour(json!({
        "refresh_rules": {"max_size": true},
        "target_health": {"healthy_after_seconds": 600}
    }));
    let aws = emulator.aws();
    let before = aws.template_versions(GROUP);
    let (_, instances) = aws.group(GROUP);
    let kiln = Kiln::new(&emulator);
    let recipe = group_recipe(&kiln, "");
    let child = kiln.spawn(&["build", &recipe]);
    assert!(eventually(Duration::from_secs(60), || {
        aws.group(GROUP).1.len() == 2
    }));
    send_signal(&child, libc::SIGKILL);
    finish(child);
    // Killed: nothing was set back.
    assert_eq!(max_size(&aws), 2);
    assert_ne!(aws.group(GROUP).0, "$Default");

    let gc = kiln.run(&["gc", "--older-than", "0s", "--json"]);
    gc.assert_code(0);
    let outcomes: Vec<String> = gc.json()["leftovers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| format!("{} {}", l["resource"], l["outcome"]))
        .collect();
    for kind in ["instance refresh", "MaxSize", "launch template"] {
        assert!(
            outcomes.iter().any(|o| o.contains(kind)),
            "{kind} not among {outcomes:#?}"
        );
    }
    let (setting, after) = aws.group(GROUP);
    assert_eq!(setting, "$Default", "{outcomes:#?}");
    assert_eq!(max_size(&aws), 1, "{outcomes:#?}");
    assert_eq!(after, instances, "{outcomes:#?}");
    assert_eq!(aws.template_versions(GROUP), before, "{outcomes:#?}");
}
