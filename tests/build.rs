//! `kiln build` end to end against the emulator.

use serde_json::{json, Value};

use crate::support::*;

#[test]
fn a_build_makes_a_tagged_image_releases_it_and_leaves_no_builder() {
    let emulator = Emulator::seeded();
    let aws = emulator.aws();
    let (default_before, latest_before) = aws.template_versions("rudder-dataplane");
    let data_before = aws.template_data("rudder-dataplane", default_before);

    let kiln = Kiln::new(&emulator);
    kiln.write("files/app.conf", "port=8080\n");
    let recipe = kiln.write(
        "app.yaml",
        &recipe(
            r#"  - name: install
    run: |
      set -euo pipefail
      echo "installing {{ name }} {{ version }} as ${USER:-root}"
  - name: config
    file: { source: files/app.conf, destination: /etc/app/app.conf, mode: "0640" }
  - name: healthy
    check: { url: "http://127.0.0.1:8080/health", timeout: 1m }"#,
        ),
    );
    let run = kiln.run(&[
        "build",
        recipe.to_str().unwrap(),
        "--json",
        "--manifest",
        "out/manifest.json",
    ]);
    run.assert_code(0);
    let manifest = run.json();
    assert_eq!(
        manifest,
        serde_json::from_str::<serde_json::Value>(&read(&kiln.path("out/manifest.json"))).unwrap()
    );
    assert_eq!(manifest["skipped"], json!(false));
    assert_eq!(manifest["recipe"], json!("demo-app"));
    assert_eq!(manifest["version"], json!("1.0.0"));
    let image_id = manifest["images"][0]["image_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let fingerprint = manifest["fingerprint"].as_str().unwrap().to_owned();
    assert!(
        fingerprint.starts_with("sha256:") && fingerprint.len() == 7 + 64,
        "{fingerprint}"
    );

    // The image: available, tagged with the build's identity and the recipe's tags.
    let images = aws.kiln_images();
    assert_eq!(images.len(), 1, "{images:?}");
    let image = &images[0];
    assert_eq!(image.id, image_id);
    assert_eq!(image.state, "available");
    assert_eq!(image.tags.get("kiln:fingerprint"), Some(&fingerprint));
    assert_eq!(
        image.tags.get("kiln:recipe").map(String::as_str),
        Some("demo-app")
    );
    assert_eq!(
        image.tags.get("kiln:version").map(String::as_str),
        Some("1.0.0")
    );
    assert_eq!(
        image.tags.get("kiln:build-id").map(String::as_str),
        manifest["build_id"].as_str()
    );
    assert_eq!(
        image.tags.get("kiln:source-image").map(String::as_str),
        manifest["source_image"].as_str()
    );
    assert!(image
        .tags
        .get("kiln:created-by")
        .is_some_and(|v| v.starts_with("kiln/")));
    assert_eq!(image.tags.get("app").map(String::as_str), Some("demo"));
    assert!(image.name.starts_with("demo-app-1.0.0-"), "{}", image.name);
    assert_eq!(
        manifest["images"][0]["name"].as_str(),
        Some(image.name.as_str())
    );

    // Its snapshots carry the same tags.
    assert!(!image.snapshots.is_empty());
    assert_eq!(
        json!(image.snapshots),
        manifest["images"][0]["snapshot_ids"]
    );
    for snapshot in &image.snapshots {
        let tags = aws.snapshot_tags(snapshot).expect("snapshot exists");
        assert_eq!(
            tags.get("kiln:fingerprint"),
            Some(&fingerprint),
            "{snapshot}"
        );
        assert_eq!(
            tags.get("kiln:build-id").map(String::as_str),
            manifest["build_id"].as_str()
        );
    }

    // The builder: one, IMDSv2 required, tagged, terminated.
    let builders = aws.builders();
    assert_eq!(builders.len(), 1, "{builders:?}");
    assert_eq!(builders[0].state, "terminated");
    assert_eq!(builders[0].http_tokens, "required");
    assert_eq!(
        builders[0].tags.get("kiln:build-id").map(String::as_str),
        manifest["build_id"].as_str()
    );

    // The launch template: a new version, now the default, with the new image and every other
    // setting of the previous default.
    let (default_after, latest_after) = aws.template_versions("rudder-dataplane");
    assert_eq!(latest_after, latest_before + 1);
    assert_eq!(default_after, latest_after);
    let data_after = aws.template_data("rudder-dataplane", default_after);
    assert_eq!(data_after.image_id(), Some(image_id.as_str()));
    assert_eq!(data_after.instance_type(), data_before.instance_type());
    assert_eq!(
        data_after.security_group_ids(),
        data_before.security_group_ids()
    );
    assert_eq!(data_after.user_data(), data_before.user_data());
    assert_eq!(
        data_after.metadata_options(),
        data_before.metadata_options()
    );
    assert_eq!(
        data_after.tag_specifications(),
        data_before.tag_specifications()
    );
    assert_eq!(
        data_after.block_device_mappings(),
        data_before.block_device_mappings()
    );
    assert_eq!(
        manifest["launch_template"]["previous_default_version"],
        json!(default_before)
    );
    assert_eq!(
        manifest["launch_template"]["default_version"],
        json!(default_after)
    );
    assert_eq!(
        manifest["launch_template"]["name"],
        json!("rudder-dataplane")
    );

    // The step commands went through SSM; the build's folder has its journal and logs.
    let actions = emulator.kiln_actions();
    assert_eq!(actions.iter().filter(|a| *a == "RunInstances").count(), 1);
    assert!(
        actions.iter().filter(|a| *a == "SendCommand").count() >= 3,
        "{actions:?}"
    );
    let log_dir = std::path::PathBuf::from(manifest["log_dir"].as_str().unwrap());
    assert!(log_dir.join("journal.jsonl").exists());
    assert!(log_dir.join("steps/01-install.log").exists());
}

#[test]
fn a_failing_step_fails_the_build_after_terminating_the_builder() {
    let emulator = Emulator::seeded();
    emulator.behaviour(json!({"commands": [{"match": "exit 3", "status": "Failed", "stdout": "starting\n", "stderr": "boom: disk on fire\n", "exit_code": 3}]}));
    let aws = emulator.aws();
    let before = aws.template_versions("rudder-dataplane");
    let kiln = Kiln::new(&emulator);
    let recipe = kiln.write("app.yaml", &recipe("  - name: ok\n    run: echo fine\n  - name: breaks\n    run: |\n      echo starting\n      exit 3\n  - name: never\n    run: echo never"));
    let run = kiln.run(&["build", recipe.to_str().unwrap(), "--json"]);
    run.assert_code(1);
    // With --json a failure is one document on stdout too.
    let report = run.json();
    assert_eq!(report["failed"], json!(true), "{report}");
    assert_eq!(
        report["failed_phase"],
        json!("step 2/3: breaks"),
        "{report}"
    );
    assert_eq!(report["failed_step"], json!("breaks"), "{report}");
    assert_eq!(report["interrupted"], Value::Null, "{report}");
    assert!(report["build_id"].as_str().unwrap().len() > 10, "{report}");
    let log_dir = std::path::PathBuf::from(report["log_dir"].as_str().unwrap());
    assert!(log_dir.join("journal.jsonl").exists(), "{report}");
    let error = report["error"].as_str().unwrap();
    assert!(
        error.contains("boom: disk on fire") && !error.contains("cleanup:"),
        "{error}"
    );
    assert_eq!(report["cleanup"]["complete"], json!(true), "{report}");
    let removed = &report["cleanup"]["resources"][0];
    assert_eq!(removed["resource"]["kind"], json!("instance"), "{report}");
    assert_eq!(removed["outcome"], json!("removed"), "{report}");
    assert!(
        run.stderr.contains("step `breaks` failed on i-"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("boom: disk on fire"), "{}", run.stderr);
    assert!(run.stderr.contains("(exit code 3)"), "{}", run.stderr);
    assert!(run.stderr.contains("removed instance i-"), "{}", run.stderr);
    assert!(aws.live_builders().is_empty(), "{:?}", aws.live_builders());
    assert_eq!(aws.builders().len(), 1);
    assert!(aws.kiln_images().is_empty());
    assert_eq!(aws.template_versions("rudder-dataplane"), before);
    // The third step never ran: the build folder has the logs of the first two only. (Counting
    // SendCommand cannot tell: the live reads of a running step's log are SendCommands too.)
    let mut logs: Vec<String> = std::fs::read_dir(log_dir.join("steps"))
        .expect("the step logs")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    logs.sort();
    assert_eq!(logs, ["01-ok.log", "02-breaks.log"]);
}

#[test]
fn an_invalid_recipe_exits_2_and_calls_no_aws_api() {
    let emulator = Emulator::seeded();
    emulator.clear_requests();
    let kiln = Kiln::new(&emulator);
    let recipe = kiln.write("bad.yaml", "name: Bad_Name\nversion: \"1\"\nsource: { image: ami-123 }\nbuilder: { instance_type: t3.micro, colour: red }\nsteps: []\n");
    let run = kiln.run(&["build", recipe.to_str().unwrap()]);
    run.assert_code(2);
    assert!(run.stderr.contains("bad.yaml:1:7:"), "{}", run.stderr);
    assert!(run.stderr.contains("bad.yaml:4:"), "{}", run.stderr);
    assert!(run.stderr.contains("colour"), "{}", run.stderr);
    assert!(
        emulator.kiln_requests().is_empty(),
        "{:?}",
        emulator.kiln_requests()
    );
    assert!(emulator.aws().builders().is_empty());
}

#[test]
fn sigint_during_a_step_exits_130_after_terminating_the_builder() {
    let emulator = Emulator::seeded();
    emulator.behaviour(json!({"commands": [{"match": "sleep-marker", "status": "Success", "in_progress_seconds": 60}]}));
    let aws = emulator.aws();
    let before = aws.template_versions("rudder-dataplane");
    let kiln = Kiln::new(&emulator);
    let recipe = kiln.write(
        "app.yaml",
        &recipe("  - name: slow\n    run: echo sleep-marker"),
    );
    let child = kiln.spawn(&["build", recipe.to_str().unwrap(), "--json"]);
    assert!(eventually(std::time::Duration::from_secs(30), || emulator
        .kiln_actions()
        .iter()
        .any(|a| a == "SendCommand")));
    send_signal(&child, libc::SIGINT);
    let run = finish(child);
    run.assert_code(130);
    let report = run.json();
    assert_eq!(report["interrupted"], json!("SIGINT"), "{report}");
    assert_eq!(report["failed_phase"], json!("step 1/1: slow"), "{report}");
    assert_eq!(report["cleanup"]["ran"], json!(true), "{report}");
    assert_eq!(
        report["cleanup"]["resources"][0]["outcome"],
        json!("removed"),
        "{report}"
    );
    assert!(
        run.stderr.contains("interrupted by SIGINT"),
        "{}",
        run.stderr
    );
    assert!(aws.live_builders().is_empty(), "{:?}", aws.live_builders());
    assert_eq!(aws.template_versions("rudder-dataplane"), before);
}

#[test]
fn without_a_volume_size_the_builder_gets_the_source_images_root_size() {
    let emulator = Emulator::seeded();
    let kiln = Kiln::new(&emulator);
    let recipe = kiln.write(
        "app.yaml",
        &recipe("  []").replace("  volume_size_gb: 10\n", ""),
    );
    kiln.run(&["build", recipe.to_str().unwrap(), "--no-release"])
        .assert_code(0);
    assert_eq!(emulator.aws().kiln_images().len(), 1);
}

#[test]
fn a_missing_launch_template_fails_before_anything_is_launched() {
    let emulator = Emulator::seeded();
    let kiln = Kiln::new(&emulator);
    let recipe = kiln.write(
        "app.yaml",
        &recipe("  []").replace(
            "launch_template: rudder-dataplane",
            "launch_template: no-such-template",
        ),
    );
    let run = kiln.run(&["build", recipe.to_str().unwrap(), "--json"]);
    run.assert_code(1);
    // Nothing was created: no build folder, no cleanup.
    let report = run.json();
    assert_eq!(report["log_dir"], Value::Null, "{report}");
    assert_eq!(report["cleanup"]["ran"], json!(false), "{report}");
    assert!(
        report["error"]
            .as_str()
            .unwrap()
            .contains("no-such-template"),
        "{report}"
    );
    assert!(
        run.stderr
            .contains("DescribeLaunchTemplateVersions failed for launch template no-such-template"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("in us-east-1"), "{}", run.stderr);
    assert!(emulator.aws().builders().is_empty());
    assert!(!emulator.kiln_actions().iter().any(|a| a == "RunInstances"));
}

/// The seconds of a plain line's RFC 3339 timestamp (`2026-11-28T03:15:02Z  …`).
fn stamp_seconds(line: &str) -> Option<u64> {
    let stamp = line.split_whitespace().next()?;
    let time = humantime::parse_rfc3339(stamp).ok()?;
    Some(time.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs())
}

#[test]
fn a_long_step_streams_its_output_with_v_and_keeps_it_whole() {
    let emulator = Emulator::seeded();
    // 40 lines of 1,000 characters over 8 s, then an error at the very end: SSM's invocation
    // keeps only the first 24,000 characters of stdout.
    let stdout: String = (1..=40)
        .map(|i| format!("line {i:02} {}\n", "x".repeat(992)))
        .collect();
    emulator.behaviour(json!({"commands": [{"match": "long-build", "status": "Failed", "in_progress_seconds": 8, "stdout": stdout, "stderr": "fatal: at the very end\n", "exit_code": 2}]}));
    let kiln = Kiln::new(&emulator);
    let recipe = kiln.write(
        "app.yaml",
        &recipe("  - name: long\n    run: echo long-build"),
    );
    let run = kiln.run(&["-v", "build", recipe.to_str().unwrap()]);
    run.assert_code(1);
    let streamed: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("│ line "))
        .collect();
    assert_eq!(streamed.len(), 40, "{}", run.stderr);
    let first = stamp_seconds(streamed[0]).expect("timestamped");
    let last = stamp_seconds(streamed[39]).expect("timestamped");
    assert!(
        last - first >= 4,
        "lines did not arrive over time:\n{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("│ fatal: at the very end"),
        "{}",
        run.stderr
    );
    // The failure shows the end of the output, which the invocation itself does not hold.
    let error = &run.stderr[run.stderr.find("step `long` failed").expect("the error")..];
    assert!(
        error.contains("fatal: at the very end") && error.contains("line 40 "),
        "{error}"
    );
    let log = kiln.path(".kiln/builds");
    let build = std::fs::read_dir(&log)
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    let saved = read(&build.join("steps/01-long.log"));
    assert!(
        saved.contains(&stdout) && saved.contains("fatal: at the very end\n"),
        "{}",
        saved.len()
    );
}

#[test]
fn on_error_abort_keeps_the_builder_gc_spares_it_and_resume_finishes_the_build() {
    let emulator = Emulator::seeded();
    emulator.behaviour(json!({"commands": [{"match": "broken-step", "status": "Failed", "stderr": "no such package\n", "exit_code": 1}]}));
    let aws = emulator.aws();
    let kiln = Kiln::new(&emulator);
    let steps =
        "  - name: first\n    run: echo first-step\n  - name: second\n    run: echo broken-step";
    let path = kiln.write("app.yaml", &recipe(steps));
    let path = path.to_str().unwrap();

    // CI is set in these tests: abort is refused unless forced.
    let refused = kiln.run(&["build", path, "--on-error=abort"]);
    refused.assert_code(2);
    assert!(
        refused.stderr.contains("--keep-in-ci"),
        "{}",
        refused.stderr
    );
    assert!(aws.builders().is_empty());

    let failed = kiln.run(&["build", path, "--on-error=abort", "--keep-in-ci", "--json"]);
    failed.assert_code(1);
    let report = failed.json();
    let build_id = report["build_id"].as_str().unwrap().to_owned();
    let kept = &report["cleanup"]["kept_builder"];
    let instance = kept["instance_id"].as_str().unwrap().to_owned();
    assert_eq!(
        kept["session_command"],
        json!(format!(
            "aws ssm start-session --target {instance} --region us-east-1"
        ))
    );
    assert!(kept["resume_command"]
        .as_str()
        .unwrap()
        .contains(&format!("--resume {build_id}")));
    assert!(
        kept["log"]
            .as_str()
            .unwrap()
            .ends_with("steps/02-second.log"),
        "{kept}"
    );
    assert!(
        failed
            .stderr
            .contains("aws ec2 terminate-instances --instance-ids"),
        "{}",
        failed.stderr
    );
    assert_eq!(aws.live_builders().len(), 1);

    let gc = kiln.run(&["gc", "--json"]);
    gc.assert_code(0);
    let spared = gc.json()["leftovers"].to_string();
    assert!(
        spared.contains("kept on purpose by `kiln build --on-error=abort`"),
        "{spared}"
    );
    assert_eq!(aws.live_builders().len(), 1);

    let fixed = kiln.write(
        "app.yaml",
        &recipe(&steps.replace("broken-step", "fixed-step")),
    );
    emulator.clear_requests();
    let resumed = kiln.run(&[
        "build",
        fixed.to_str().unwrap(),
        "--resume",
        &build_id,
        "--json",
    ]);
    resumed.assert_code(0);
    let actions = emulator.kiln_actions();
    assert!(!actions.iter().any(|a| a == "RunInstances"), "{actions:?}");
    let images = aws.kiln_images();
    assert_eq!(images.len(), 1);
    assert_eq!(images[0].tags.get("kiln:resumed-from"), Some(&build_id));
    assert!(aws.live_builders().is_empty());
}

#[test]
fn a_build_ends_with_its_summary_and_writes_its_events_as_ndjson() {
    let emulator = Emulator::seeded();
    emulator.behaviour(json!({"image_pending_seconds": 1}));
    let kiln = Kiln::new(&emulator);
    let recipe = kiln.write(
        "app.yaml",
        &recipe("  - name: install\n    run: echo install"),
    );
    emulator.clear_requests();
    let run = kiln.run(&[
        "build",
        recipe.to_str().unwrap(),
        "--events",
        "events.ndjson",
    ]);
    run.assert_code(0);
    // The summary: a row per phase, and the calls per service.
    assert!(
        run.stdout.contains("PHASE") && run.stdout.contains("step 1/1: install"),
        "{}",
        run.stdout
    );
    let sent = emulator.kiln_requests().len();
    let calls = run
        .stdout
        .lines()
        .find(|l| l.starts_with("AWS requests: EC2 "))
        .expect("requests line");
    assert!(calls.contains("SSM "), "{calls}");
    let total: usize = calls
        .rsplit_once('(')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("a total");
    // Nothing is retried here: the emulator saw exactly the calls kiln counted.
    assert_eq!(total, sent, "{calls}");

    let text = read(&kiln.path("events.ndjson"));
    let events: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
        .collect();
    let started: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == json!("started"))
        .map(|e| e["phase"].as_str().unwrap())
        .collect();
    assert_eq!(
        started.first(),
        Some(&"resolve source image"),
        "{started:?}"
    );
    assert!(started.contains(&"step 1/1: install"), "{started:?}");
    let step_end = events
        .iter()
        .find(|e| e["event"] == json!("finished") && e["step"] == json!("install"))
        .expect("the step's end");
    assert_eq!(step_end["index"], json!(1));
    assert!(events
        .iter()
        .all(|e| e["at"].as_str().is_some_and(|at| at.ends_with('Z'))));
    assert!(
        events.iter().any(|e| e["event"] == json!("progress")),
        "{text}"
    );
}

#[test]
fn a_step_that_asks_for_a_reboot_keeps_its_log_across_the_rerun() {
    let emulator = Emulator::seeded();
    // The script exits 194 once: the agent reboots the builder (offline for 3 s) and runs the
    // command again.
    emulator.behaviour(json!({"commands": [
        {"match": "echo reboot-me", "stdout": "before the reboot\nsecond line\n",
         "in_progress_seconds": 3, "reboots": 1, "reboot_seconds": 3}
    ]}));
    let kiln = Kiln::new(&emulator);
    let recipe = kiln.write(
        "app.yaml",
        &recipe("  - name: reboot\n    run: echo reboot-me"),
    );
    let run = kiln.run(&["build", recipe.to_str().unwrap(), "--json", "--no-release"]);
    run.assert_code(0);
    assert!(
        !run.stderr.contains("its output is what SSM kept"),
        "the live reader gave up during the reboot:\n{}",
        run.stderr
    );
    let log_dir = std::path::PathBuf::from(run.json()["log_dir"].as_str().unwrap().to_owned());
    let log = read(&log_dir.join("steps/01-reboot.log"));
    assert_eq!(log.matches("before the reboot").count(), 2, "{log}");
    let rerun = log
        .find(kiln::pipeline::script::RERUN_LINE)
        .expect("the rerun line");
    assert!(log.find("before the reboot").unwrap() < rerun, "{log}");
    assert!(log.rfind("before the reboot").unwrap() > rerun, "{log}");
}
