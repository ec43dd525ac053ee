//! What CI users read: progress on stderr with `--json` too, step output streamed as it comes,
//! the end summary of a failed build, one sentence for an answer that is not AWS's, and the
//! Ctrl-C and `--resume` promises of `--on-error=abort`.

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::*;

/// A spawned kiln whose stderr lines are read as they come, each with the time it arrived.
fn run_timed(kiln: &Kiln, args: &[&str]) -> (Run, Vec<(Duration, String)>) {
    let started = Instant::now();
    let mut child = kiln.spawn(args);
    let stderr = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .map(|line| (started.elapsed(), line))
            .collect::<Vec<_>>()
    });
    let mut run = finish(child);
    let lines = reader.join().expect("stderr reader");
    run.stderr = lines.iter().map(|(_, l)| format!("{l}\n")).collect();
    assert_no_raw_sdk_error(&run.stdout, &run.stderr);
    (run, lines)
}

/// `2026-11-28T03:15:41Z    │ TEXT`: a plain progress line of a step's output.
fn is_timestamped_output(line: &str, text: &str) -> bool {
    let Some((stamp, rest)) = line.split_once("  ") else {
        return false;
    };
    stamp.len() == 20 && stamp.ends_with('Z') && rest.trim_start() == format!("│ {text}")
}

#[test]
fn with_json_stderr_streams_step_lines_as_they_are_written_with_their_time() {
    let emulator = Emulator::seeded();
    // Four lines written evenly over 9 s.
    emulator.behaviour(
        json!({"commands": [{"match": "stream-marker", "in_progress_seconds": 9,
        "stdout": "line-1\nline-2\nline-3\nline-4\n"}]}),
    );
    let kiln = Kiln::new(&emulator);
    let path = kiln.write(
        "app.yaml",
        &recipe("  - name: stream\n    run: echo stream-marker"),
    );
    let (run, lines) = run_timed(&kiln, &["build", path.to_str().unwrap(), "--json"]);
    run.assert_code(0);
    assert_eq!(run.json()["skipped"], json!(false));
    // --json changes stdout only: the plain progress lines are on stderr.
    assert!(
        run.stderr.contains("resolve source image ...")
            && run.stderr.contains("step 1/1: stream done"),
        "{}",
        run.stderr
    );
    let arrived = |text: &str| {
        let found: Vec<&(Duration, String)> = lines
            .iter()
            .filter(|(_, l)| l.contains(&format!("│ {text}")))
            .collect();
        assert_eq!(
            found.len(),
            1,
            "{text} shown once, timestamped:\n{}",
            run.stderr
        );
        assert!(is_timestamped_output(&found[0].1, text), "{:?}", found[0].1);
        found[0].0
    };
    let (first, last) = (arrived("line-1"), arrived("line-4"));
    let done = lines
        .iter()
        .find(|(_, l)| l.contains("step 1/1: stream done"))
        .map(|(at, _)| *at)
        .expect("the step's end");
    // Line by line as they come (reads every 2 s or so), not all at the step's end.
    assert!(
        last.saturating_sub(first) >= Duration::from_millis(2500)
            && done.saturating_sub(first) >= Duration::from_millis(2500),
        "line-1 at {first:?}, line-4 at {last:?}, step done at {done:?}:\n{}",
        run.stderr
    );
}

#[test]
fn a_failed_build_ends_with_the_same_summary_and_quiet_stays_quiet() {
    let emulator = Emulator::seeded();
    emulator.behaviour(
        json!({"commands": [{"match": "broken-step", "status": "Failed",
        "stdout": "half done\n", "exit_code": 3}]}),
    );
    let kiln = Kiln::new(&emulator);
    let path = kiln.write(
        "app.yaml",
        &recipe("  - name: broken\n    run: echo broken-step"),
    );
    let run = kiln.run(&["build", path.to_str().unwrap(), "-q"]);
    run.assert_code(1);
    let out = &run.stdout;
    assert!(out.contains(" failed in step 1/1: broken\n"), "{out}");
    for phase in [
        "resolve source image",
        "launch builder",
        "step 1/1: broken",
        "cleanup",
    ] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(phase) && l.split_whitespace().count() >= 3),
            "no row for {phase}:\n{out}"
        );
    }
    assert!(out.contains("PHASE") && out.contains("\ntotal "), "{out}");
    let requests = out
        .lines()
        .find(|l| l.starts_with("AWS requests: EC2 "))
        .unwrap_or_else(|| panic!("no requests line:\n{out}"));
    assert!(requests.contains("SSM "), "{requests}");
    // -q: no progress, no streamed output; the error still says what failed.
    assert!(!run.stderr.contains(" ..."), "{}", run.stderr);
    assert!(!run.stderr.contains("│ half done"), "{}", run.stderr);
    assert!(
        run.stderr.contains("step `broken` failed"),
        "{}",
        run.stderr
    );
}

