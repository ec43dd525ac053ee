//! How kiln takes the SDK's settings from the user's environment: credentials that are missing
//! or expire during a build fail at once with the fix (never retried as a network problem), and
//! `AWS_MAX_ATTEMPTS` / the profile's `max_attempts` replace kiln's default retry count.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::*;

#[test]
fn missing_credentials_fail_at_once_with_the_fix() {
    let emulator = Emulator::seeded();
    let kiln = Kiln::new(&emulator);
    let path = kiln.write("app.yaml", &recipe("  - name: install\n    run: echo hi"));
    let out = kiln
        .command(&["build", path.to_str().unwrap()])
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .output()
        .expect("run kiln");
    let run = Run::from(out);
    run.assert_code(1);
    assert!(
        run.stderr
            .contains("CredentialsNotLoaded: no usable AWS credentials"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("aws sso login"), "{}", run.stderr);
    assert!(!run.stderr.contains("could not reach"), "{}", run.stderr);
}

/// A `credential_process` that answers short-lived keys until the file `revoked` exists.
fn expiring_credentials(kiln: &Kiln) -> std::path::PathBuf {
    let flag = kiln.path("revoked");
    let script = kiln.write(
        "creds.sh",
        &format!(
            "#!/bin/sh\nif [ -e '{flag}' ]; then echo 'the session has expired' >&2; exit 1; fi\n\
             exp=$(date -u -d '+2 seconds' +%Y-%m-%dT%H:%M:%SZ)\n\
             printf '{{\"Version\":1,\"AccessKeyId\":\"{KILN_ACCESS_KEY}\",\"SecretAccessKey\":\"testing\",\"Expiration\":\"%s\"}}' \"$exp\"\n",
            flag = flag.display()
        ),
    );
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    kiln.write(
        ".aws/config",
        &format!("[default]\ncredential_process = {}\n", script.display()),
    );
    flag
}

#[test]
fn credentials_that_expire_during_a_wait_fail_the_wait_at_once() {
    let emulator = Emulator::seeded();
    emulator.behaviour(json!({"instance_pending_seconds": 300}));
    let kiln = Kiln::new(&emulator);
    let flag = expiring_credentials(&kiln);
    let path = kiln.write("app.yaml", &recipe("  - name: install\n    run: echo hi"));
    let mut command = kiln.command(&["build", path.to_str().unwrap(), "--no-release"]);
    command
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = command.spawn().expect("spawn kiln");
    let launched = eventually(Duration::from_secs(30), || {
        emulator.kiln_actions().iter().any(|a| a == "RunInstances")
    });
    assert!(launched, "never launched: {:?}", emulator.kiln_actions());
    std::fs::write(&flag, "").expect("revoke");
    let revoked = Instant::now();
    let run = finish(child);
    run.assert_code(1);
    // Treated as transient, the wait would have looked again for two minutes.
    assert!(
        revoked.elapsed() < Duration::from_secs(60),
        "took {:?}",
        revoked.elapsed()
    );
    assert!(
        run.stderr.contains("CredentialsNotLoaded"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("the session has expired"),
        "{}",
        run.stderr
    );
}

/// kiln's default is 8 attempts; the user's setting, from the environment or the profile, wins.
#[test]
fn the_users_retry_settings_replace_kilns_default() {
    let emulator = Emulator::seeded();
    let kiln = Kiln::new(&emulator);
    let path = kiln.write("app.yaml", &recipe("  - name: install\n    run: echo hi"));
    let fail_twice = json!({"rules": [{"action": "DescribeImages", "fault": "503", "count": 2}]});
    let build = |extra: &[(&str, &str)]| {
        emulator.faults(fail_twice.clone());
        let mut command = kiln.command(&["build", path.to_str().unwrap(), "--no-release"]);
        for (k, v) in extra {
            command.env(k, v);
        }
        Run::from(command.output().expect("run kiln"))
    };
    build(&[]).assert_code(0);
    let run = build(&[("AWS_MAX_ATTEMPTS", "1")]);
    run.assert_code(1);
    assert!(
        run.stderr.contains("DescribeImages failed"),
        "{}",
        run.stderr
    );
    kiln.write(".aws/config", "[default]\nmax_attempts = 2\n");
    let run = build(&[]);
    run.assert_code(1);
    assert!(
        run.stderr.contains("DescribeImages failed"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_retry_setting_the_sdk_cannot_use_is_a_usage_error() {
    let emulator = Emulator::seeded();
    let kiln = Kiln::new(&emulator);
    let path = kiln.write("app.yaml", &recipe("  - name: install\n    run: echo hi"));
    for (variable, value) in [("AWS_RETRY_MODE", "legacy"), ("AWS_MAX_ATTEMPTS", "0")] {
        let out = kiln
            .command(&["build", path.to_str().unwrap()])
            .env(variable, value)
            .output()
            .expect("run kiln");
        let run = Run::from(out);
        run.assert_code(2);
        assert!(
            run.stderr.contains(&format!("{variable} is `{value}`")),
            "{}",
            run.stderr
        );
    }
    kiln.write(".aws/config", "[default]\nretry_mode = sometimes\n");
    let run = kiln.run(&["build", path.to_str().unwrap()]);
    run.assert_code(2);
    assert!(
        run.stderr
            .contains("`retry_mode` in the profile is `sometimes`"),
        "{}",
        run.stderr
    );
}

/// `scripts/emulator` as a user beside the test suite runs it: its own state dir and a free
/// port, documented in `--help`.
#[test]
fn the_emulator_script_runs_with_its_own_state_dir_and_port() {
    let script = repo_root().join("scripts/emulator");
    let help = std::process::Command::new(&script)
        .arg("--help")
        .output()
        .expect("scripts/emulator --help");
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    for words in [
        "--state-dir DIR",
        "KILN_EMULATOR_STATE_DIR",
        "--port N",
        "KILN_EMULATOR_PORT",
    ] {
        assert!(help.contains(words), "{words:?} not in:\n{help}");
    }
    let state = tempfile::tempdir().expect("tempdir");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(&script)
            .arg("--state-dir")
            .arg(state.path())
            .args(args)
            .output()
            .expect("scripts/emulator");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let url = run(&["start", "--port", "0"]);
    assert!(url.trim().starts_with("http://127.0.0.1:"), "{url}");
    assert!(state.path().join("emulator.pid").exists());
    assert!(run(&["seed"]).contains("auto_scaling_group"));
    run(&["stop"]);
    assert!(!state.path().join("emulator.pid").exists());
}
