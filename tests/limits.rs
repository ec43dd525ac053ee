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

/// EC2's 50 tags per resource: an image whose recipe tags and kiln's would not fit is refused
/// before a builder is launched (the emulator, like AWS, would refuse its CreateImage after the
/// bake); one tag fewer than the room left builds.
#[test]
fn image_tags_beyond_ec2s_limit_are_refused_before_launching() {
    let emulator = Emulator::seeded();
    let kiln = Kiln::new(&emulator);
    let with_tags = |n: usize| {
        let tags: Vec<String> = (0..n).map(|i| format!("t{i:02}: v")).collect();
        recipe("  - name: install\n    run: echo hi").replace(
            "  tags: { app: demo }",
            &format!("  tags: {{ {} }}", tags.join(", ")),
        )
    };
    let path = kiln.write("many.yaml", &with_tags(45));
    emulator.clear_requests();
    let run = kiln.run(&["build", path.to_str().unwrap(), "--no-release"]);
    run.assert_code(1);
    assert!(
        run.stderr
            .contains("AWS allows 50 on a resource: `image.tags` has 45"),
        "{}",
        run.stderr
    );
    assert_eq!(emulator.kiln_action_count("RunInstances"), 0);
    let room: usize = run
        .stderr
        .split("keep `image.tags` to ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("the room left");
    let path = kiln.write("fits.yaml", &with_tags(room));
    kiln.run(&["build", path.to_str().unwrap(), "--no-release"])
        .assert_code(0);
}