/// Answers that are not AWS's, each with what its first body line reads as.
const FOREIGN: [(&str, &str, &[u8], &str); 4] = [
    (
        "200 OK",
        "text/html",
        b"<!DOCTYPE html>\n<html><body>Sign in</body></html>",
        "<!DOCTYPE html>",
    ),
    (
        "404 Not Found",
        "text/html",
        b"<html><body><h1>404 Not Found</h1></body></html>",
        "<html><body><h1>404 Not Found</h1></body></html>",
    ),
    (
        "500 Internal Server Error",
        "text/plain",
        b"Internal Server Error\nat line 3",
        "Internal Server Error",
    ),
    (
        "200 OK",
        "application/octet-stream",
        b"\x00\x01garbage{{{",
        "garbage{{{",
    ),
];

#[test]
fn every_command_against_an_endpoint_that_is_not_aws_says_so_in_one_sentence() {
    let recipe_text = recipe("  - name: install\n    run: echo hi");
    for (status, content_type, body, first_line) in FOREIGN {
        let url = foreign_endpoint(status, content_type, body);
        let kiln = Kiln::at(&url);
        let path = kiln.write("app.yaml", &recipe_text);
        let path = path.to_str().unwrap();
        let code = status.split_whitespace().next().unwrap();
        for args in [
            vec!["build", path],
            vec!["history", path],
            vec!["rollback", path, "--yes"],
            vec!["status", path],
            vec!["release", path],
            vec!["prune", path],
            vec!["gc"],
            vec!["iam-policy", path],
        ] {
            // One attempt: the SDK's retries of a 500 add nothing to the message.
            let out = kiln.command(&args).env("AWS_MAX_ATTEMPTS", "1").output();
            let run = Run::from(out.expect("run kiln"));
            let sentence = format!("the endpoint {url} answered HTTP {code}, which is not an AWS answer; its body begins `");
            let line = run
                .stderr
                .lines()
                .find(|l| l.contains(&sentence))
                .unwrap_or_else(|| panic!("{args:?} against {status}:\n{}", run.stderr));
            assert!(line.contains(first_line), "{args:?}: {line}");
            assert!(
                line.contains(" failed for ") && line.contains(" in us-east-1: "),
                "{args:?}: the operation and region: {line}"
            );
            if args[0] == "iam-policy" {
                // The policy is printed anyway; the lookups that failed are notes.
                run.assert_code(0);
                continue;
            }
            run.assert_code(1);
            assert!(
                run.stderr.contains("hint: ") && run.stderr.contains("AWS_ENDPOINT_URL"),
                "{args:?}: what to check:\n{}",
                run.stderr
            );
        }
    }
}

#[test]
fn a_foreign_answer_to_an_ssm_call_mid_build_is_one_sentence_and_the_build_cleans_up() {
    let emulator = Emulator::seeded();
    emulator.faults(
        json!({"rules": [{"action": "SendCommand", "fault": "foreign", "status": 404,
        "body": "<html><head><title>Not Found</title></head></html>", "count": -1}]}),
    );
    let aws = emulator.aws();
    let kiln = Kiln::new(&emulator);
    let path = kiln.write("app.yaml", &recipe("  - name: install\n    run: echo hi"));
    let run = kiln.run(&["build", path.to_str().unwrap()]);
    run.assert_code(1);
    assert!(
        run.stderr.contains("SendCommand failed for "),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(&format!(
            "the endpoint {} answered HTTP 404, which is not an AWS answer; its body begins `<html><head><title>Not Found</title></head></html>`",
            emulator.url
        )),
        "{}",
        run.stderr
    );
    assert!(aws.live_builders().is_empty(), "{:?}", aws.live_builders());
}

