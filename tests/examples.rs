//! The CI examples (`examples/nightly.yml`, `examples/release.yml`) as a pipeline would run them:
//! each step's `run:` script, taken from the workflow file as it is, runs under bash (`-eo
//! pipefail`, as GitHub runs it) against the emulator, with `kiln` and `jq` on PATH and a small
//! recipe in place of the RudderStack one. The held and released paths: a nightly stays green
//! and says it is held, a tag fails with exit 3 naming `kiln release`, the release job clears
//! the hold, and a tag then releases with its outputs set.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};

use marked_yaml::Node;
use serde_json::json;

use crate::support::*;

const RECIPE_IN_EXAMPLES: &str = "recipes/rudder-dataplane.yaml";

/// The `run:` script of step `step` of job `job` in `examples/<file>`.
fn step_script(file: &str, job: &str, step: &str) -> String {
    let path = repo_root().join("examples").join(file);
    let text = read(&path);
    let root = marked_yaml::parse_yaml(0, &text).expect("the example parses as YAML");
    let steps = root
        .as_mapping()
        .and_then(|m| m.get_node("jobs"))
        .and_then(Node::as_mapping)
        .and_then(|jobs| jobs.get_node(job))
        .and_then(Node::as_mapping)
        .and_then(|j| j.get_node("steps"))
        .and_then(Node::as_sequence)
        .unwrap_or_else(|| panic!("{file}: no job {job} with steps"));
    steps
        .iter()
        .filter_map(Node::as_mapping)
        .find(|s| {
            s.get_node("name")
                .and_then(Node::as_scalar)
                .is_some_and(|n| n.as_str() == step)
        })
        .and_then(|s| s.get_node("run"))
        .and_then(Node::as_scalar)
        .unwrap_or_else(|| panic!("{file}: job {job} has no step {step:?} with a run script"))
        .as_str()
        .to_owned()
}

/// What a step printed, its exit code, and the outputs it wrote to `$GITHUB_OUTPUT`.
struct StepRun {
    code: i32,
    stdout: String,
    stderr: String,
    outputs: BTreeMap<String, String>,
}

/// Runs `script` as GitHub runs a bash step, in the kiln scratch folder, with `env`.
fn run_step(kiln: &Kiln, recipe: &str, script: &str, env: &[(&str, &str)]) -> StepRun {
    let script = script.replace(RECIPE_IN_EXAMPLES, recipe);
    let output_file = kiln.path("github-output");
    std::fs::write(&output_file, "").unwrap();
    let kiln_bin = std::path::Path::new(env!("CARGO_BIN_EXE_kiln"));
    let path = format!(
        "{}:{}",
        kiln_bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let probe = kiln.command(&[]);
    let mut cmd = Command::new("bash");
    cmd.args(["--noprofile", "--norc", "-eo", "pipefail", "-c", &script])
        .current_dir(kiln.dir.path())
        .env_clear()
        .envs(probe.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .env("PATH", path)
        .env("GITHUB_OUTPUT", &output_file)
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run bash");
    let outputs = read(&output_file)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert_no_raw_sdk_error(
        &String::from_utf8_lossy(&out.stdout),
        &String::from_utf8_lossy(&out.stderr),
    );
    StepRun {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        outputs,
    }
}

#[test]
fn the_examples_keep_a_held_nightly_green_and_fail_a_held_tag_until_kiln_release() {
    let emulator = Emulator::seeded();
    let aws = emulator.aws();
    let kiln = Kiln::new(&emulator);
    let text = recipe("  - name: install\n    run: echo install").replace(
        "  keep: 2\n",
        "  keep: 2\n  auto_scaling_group: rudder-dataplane\n",
    );
    let recipe = kiln.write("app.yaml", &text);
    let recipe = recipe.to_str().unwrap();
    let nightly = step_script("nightly.yml", "bake", "build (or skip when unchanged)");
    let tag = step_script("release.yml", "release", "bake and release");
    let rollback = step_script("release.yml", "rollback", "roll back");
    let release = step_script("release.yml", "release-again", "release and clear the hold");

    // A nightly releases; a second image (forced) is released too; then a rollback holds.
    let first = run_step(&kiln, recipe, &nightly, &[]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert_eq!(first.outputs["release"], "released");
    kiln.run(&["build", recipe, "--force"]).assert_code(0);
    let rolled = run_step(&kiln, recipe, &rollback, &[("ROLLBACK_TO", "")]);
    assert_eq!(rolled.code, 0, "{}", rolled.stderr);
    assert!(
        rolled.stdout.contains("HELD at version"),
        "{}",
        rolled.stdout
    );
    let held = aws.template_versions("rudder-dataplane");

    // The nightly stays green, says it is held, and does not release.
    let nightly_run = run_step(&kiln, recipe, &nightly, &[]);
    assert_eq!(nightly_run.code, 0, "{}", nightly_run.stderr);
    assert_eq!(nightly_run.outputs["release"], "held");
    assert!(
        nightly_run
            .stdout
            .contains("::warning::built but not released"),
        "{}",
        nightly_run.stdout
    );
    // A tag fails with exit 3 and the command to run; nothing is released.
    let tagged = run_step(&kiln, recipe, &tag, &[("GITHUB_REF_NAME", "v2.0.0")]);
    assert_eq!(tagged.code, 3, "{}\n{}", tagged.stdout, tagged.stderr);
    assert!(
        tagged.stdout.contains("did NOT release it") && tagged.stdout.contains("kiln release"),
        "{}",
        tagged.stdout
    );
    assert!(!tagged.outputs.contains_key("version"));
    assert_eq!(aws.template_versions("rudder-dataplane").0, held.0);

    // The release job releases the newest image and clears the hold.
    let released = run_step(&kiln, recipe, &release, &[]);
    assert_eq!(released.code, 0, "{}", released.stderr);
    assert!(
        released.stdout.contains("hold cleared: yes")
            && released.stdout.contains("not held: builds release"),
        "{}",
        released.stdout
    );
    // Now a tag releases, and its outputs name the image and the version (never "null").
    let tagged = run_step(&kiln, recipe, &tag, &[("GITHUB_REF_NAME", "v2.0.1")]);
    assert_eq!(tagged.code, 0, "{}\n{}", tagged.stdout, tagged.stderr);
    let (default, _) = aws.template_versions("rudder-dataplane");
    assert_eq!(tagged.outputs["version"], default.to_string());
    assert_eq!(
        json!(tagged.outputs["image"]),
        json!(aws.template_image("rudder-dataplane", default))
    );
}
