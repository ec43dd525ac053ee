//! Bad input: the malformed-recipe corpus and bad command lines. Each must exit 2, say where the
//! problem is, and send no request to AWS (the emulator's request log proves it).

use std::path::{Path, PathBuf};

use crate::support::*;

/// (recipe to load, expectation file) for every case of the corpus.
fn corpus() -> Vec<(PathBuf, PathBuf)> {
    let root = repo_root().join("tests/recipes/bad");
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("the corpus folder")
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    let mut cases = Vec::new();
    for path in entries {
        if path.is_dir() {
            cases.push((path.join("main.yaml"), path.join("main.expect")));
        } else if path.extension().and_then(|e| e.to_str()) == Some("expect") {
            let recipe = ["yaml", "yml"]
                .iter()
                .map(|ext| path.with_extension(ext))
                .find(|p| p.exists());
            if let Some(recipe) = recipe {
                cases.push((recipe, path));
            }
        }
    }
    cases
}

fn expectations(expect: &Path, recipe: &Path) -> Vec<String> {
    let dir = recipe.parent().unwrap().display().to_string();
    read(expect)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| mask_timestamps(&l.replace("{dir}", &dir)))
        .collect()
}

/// Replaces `{{ timestamp }}` values (`20261125T212241Z`): the corpus was written at another time.
fn mask_timestamps(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let is_stamp = |i: usize| {
        i + 16 <= chars.len()
            && chars[i..i + 8].iter().all(char::is_ascii_digit)
            && chars[i + 8] == 'T'
            && chars[i + 9..i + 15].iter().all(char::is_ascii_digit)
            && chars[i + 15] == 'Z'
    };
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        if is_stamp(i) {
            out.push_str("<TIMESTAMP>");
            i += 16;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

#[test]
fn every_malformed_recipe_exits_2_with_its_position_and_no_aws_request() {
    let emulator = Emulator::start();
    let kiln = Kiln::new(&emulator);
    let cases = corpus();
    assert!(
        cases.len() >= 50,
        "only {} cases in the corpus",
        cases.len()
    );
    let mut failures = Vec::new();
    for (recipe, expect) in &cases {
        let run = kiln.run(&["build", recipe.to_str().unwrap()]);
        let wanted = expectations(expect, recipe);
        let stderr = mask_timestamps(&run.stderr);
        let missing: Vec<&String> = wanted
            .iter()
            .filter(|w| !stderr.contains(w.as_str()))
            .collect();
        if run.code != 2 || !missing.is_empty() {
            failures.push(format!(
                "{}: exit {} missing {missing:?}\n{}",
                recipe.display(),
                run.code,
                run.stderr
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    let requests = emulator.kiln_requests();
    assert!(
        requests.is_empty(),
        "invalid recipes made AWS requests: {requests:?}"
    );
}

#[test]
fn bad_command_lines_exit_2_without_aws_requests() {
    let emulator = Emulator::seeded();
    emulator.clear_requests();
    let kiln = Kiln::new(&emulator);
    let good = kiln.write("app.yaml", &recipe("  []"));
    let good = good.to_str().unwrap();
    let cases: Vec<Vec<&str>> = vec![
        vec![],
        vec!["bake"],
        vec!["build"],
        vec!["build", good, "--var", "novalue"],
        vec!["build", good, "--var", "=x"],
        vec!["build", good, "--var", "undeclared=1"],
        vec!["build", "does-not-exist.yaml"],
        vec!["build", good, "--frobnicate"],
        vec!["prune", good, "--keep", "0"],
        vec!["prune", good, "--keep", "many"],
        vec!["gc", "--older-than", "banana"],
        vec![
            "rollback",
            good,
            "--to",
            "1",
            "--image",
            "ami-0123456789abcdef0",
        ],
        vec!["rollback", good, "--allow-foreign"],
        vec!["rollback", good, "--to", "latest"],
        vec!["validate", good, "-q", "-v"],
    ];
    for args in &cases {
        let run = kiln.run(args);
        assert_eq!(run.code, 2, "kiln {args:?}\n{}", run.stderr);
        assert!(!run.stderr.trim().is_empty(), "kiln {args:?} said nothing");
    }
    assert!(
        emulator.kiln_requests().is_empty(),
        "{:?}",
        emulator.kiln_requests()
    );
    // A recipe without a release section cannot have a history.
    let bare = kiln.write(
        "bare.yaml",
        recipe("  []").split("release:").next().unwrap(),
    );
    let run = kiln.run(&["history", bare.to_str().unwrap()]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("release.launch_template"),
        "{}",
        run.stderr
    );
}

#[test]
fn validate_prints_the_plan_and_a_stable_fingerprint_without_aws() {
    let kiln = Kiln::offline();
    kiln.write("files/a.conf", "x=1\n");
    let text = "name: app\nversion: \"2\"\nsource: { image: ami-0123456789abcdef0 }\nbuilder: { instance_type: t3.micro, iam_instance_profile: kiln-builder }\nsteps:\n  - name: conf\n    file: { source: files/a.conf, destination: /etc/a.conf }\n";
    let path = kiln.write("app.yaml", text);
    let first = kiln.run(&["validate", path.to_str().unwrap()]);
    first.assert_code(0);
    assert!(
        first.stdout.contains("fingerprint  sha256:"),
        "{}",
        first.stdout
    );
    let again = kiln.run(&["validate", path.to_str().unwrap()]);
    assert_eq!(first.stdout, again.stdout);
    kiln.write("files/a.conf", "x=2\n");
    let changed = kiln.run(&["validate", path.to_str().unwrap()]);
    assert_ne!(first.stdout, changed.stdout);
    let json = kiln.run(&["validate", path.to_str().unwrap(), "--json"]);
    json.assert_code(0);
    assert!(json.json()["fingerprint"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
}

#[test]
fn the_shipped_recipe_validates_with_both_components() {
    let kiln = Kiln::offline();
    let path = repo_root().join("recipes/rudder-dataplane.yaml");
    let run = kiln.run(&["validate", path.to_str().unwrap(), "--json"]);
    run.assert_code(0);
    let plan = run.json()["plan"].clone();
    let files = plan["files"].to_string();
    assert!(
        files.contains("backend.yaml") && files.contains("transformer.yaml"),
        "{files}"
    );
    let steps = plan["steps"].to_string();
    assert!(
        steps.contains("rudder-server -v") && steps.contains("http://127.0.0.1:9090/health"),
        "{steps}"
    );
    assert_eq!(
        plan["release"]["launch_template"],
        serde_json::json!("rudder-dataplane")
    );
}

#[test]
fn validate_renders_build_time_values_and_only_a_build_refuses_an_empty_secret() {
    let kiln = Kiln::offline();
    let text = "name: app\nversion: \"2\"\nsource: { image: ami-0123456789abcdef0 }\nbuilder: { instance_type: t3.micro, iam_instance_profile: kiln-builder }\nvars:\n  api_key: { value: \"\", secret: true }\nsteps:\n  - name: key\n    run: echo {{ vars.api_key }}\nimage:\n  name: \"app-{{ build_id }}-{{ timestamp }}\"\n  ssm_parameter: \"/app/{{ build_id }}\"\n";
    let path = kiln.write("app.yaml", text);
    let path = path.to_str().unwrap();
    // `kiln validate` sends no steps: it needs no secret value.
    let validated = kiln.run(&["validate", path]);
    validated.assert_code(0);
    assert!(
        validated.stdout.contains("app-00000000t000000000z-000000-"),
        "{}",
        validated.stdout
    );
    // A build refuses it before any AWS call (this kiln talks to nothing).
    let empty = kiln.run(&["build", path]);
    empty.assert_code(2);
    assert!(
        empty
            .stderr
            .contains("app.yaml:6:3: secret variable `api_key` is empty")
            && empty.stderr.contains("--var api_key=VALUE")
            && empty.stderr.contains("allow_empty: true"),
        "{}",
        empty.stderr
    );
    let allowed = kiln.write(
        "allowed.yaml",
        &text.replace("secret: true", "secret: true, allow_empty: true"),
    );
    let offline = kiln.run(&["build", allowed.to_str().unwrap()]);
    assert!(
        !offline.stderr.contains("secret variable"),
        "{}",
        offline.stderr
    );
}

#[test]
fn init_writes_a_starter_recipe_that_validates_and_never_overwrites() {
    let kiln = Kiln::offline();
    let init = kiln.run(&["init", "my-app"]);
    init.assert_code(0);
    assert!(init.stdout.contains("wrote my-app.yaml"), "{}", init.stdout);
    // Editors find the schema through the modeline: the file it names is next to the recipe,
    // and is what `kiln schema` prints.
    let recipe = read(&kiln.path("my-app.yaml"));
    assert!(
        recipe.starts_with("# yaml-language-server: $schema=recipe.schema.json\n"),
        "{recipe}"
    );
    assert_eq!(
        read(&kiln.path("recipe.schema.json")),
        kiln.run(&["schema"]).stdout
    );
    let validate = kiln.run(&["validate", "my-app.yaml", "--json"]);
    validate.assert_code(0);
    assert_eq!(
        validate.json()["plan"]["release"]["launch_template"],
        serde_json::json!("my-app")
    );
    assert!(validate.stderr.is_empty(), "{}", validate.stderr);
    let again = kiln.run(&["init", "my-app"]);
    again.assert_code(2);
    assert!(again.stderr.contains("already exists"), "{}", again.stderr);
    kiln.run(&["init", "Bad_Name"]).assert_code(2);
}

#[test]
fn shell_completions_and_the_man_page_come_from_the_command_line_definition() {
    let kiln = Kiln::offline();
    for (shell, marker) in [
        ("bash", "_kiln()"),
        ("zsh", "#compdef kiln"),
        ("fish", "complete -c kiln"),
    ] {
        let run = kiln.run(&["completions", shell]);
        run.assert_code(0);
        assert!(run.stdout.contains(marker), "{shell}: {}", run.stdout);
        assert!(
            run.stdout.contains("--on-error") && run.stdout.contains("validate"),
            "{shell}"
        );
    }
    kiln.run(&["completions", "tcsh"]).assert_code(2);
    let man = kiln.run(&["man"]);
    man.assert_code(0);
    assert!(
        man.stdout.contains(".TH kiln 1") && man.stdout.contains("iam\\-policy"),
        "{}",
        man.stdout
    );
}

/// Each shell completes a recipe path where a command takes the recipe, directories for
/// `--state-dir`, files for `--manifest`, and the closed values of a flag (`--on-error`).
#[test]
fn completions_offer_recipe_paths_and_flag_values() {
    let kiln = Kiln::offline();
    let zsh = kiln.run(&["completions", "zsh"]).stdout;
    for wanted in [
        "':recipe -- The recipe file:_files'",
        ":DIR:_files -/'",
        ":PATH:_files'",
        ":ON_ERROR:(cleanup abort)'",
    ] {
        assert!(zsh.contains(wanted), "zsh: no {wanted}");
    }
    let fish = kiln.run(&["completions", "fish"]).stdout;
    for wanted in [
        "-l manifest -d 'Also write the manifest to this file' -r -F",
        "-l state-dir -d 'Where builds keep their journal, step logs and manifest' -r -f -a \"(__fish_complete_directories)\"",
        "-l on-error",
        "-a \"cleanup\\t",
    ] {
        assert!(fish.contains(wanted), "fish: no {wanted}");
    }
    // bash: run the script. The recipe position completes files; a flag's closed set its values.
    let bash = kiln.write("kiln.bash", &kiln.run(&["completions", "bash"]).stdout);
    kiln.write("web.yaml", "");
    let complete = |words: &str| {
        let script = format!(
            "source {}; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); \
             _kiln_file_argument kiln \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"; echo \"${{COMPREPLY[*]}}\"",
            bash.display()
        );
        let output = std::process::Command::new("bash")
            .args(["-c", &script])
            .current_dir(kiln.dir.path())
            .output()
            .expect("run bash");
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    };
    assert_eq!(complete("kiln validate we"), "web.yaml");
    assert_eq!(complete("kiln build we"), "web.yaml");
    assert_eq!(
        complete("kiln build web.yaml --on-error ''"),
        "cleanup abort"
    );
    assert!(complete("kiln gc ''").contains("--older-than"));
}

/// kiln(1) names a page per command (kiln-build(1), ...): `kiln man COMMAND` prints it, and
/// `kiln man --dir DIR` writes kiln.1 and every page kiln(1) names.
#[test]
fn every_command_has_a_man_page_of_its_own() {
    let kiln = Kiln::offline();
    let overview = kiln.run(&["man"]).stdout;
    let named: Vec<String> = overview
        .lines()
        .filter_map(|line| line.strip_prefix("kiln\\-")?.strip_suffix("(1)"))
        .map(|name| name.replace("\\-", "-"))
        .collect();
    assert!(named.len() >= 13, "{named:?}");
    let build = kiln.run(&["man", "build"]);
    build.assert_code(0);
    assert!(
        build.stdout.contains(".TH kiln-build 1"),
        "{}",
        build.stdout
    );
    assert!(
        build.stdout.contains("\\-\\-on\\-error"),
        "{}",
        build.stdout
    );
    kiln.run(&["man", "frobnicate"]).assert_code(2);
    let written = kiln.run(&["man", "--dir", "man1"]);
    written.assert_code(0);
    let dir = kiln.path("man1");
    assert!(dir.join("kiln.1").is_file());
    for name in &named {
        let page = read(&dir.join(format!("kiln-{name}.1")));
        assert!(
            page.contains(&format!(".TH kiln-{name} 1")),
            "kiln-{name}.1"
        );
        assert!(
            written.stdout.contains(&format!("kiln-{name}.1")),
            "{}",
            written.stdout
        );
    }
}