#[test]
fn sigint_with_on_error_abort_still_removes_the_builder() {
    let emulator = Emulator::seeded();
    emulator.behaviour(json!({"commands": [{"match": "sleep-marker", "in_progress_seconds": 60}]}));
    let aws = emulator.aws();
    let kiln = Kiln::new(&emulator);
    let path = kiln.write(
        "app.yaml",
        &recipe("  - name: slow\n    run: echo sleep-marker"),
    );
    let child = kiln.spawn(&[
        "build",
        path.to_str().unwrap(),
        "--on-error=abort",
        "--keep-in-ci",
        "--json",
    ]);
    assert!(
        eventually(Duration::from_secs(30), || emulator
            .kiln_actions()
            .iter()
            .any(|a| a == "SendCommand")),
        "the step never started"
    );
    let builder = aws.live_builders().pop().expect("a running builder");
    assert_eq!(builder.state, "running");
    send_signal(&child, libc::SIGINT);
    let run = finish(child);
    run.assert_code(130);
    let report = run.json();
    assert_eq!(report["interrupted"], json!("SIGINT"), "{report}");
    assert_eq!(report["cleanup"]["kept_builder"], Value::Null, "{report}");
    assert_eq!(aws.instance_state(&builder.id), "terminated");
    assert!(aws.live_builders().is_empty(), "{:?}", aws.live_builders());
}

#[test]
fn resume_refuses_a_changed_source_or_builder_and_says_at_which_step_it_goes_on() {
    let emulator = Emulator::seeded();
    emulator.behaviour(
        json!({"commands": [{"match": "broken-step", "status": "Failed", "exit_code": 1}]}),
    );
    let aws = emulator.aws();
    let kiln = Kiln::new(&emulator);
    let steps =
        "  - name: first\n    run: echo first-step\n  - name: second\n    run: echo broken-step";
    let text = recipe(steps);
    let path = kiln.write("app.yaml", &text);
    let path = path.to_str().unwrap();
    let failed = kiln.run(&["build", path, "--on-error=abort", "--keep-in-ci", "--json"]);
    failed.assert_code(1);
    let build_id = failed.json()["build_id"].as_str().unwrap().to_owned();
    let fixed = text.replace("broken-step", "fixed-step");

    let changes = [
        (
            "source",
            fixed.replace("\"al2023-ami-2023.*-x86_64\"", "\"al2023-ami-2023.*\""),
            "`source` changed",
        ),
        (
            "builder",
            fixed.replace("instance_type: t3.micro", "instance_type: t3.small"),
            "`builder.instance_type` changed",
        ),
    ];
    for (what, changed, says) in changes {
        kiln.write("app.yaml", &changed);
        let refused = kiln.run(&["build", path, "--resume", &build_id]);
        refused.assert_code(1);
        assert!(
            refused
                .stderr
                .contains(&format!("cannot resume build {build_id}"))
                && refused.stderr.contains(says),
            "{what}:\n{}",
            refused.stderr
        );
        assert!(
            aws.kiln_images().is_empty(),
            "{what}: refused before any image"
        );
    }

    kiln.write("app.yaml", &fixed);
    let resumed = kiln.run(&[
        "build",
        path,
        "--resume",
        &build_id,
        "--events",
        "events.ndjson",
    ]);
    resumed.assert_code(0);
    let resumed_at = format!("resuming build {build_id} on ");
    let events: Vec<Value> = read(&kiln.path("events.ndjson"))
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    let source = events
        .iter()
        .find(|e| e["event"] == json!("finished") && e["phase"] == json!("resolve source image"))
        .expect("the source phase's end");
    let result = source["result"].as_str().unwrap();
    assert!(
        result.contains(&resumed_at) && result.contains("at step 2/2 `second`"),
        "{result}"
    );
    assert!(
        resumed.stderr.contains("at step 2/2 `second`"),
        "{}",
        resumed.stderr
    );
}
