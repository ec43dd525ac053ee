//! A builder that dies: kiln says why, with the instance's state reason, and cleans up.

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
    let sends = emulator
        .kiln_actions()
        .iter()
        .filter(|a| *a == "SendCommand")
        .count();
    assert!(sends > 1, "never refused: {:?}", emulator.kiln_actions());
}
