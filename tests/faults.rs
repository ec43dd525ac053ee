//! Reliability through the real binary and the SDK: signals, crash recovery with `kiln gc`,
//! slow and throttled AWS, timeouts, secrets and concurrent builds. The emulator's fault layer provides what moto
//! cannot show (pending states, throttling, dropped connections, failed commands).

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::*;

/// A phase of a build, how to hold kiln in it, and the request that says it has been reached.
struct Phase {
    name: &'static str,
    behaviour: Value,
    /// Fault rules: a delayed answer holds kiln inside one call, after AWS acted on it.
    faults: Value,
    reached_by: &'static str,
    /// Whether the launch template may have changed by then.
    released: bool,
    /// Whether the image was complete by then (a complete image is kept: a re-run reuses it).
    image_complete: bool,
}

fn held(name: &'static str, behaviour: Value, reached_by: &'static str) -> Phase {
    Phase {
        name,
        behaviour,
        faults: json!({}),
        reached_by,
        released: false,
        image_complete: false,
    }
}

/// kiln is inside the call: AWS has acted, its answer is held back.
fn in_call(name: &'static str, action: &'static str) -> Phase {
    let faults = json!({"rules": [{"action": action, "fault": "delay", "ms": 5000}]});
    Phase {
        name,
        behaviour: json!({}),
        faults,
        reached_by: action,
        released: false,
        // The image is complete before the release starts, and kept.
        image_complete: action == "CreateLaunchTemplateVersion",
    }
}

fn interrupt_at(phase: &Phase, signal: i32, signal_name: &str) {
    let emulator = Emulator::seeded();
    emulator.behaviour(phase.behaviour.clone());
    emulator.faults(phase.faults.clone());
    let aws = emulator.aws();
    let before = aws.template_versions("rudder-dataplane");
    let kiln = Kiln::new(&emulator);
    let text = recipe("  - name: install\n    run: echo install").replace(
        "  keep: 2\n",
        "  keep: 2\n  auto_scaling_group: rudder-dataplane\n",
    );
    let recipe = kiln.write("app.yaml", &text);
    let child = kiln.spawn(&["build", recipe.to_str().unwrap()]);
    let reached = eventually(Duration::from_secs(30), || {
        emulator
            .kiln_actions()
            .iter()
            .any(|a| a == phase.reached_by)
    });
    assert!(
        reached,
        "{}: never reached {}",
        phase.name, phase.reached_by
    );
    std::thread::sleep(Duration::from_millis(300));
    send_signal(&child, signal);
    let run = finish(child);
    run.assert_code(130);
    // What AWS holds is checked by searches too: once they show everything.
    if let Some(lag) = phase.behaviour["search_lag_seconds"].as_u64() {
        std::thread::sleep(Duration::from_secs(lag));
    }
    assert!(
        run.stderr
            .contains(&format!("interrupted by {signal_name}")),
        "{}: {}",
        phase.name,
        run.stderr
    );
    let live = aws.live_builders();
    assert!(
        live.is_empty(),
        "{}: builders left {live:?}\n{}",
        phase.name,
        run.stderr
    );
    let unfinished: Vec<Image> = aws
        .kiln_images()
        .into_iter()
        .filter(|i| i.state != "available")
        .collect();
    assert!(
        unfinished.is_empty(),
        "{}: unfinished images left {unfinished:?}",
        phase.name
    );
    if !phase.released {
        assert_eq!(
            aws.template_versions("rudder-dataplane"),
            before,
            "{}: launch template changed",
            phase.name
        );
    }
    if !phase.image_complete {
        assert!(
            aws.kiln_images().is_empty(),
            "{}: an image was left",
            phase.name
        );
    }
}

// Every interrupt point of a build is tested on the fake (`pipeline::an_interrupt_at_every_phase_…`);
// these two prove the same through the real binary, its signal handlers and the SDK: one signal
// while AWS's answer is held back after it acted, one while the image is pending (and its id
// not visible yet).

/// The new builder is missing from searches for 4 s (AWS's eventual consistency): teardown,
/// which knows RunInstances never answered, searches again until it shows.
#[test]
fn sigterm_inside_run_instances_terminates_the_builder_once_searches_show_it() {
    let mut phase = in_call(
        "launching (RunInstances answer not back, not in searches yet)",
        "RunInstances",
    );
    phase.behaviour = json!({"search_lag_seconds": 4, "invisible_seconds": {"instance": 4}});
    interrupt_at(&phase, libc::SIGTERM, "SIGTERM");
}

