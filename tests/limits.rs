//! SSM's size limits: a file goes up in as few commands as the 64 KB document limit allows
//! (the emulator refuses larger ones, as AWS does), and a `run` script that cannot fit in one
//! command is refused at validate time with its position.

use crate::support::*;

#[test]
fn a_large_file_goes_up_in_commands_near_ssms_limit() {
    let emulator = Emulator::seeded();
    let kiln = Kiln::new(&emulator);
    let content: Vec<u8> = (0..1024 * 1024)
        .map(|i: u32| (i * 31 % 251) as u8)
        .collect();
    std::fs::create_dir_all(kiln.path("files")).unwrap();
    std::fs::write(kiln.path("files/blob.bin"), &content).unwrap();
    let path = kiln.write(
        "app.yaml",
        &recipe("  - name: blob\n    file: { source: files/blob.bin, destination: /opt/blob.bin }"),
    );
    emulator.clear_requests();
    let run = kiln.run(&["build", path.to_str().unwrap(), "--no-release"]);
    run.assert_code(0);
    let sends = emulator.kiln_action_count("SendCommand");
    // 1 MiB in 44 KiB parts: 24 commands (24 KiB parts took 43).
    assert_eq!(sends, 24, "{:?}", emulator.kiln_actions());
}

#[test]
fn a_run_script_larger_than_one_command_is_refused_with_its_position() {
    let kiln = Kiln::offline();
    let big = format!("echo {}", "x".repeat(kiln::limits::RUN_SCRIPT_MAX_BYTES));
    let path = kiln.write(
        "app.yaml",
        &recipe(&format!(
            "  - name: small\n    run: echo ok\n  - name: big\n    run: {big}"
        )),
    );
    let run = kiln.run(&["validate", path.to_str().unwrap()]);
    run.assert_code(2);
    assert!(
        run.stderr.contains("app.yaml:13:10:"),
        "{}",
        &run.stderr[..run.stderr.len().min(600)]
    );
    assert!(
        run.stderr
            .contains("SSM Run Command takes at most 65536 bytes"),
        "{}",
        &run.stderr[..run.stderr.len().min(600)]
    );
    let fits = kiln.write(
        "fits.yaml",
        &recipe(&format!(
            "  - name: big\n    run: echo {}",
            "x".repeat(kiln::limits::RUN_SCRIPT_MAX_BYTES - 10)
        )),
    );
    kiln.run(&["validate", fits.to_str().unwrap()])
        .assert_code(0);
}