#[test]
fn sigterm_inside_create_image_cleans_up_the_image_the_call_made() {
    interrupt_at(
        &in_call(
            "creating the image (CreateImage answer not back)",
            "CreateImage",
        ),
        libc::SIGTERM,
        "SIGTERM",
    );
}

/// The new image and its snapshot answer NotFound for 5 s (AWS's eventual consistency):
/// teardown waits for them to be visible instead of taking them for gone.
#[test]
fn sigint_while_the_image_is_pending_and_not_visible_yet_cleans_up() {
    interrupt_at(
        &held(
            "waiting for the image",
            json!({
                "image_pending_seconds": 60,
                "invisible_seconds": {"image": 5, "snapshot": 5}
            }),
            "CreateImage",
        ),
        libc::SIGINT,
        "SIGINT",
    );
}

#[test]
fn gc_after_sigkill_removes_leftovers_but_not_live_or_finished_builds() {
    let emulator = Emulator::seeded();
    let aws = emulator.aws();
    let kiln = Kiln::new(&emulator);
    // A finished build first: its image must survive gc.
    let finished = kiln.write(
        "done.yaml",
        &recipe("  - name: done\n    run: echo done").replace("demo-app", "done-app"),
    );
    kiln.run(&["build", finished.to_str().unwrap(), "--no-release"])
        .assert_code(0);
    let finished_image = aws.kiln_images()[0].id.clone();

    // A build killed while its image is pending: builder stopped, image pending.
    emulator.behaviour(json!({"image_pending_seconds": 600}));
    let recipe_path = kiln.write(
        "app.yaml",
        &recipe("  - name: install\n    run: echo install"),
    );
    let recipe_arg = recipe_path.to_str().unwrap();
    let child = kiln.spawn(&["build", recipe_arg]);
    // The finished build made one CreateImage already: wait for this build's.
    assert!(eventually(Duration::from_secs(30), || emulator
        .kiln_actions()
        .iter()
        .filter(|a| *a == "CreateImage")
        .count()
        >= 2));
    std::thread::sleep(Duration::from_millis(300));
    send_signal(&child, libc::SIGKILL);
    finish(child);
    assert_eq!(aws.live_builders().len(), 1);
    // The CreateImage request is recorded as it arrives; on a loaded machine the emulator may
    // still be making the image when kiln is killed.
    let pending = || -> Vec<Image> {
        aws.kiln_images()
            .into_iter()
            .filter(|i| i.state == "pending")
            .collect()
    };
    assert!(eventually(Duration::from_secs(10), || pending().len() == 1));

    // A build still running elsewhere in this state folder (held in a step).
    emulator.behaviour(json!({"image_pending_seconds": 0, "commands": [{"match": "hold-me", "status": "Success", "in_progress_seconds": 120}]}));
    let other = kiln.write(
        "other.yaml",
        &recipe("  - name: hold\n    run: echo hold-me").replace("demo-app", "other-app"),
    );
    let running = kiln.spawn(&["build", other.to_str().unwrap()]);
    assert!(eventually(Duration::from_secs(30), || aws
        .live_builders()
        .len()
        == 2
        && emulator
            .kiln_actions()
            .iter()
            .filter(|a| *a == "SendCommand")
            .count()
            >= 3));

    let dry = kiln.run(&["gc", "--older-than", "0s", "--dry-run", "--json"]);
    dry.assert_code(0);
    let dry = dry.json();
    let outcomes: Vec<String> = dry["leftovers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| format!("{} => {}", l["resource"], l["outcome"]))
        .collect();
    assert!(
        outcomes
            .iter()
            .filter(|o| o.contains("would remove"))
            .count()
            == 2,
        "{outcomes:#?}"
    );
    assert!(
        outcomes.iter().any(|o| o.contains("still running")),
        "{outcomes:#?}"
    );
    assert_eq!(aws.live_builders().len(), 2);

    // Without --older-than 0s, young leftovers are spared (they may belong to a build elsewhere).
    let young = kiln.run(&["gc", "--json"]);
    young.assert_code(0);
    assert!(young.json()["leftovers"]
        .as_array()
        .unwrap()
        .iter()
        .all(|l| l["outcome"].as_str().unwrap().starts_with("spared")));

    let gc = kiln.run(&["gc", "--older-than", "0s"]);
    gc.assert_code(0);
    let live: Vec<String> = aws
        .live_builders()
        .into_iter()
        .map(|i| i.tags["kiln:recipe"].clone())
        .collect();
    assert_eq!(live, vec!["other-app".to_owned()], "{}", gc.stdout);
    let images: Vec<(String, String)> = aws
        .kiln_images()
        .into_iter()
        .map(|i| (i.id, i.state))
        .collect();
    assert_eq!(images, vec![(finished_image, "available".to_owned())]);

    send_signal(&running, libc::SIGINT);
    finish(running).assert_code(130);

    // And the killed recipe builds fine afterwards.
    kiln.run(&["build", recipe_arg]).assert_code(0);
    assert!(aws.live_builders().is_empty());
}

#[test]
fn throttled_flaky_aws_still_builds_exactly_one_of_everything() {
    let emulator = Emulator::seeded();
    emulator
        .faults(json!({"seed": 7, "throttle_rate": 0.2, "error_rate": 0.05, "drop_rate": 0.03}));
    let kiln = Kiln::new(&emulator);
    let recipe = kiln.write(
        "app.yaml",
        &recipe("  - name: one\n    run: echo one\n  - name: two\n    run: echo two"),
    );
    let run = kiln.run(&["build", recipe.to_str().unwrap(), "--json"]);
    let requests = emulator.kiln_requests();
    let faulted = requests.iter().filter(|r| !r["fault"].is_null()).count();
    run.assert_code(0);
    emulator.faults(json!({}));
    let aws = emulator.aws();
    assert_eq!(
        aws.builders().len(),
        1,
        "more than one builder was launched"
    );
    assert_eq!(aws.kiln_images().len(), 1);
    assert!(
        faulted >= 5,
        "only {faulted} of {} requests were faulted",
        requests.len()
    );
    let manifest = run.json();
    let (default_version, _) = aws.template_versions("rudder-dataplane");
    assert_eq!(
        aws.template_image("rudder-dataplane", default_version),
        manifest["images"][0]["image_id"].as_str().unwrap()
    );
}

#[test]
fn a_lost_run_instances_answer_launches_nothing_twice() {
    let emulator = Emulator::seeded();
    emulator.faults(json!({"rules": [{"action": "RunInstances", "fault": "drop_after", "count": 1}, {"action": "CreateImage", "fault": "drop_after", "count": 1}]}));
    let kiln = Kiln::new(&emulator);
    let recipe = kiln.write("app.yaml", &recipe("  []"));
    kiln.run(&["build", recipe.to_str().unwrap()])
        .assert_code(0);
    let aws = emulator.aws();
    assert_eq!(aws.builders().len(), 1);
    assert_eq!(aws.kiln_images().len(), 1);
    assert!(
        emulator
            .kiln_actions()
            .iter()
            .filter(|a| *a == "RunInstances")
            .count()
            >= 2
    );
}

#[test]
fn slow_aws_is_waited_for_by_time_and_real_timeouts_say_what_to_check() {
    let emulator = Emulator::seeded();
    emulator.behaviour(json!({"instance_pending_seconds": 2, "image_pending_seconds": 4, "instance_stopping_seconds": 1}));
    let kiln = Kiln::new(&emulator);
    let recipe_path = kiln.write("app.yaml", &recipe("  []"));
    let started = std::time::Instant::now();
    kiln.run(&["build", recipe_path.to_str().unwrap(), "--no-release"])
        .assert_code(0);
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(7), "{took:?}");
    assert!(
        took < Duration::from_secs(7 + 4),
        "kiln noticed the state changes late: {took:?}"
    );
    let describes = emulator
        .kiln_actions()
        .iter()
        .filter(|a| *a == "DescribeImages")
        .count();
    assert!(
        describes < 25,
        "{describes} DescribeImages calls for a 4 s wait"
    );

    emulator.behaviour(json!({"image_pending_seconds": 120}));
    let short = kiln.write(
        "short.yaml",
        &recipe("  []").replace("release:", "timeouts: { image_available: 2s }\nrelease:"),
    );
    let run = kiln.run(&["build", short.to_str().unwrap(), "--force"]);
    run.assert_code(1);
    assert!(
        run.stderr
            .contains("timed out after 2s waiting for the image to become available (ami-"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("raise timeouts.image_available"),
        "{}",
        run.stderr
    );
    assert!(emulator.aws().live_builders().is_empty());
    assert!(emulator
        .aws()
        .kiln_images()
        .iter()
        .all(|i| i.state == "available"));
}

#[test]
fn failed_images_agents_that_never_come_and_timed_out_commands_fail_cleanly() {
    let emulator = Emulator::seeded();
    let aws = emulator.aws();
    let kiln = Kiln::new(&emulator);
    let path = kiln.write(
        "app.yaml",
        &recipe("  - name: slow\n    run: echo slow-step")
            .replace("release:", "timeouts: { ssm_online: 2s }\nrelease:"),
    );
    let recipe = path.to_str().unwrap();

    emulator.behaviour(json!({"image_fail": true}));
    let run = kiln.run(&["build", recipe]);
    run.assert_code(1);
    assert!(run.stderr.contains("is failed"), "{}", run.stderr);

    emulator.behaviour(json!({"image_fail": false, "ssm_agent": "never"}));
    let run = kiln.run(&["build", recipe]);
    run.assert_code(1);
    assert!(
        run.stderr
            .contains("waiting for the SSM agent to come online"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("AmazonSSMManagedInstanceCore"),
        "{}",
        run.stderr
    );

    emulator.behaviour(json!({"ssm_agent": "online", "commands": [{"match": "slow-step", "status": "TimedOut", "stderr": "killed after timeout"}]}));
    let run = kiln.run(&["build", recipe]);
    run.assert_code(1);
    assert!(
        run.stderr.contains("step `slow` failed") && run.stderr.contains("TimedOut"),
        "{}",
        run.stderr
    );

    assert!(aws.live_builders().is_empty(), "{:?}", aws.live_builders());
    assert!(aws.kiln_images().is_empty(), "{:?}", aws.kiln_images());
    assert_eq!(aws.builders().len(), 3);
}

#[test]
fn secrets_never_appear_in_output_logs_or_manifest() {
    let emulator = Emulator::seeded();
    emulator.behaviour(json!({"commands": [
        {"match": "fails-with-secret", "status": "Failed", "stderr": "auth failed for token s3cr3t-token-value", "exit_code": 1},
        {"match": "s3cr3t-token-value", "status": "Success", "stdout": "token is s3cr3t-token-value\n"}
    ]}));
    let kiln = Kiln::new(&emulator);
    let text = recipe("  - name: use secret\n    run: echo \"{{ vars.token }}\"").replace(
        "steps:\n",
        "vars:\n  token: { value: \"\", secret: true }\nsteps:\n",
    );
    let path = kiln.write("app.yaml", &text);
    let run = kiln.run(&[
        "-v",
        "build",
        path.to_str().unwrap(),
        "--var",
        "token=s3cr3t-token-value",
        "--manifest",
        "m.json",
    ]);
    run.assert_code(0);
    assert!(run.stderr.contains("token is ***"), "{}", run.stderr);
    let failing = kiln.write(
        "fail.yaml",
        &text.replace(
            "echo \"{{ vars.token }}\"",
            "echo \"{{ vars.token }}\" fails-with-secret",
        ),
    );
    let failed = kiln.run(&[
        "-v",
        "build",
        failing.to_str().unwrap(),
        "--var",
        "token=s3cr3t-token-value",
    ]);
    failed.assert_code(1);
    let validate = kiln.run(&[
        "validate",
        path.to_str().unwrap(),
        "--var",
        "token=s3cr3t-token-value",
        "--json",
    ]);
    validate.assert_code(0);
    let mut everything = format!(
        "{}{}{}{}{}{}",
        run.stdout, run.stderr, failed.stdout, failed.stderr, validate.stdout, validate.stderr
    );
    for entry in walk(kiln.dir.path()) {
        if entry.file_name().and_then(|n| n.to_str()) == Some("app.yaml") {
            continue;
        }
        everything.push_str(&String::from_utf8_lossy(&std::fs::read(&entry).unwrap()));
    }
    assert!(
        everything.contains("auth failed for token ***"),
        "{everything}"
    );
    assert!(
        !everything.contains("s3cr3t-token-value"),
        "a secret leaked:\n{everything}"
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[test]
fn the_builder_requires_imdsv2_and_has_an_encrypted_volume() {
    let emulator = Emulator::seeded();
    emulator.behaviour(
        json!({"commands": [{"match": "hold-me", "status": "Success", "in_progress_seconds": 60}]}),
    );
    let aws = emulator.aws();
    let kiln = Kiln::new(&emulator);
    let path = kiln.write("app.yaml", &recipe("  - name: hold\n    run: echo hold-me"));
    let child = kiln.spawn(&["build", path.to_str().unwrap()]);
    assert!(eventually(Duration::from_secs(30), || emulator
        .kiln_actions()
        .iter()
        .any(|a| a == "SendCommand")));
    let builder = aws.live_builders().pop().expect("a builder");
    assert_eq!(builder.http_tokens, "required");
    let volumes = aws
        .block_on(
            aws.ec2
                .describe_volumes()
                .filters(
                    aws_sdk_ec2::types::Filter::builder()
                        .name("attachment.instance-id")
                        .values(&builder.id)
                        .build(),
                )
                .send(),
        )
        .expect("DescribeVolumes");
    assert!(!volumes.volumes().is_empty());
    for volume in volumes.volumes() {
        assert_eq!(volume.encrypted(), Some(true), "{volume:?}");
        assert!(
            volume
                .tags()
                .iter()
                .any(|t| t.key() == Some("kiln:build-id")),
            "{volume:?}"
        );
    }
    send_signal(&child, libc::SIGTERM);
    finish(child).assert_code(130);
}

#[test]
fn two_builds_of_one_recipe_at_once_end_cleanly() {
    let emulator = Emulator::seeded();
    emulator.behaviour(json!({"instance_pending_seconds": 1}));
    let aws = emulator.aws();
    let kiln = Kiln::new(&emulator);
    let path = kiln.write(
        "app.yaml",
        &recipe("  - name: install\n    run: echo install"),
    );
    let a = kiln.spawn(&["build", path.to_str().unwrap()]);
    let b = kiln.spawn(&["build", path.to_str().unwrap()]);
    let (a, b) = (finish(a), finish(b));
    let codes = [a.code, b.code];
    assert!(codes.contains(&0), "{a:?}\n{b:?}");
    for run in [&a, &b] {
        assert!(
            run.code == 0
                || run
                    .stderr
                    .contains("another build of demo-app is in progress"),
            "{run:?}"
        );
    }
    assert!(aws.live_builders().is_empty());
    let (default_version, latest) = aws.template_versions("rudder-dataplane");
    assert!(default_version <= latest);
    let image = aws.template_image("rudder-dataplane", default_version);
    assert!(aws
        .kiln_images()
        .iter()
        .any(|i| i.id == image && i.state == "available"));
}

#[test]
fn a_builder_falls_back_to_the_next_instance_type_and_fails_naming_them_all() {
    let emulator = Emulator::seeded();
    emulator.behaviour(json!({"instance_type_errors": {
        "t3.micro": "InsufficientInstanceCapacity",
        "t3a.micro": "Unsupported",
    }}));
    let aws = emulator.aws();
    let kiln = Kiln::new(&emulator);
    let text = recipe("  - name: install\n    run: echo install").replace(
        "  instance_type: t3.micro\n",
        "  instance_type: [t3.micro, t3a.micro, t2.micro]\n",
    );
    let path = kiln.write("app.yaml", &text);
    let run = kiln.run(&["build", path.to_str().unwrap(), "--json"]);
    run.assert_code(0);
    let launched: Vec<String> = aws
        .block_on(aws.ec2.describe_instances().send())
        .expect("describe")
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter(|i| i.tags().iter().any(|t| t.key() == Some("kiln:role")))
        .filter_map(|i| i.instance_type().map(|t| t.as_str().to_owned()))
        .collect();
    assert_eq!(launched, ["t2.micro"]);
    // Every type refused: the build fails naming each, and leaves nothing behind.
    emulator.behaviour(json!({"instance_type_errors": {
        "t3.micro": "InsufficientInstanceCapacity",
        "t3a.micro": "Unsupported",
        "t2.micro": "InsufficientInstanceCapacity",
    }}));
    let run = kiln.run(&["build", path.to_str().unwrap(), "--force"]);
    run.assert_code(1);
    for named in [
        "t3.micro (InsufficientInstanceCapacity)",
        "t3a.micro (Unsupported)",
        "t2.micro (InsufficientInstanceCapacity)",
    ] {
        assert!(run.stderr.contains(named), "{named}: {}", run.stderr);
    }
    assert!(aws.live_builders().is_empty());
}
