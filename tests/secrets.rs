//! Secret variables from the command line, a var file, the environment, SSM Parameter Store and
//! Secrets Manager: they reach the steps, nothing else sees them, only a build reads or needs
//! them, and the commands kiln suggests repeat the flags without the values.

use serde_json::json;

use crate::support::*;

/// Every file under `dir` except the var files the test wrote (kiln's input, holding values).
fn written_under(dir: &std::path::Path) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.ends_with("ci/vars.yaml") || path.ends_with("vars.yaml") {
            continue;
        }
        if path.is_dir() {
            text.push_str(&written_under(&path));
        } else {
            text.push_str(&format!("\n== {}\n", path.display()));
            text.push_str(&String::from_utf8_lossy(&std::fs::read(&path).unwrap()));
        }
    }
    text
}

fn secrets_recipe(vars: &str, steps: &str) -> String {
    recipe(steps).replace("steps:\n", &format!("vars:\n{vars}steps:\n"))
}

#[test]
fn values_from_every_source_reach_the_step_and_appear_nowhere_else() {
    let emulator = Emulator::seeded();
    let aws = emulator.aws();
    aws.block_on(
        aws.ssm
            .put_parameter()
            .name("/demo/api-key")
            .value("ssm-api-key-value-1")
            .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
            .send(),
    )
    .expect("PutParameter");
    aws.block_on(
        aws.secretsmanager
            .create_secret()
            .name("demo/db")
            .secret_string(r#"{"password":"sm-db-password-1","user":"app"}"#)
            .send(),
    )
    .expect("CreateSecret");
    let values = [
        "ssm-api-key-value-1",
        "sm-db-password-1",
        "var-file-token-1",
        "kiln-var-token-1",
        "env-source-value-1",
        "cli-var-token-1",
    ];
    emulator.behaviour(json!({"commands": [
        {"match": values.join(" "), "status": "Success", "stdout": format!("all values arrived: {}\n", values.join(" "))}
    ]}));
    let kiln = Kiln::new(&emulator);
    let vars = r#"  api_key: { secret: true, from: "ssm:/demo/api-key" }
  db_password: { secret: true, from: "secretsmanager:demo/db#password" }
  file_token: { value: "", secret: true }
  env_token: { value: "", secret: true }
  sourced: { secret: true, from: "env:DEMO_SOURCED" }
  cli_token: { value: "recipe-value-1", secret: true, from: "ssm:/demo/not-read" }
"#;
    let step = "  - name: use\n    run: echo {{ vars.api_key }} {{ vars.db_password }} {{ vars.file_token }} {{ vars.env_token }} {{ vars.sourced }} {{ vars.cli_token }}";
    let path = kiln.write("app.yaml", &secrets_recipe(vars, step));
    kiln.write("ci/vars.yaml", "file_token: var-file-token-1\n");
    let out = kiln
        .command(&[
            "-v",
            "build",
            path.to_str().unwrap(),
            "--var-file",
            "ci/vars.yaml",
            "--var",
            "cli_token=cli-var-token-1",
            "--manifest",
            "m.json",
            "--events",
            "events.ndjson",
        ])
        .env("KILN_VAR_env_token", "kiln-var-token-1")
        .env("DEMO_SOURCED", "env-source-value-1")
        .output()
        .expect("run kiln");
    let run = Run::from(out);
    run.assert_code(0);
    assert!(
        run.stderr
            .contains("all values arrived: *** *** *** *** *** ***"),
        "{}",
        run.stderr
    );
    // `--var` wins over `from:`: /demo/not-read was not asked for.
    assert_eq!(emulator.kiln_action_count("GetParameter"), 1);
    assert_eq!(emulator.kiln_action_count("GetSecretValue"), 1);
    let everything = format!(
        "{}{}{}",
        run.stdout,
        run.stderr,
        written_under(kiln.dir.path())
    );
    assert!(everything.contains("events.ndjson") && everything.contains("m.json"));
    for value in values {
        assert!(!everything.contains(value), "{value} leaked:\n{everything}");
    }
}

#[test]
fn commands_that_send_no_steps_neither_need_nor_read_secret_values_and_a_build_fails_before_creating_anything(
) {
    let emulator = Emulator::seeded();
    let aws = emulator.aws();
    let kiln = Kiln::new(&emulator);
    let vars = "  api_key: { secret: true, from: \"ssm:/demo/missing\" }\n  empty_key: { value: \"\", secret: true }\n";
    let step = "  - name: use\n    run: echo {{ vars.api_key }} {{ vars.empty_key }}";
    let path = kiln.write("app.yaml", &secrets_recipe(vars, step));
    let path = path.to_str().unwrap();
    for args in [
        vec!["validate", path],
        vec!["history", path],
        vec!["status", path],
        vec!["prune", path, "--dry-run"],
        vec!["rollback", path, "--dry-run"],
        vec!["release", path],
        vec!["iam-policy", path],
        vec!["gc", "--dry-run"],
    ] {
        let run = kiln.run(&args);
        assert!(
            !run.stderr.contains("secret variable"),
            "{args:?}: {}",
            run.stderr
        );
        assert!(
            run.code == 0 || args[0] == "rollback" || args[0] == "release",
            "{args:?} exited {}: {}",
            run.code,
            run.stderr
        );
    }
    assert_eq!(emulator.kiln_action_count("GetParameter"), 0);

    // A build refuses the empty secret before it connects...
    let empty = kiln.run(&["build", path]);
    empty.assert_code(2);
    assert!(
        empty
            .stderr
            .contains("secret variable `empty_key` is empty"),
        "{}",
        empty.stderr
    );
    // ...and with it given, fails on the parameter it cannot read, before creating anything.
    emulator.clear_requests();
    let missing = kiln.run(&["build", path, "--var", "empty_key=given-key-value"]);
    missing.assert_code(1);
    for part in [
        "could not read secret variable `api_key` (`from: ssm:/demo/missing`, ",
        "app.yaml:10:34)",
        "GetParameter failed for parameter /demo/missing in us-east-1: ParameterNotFound",
        "fix: create the parameter in us-east-1 (aws ssm put-parameter --region us-east-1 --type SecureString --name /demo/missing",
    ] {
        assert!(missing.stderr.contains(part), "{part}\n{}", missing.stderr);
    }
    assert_eq!(emulator.kiln_action_count("RunInstances"), 0);
    assert!(aws.builders().is_empty());
    // A `from: env:` whose variable is not set: exit 2, naming it.
    let env_path = kiln.write(
        "env.yaml",
        &secrets_recipe(
            "  api_key: { secret: true, from: \"env:DEMO_API_KEY\" }\n",
            "  - name: use\n    run: echo {{ vars.api_key }}",
        ),
    );
    let unset = kiln.run(&["build", env_path.to_str().unwrap()]);
    unset.assert_code(2);
    assert!(
        unset.stderr.contains(
            "the environment variable DEMO_API_KEY is not set\n  fix: export DEMO_API_KEY"
        ),
        "{}",
        unset.stderr
    );
    assert!(aws.builders().is_empty());
}

/// A secret that SSM reports on a `file:` or `check:` step's stderr (not the run wrapper's log)
/// is redacted on the terminal, in the step logs, in the error, the failure document, the
/// manifest and the event file; and the resume command repeats the flags, never the value.
#[test]
fn a_secret_on_the_ssm_stderr_of_a_file_or_check_step_is_redacted_everywhere() {
    const SECRET: &str = "stderr-secret-value-1";
    let emulator = Emulator::seeded();
    emulator.behaviour(json!({"commands": [
        {"match": "/etc/app/token.env", "status": "Failed", "exit_code": 1,
         "stderr": format!("install: token {SECRET} rejected by /etc/app\n")},
        {"match": "127.0.0.1:8080/token-check", "status": "Success",
         "stderr": format!("warning: answered for token {SECRET}\n")}
    ]}));
    let kiln = Kiln::new(&emulator);
    kiln.write("files/token.env.tmpl", "TOKEN={{ vars.token }}\n");
    kiln.write("vars.yaml", "flavour: plain-flavour\n");
    let vars = "  token: { value: \"\", secret: true }\n  flavour: vanilla\n";
    let file_step = "  - name: token file\n    file: { source: files/token.env.tmpl, destination: /etc/app/token.env, template: true }\n  - name: flavour\n    run: echo {{ vars.flavour }}";
    let failing = kiln.write("file.yaml", &secrets_recipe(vars, file_step));
    let run = kiln.run(&[
        "-v",
        "build",
        failing.to_str().unwrap(),
        "--var-file",
        "vars.yaml",
        "--var",
        &format!("token={SECRET}"),
        "--json",
        "--events",
        "failed-events.ndjson",
        "--on-error=abort",
        "--keep-in-ci",
    ]);
    run.assert_code(1);
    assert!(
        run.stderr
            .contains("install: token *** rejected by /etc/app"),
        "{}",
        run.stderr
    );
    let report = run.json();
    let build_id = report["build_id"].as_str().unwrap();
    assert_eq!(
        report["cleanup"]["kept_builder"]["resume_command"],
        json!(format!(
            "kiln build {} --var-file vars.yaml --var token=\"$TOKEN\" --resume {build_id} --region us-east-1",
            failing.display()
        ))
    );
    let check_step = "  - name: token check\n    check: { url: \"http://127.0.0.1:8080/token-check\", timeout: 1m }\n  - name: uses token\n    run: echo {{ vars.token }} {{ vars.flavour }}";
    let checked = kiln.write("check.yaml", &secrets_recipe(vars, check_step));
    let ok = kiln.run(&[
        "-v",
        "build",
        checked.to_str().unwrap(),
        "--var",
        &format!("token={SECRET}"),
        "--manifest",
        "m.json",
        "--events",
        "events.ndjson",
    ]);
    ok.assert_code(0);
    let written = written_under(kiln.dir.path());
    assert!(
        written.contains("install: token *** rejected by /etc/app"),
        "the failed file step's log:\n{written}"
    );
    assert!(
        written.contains("warning: answered for token ***"),
        "the check step's log:\n{written}"
    );
    let everything = format!(
        "{}{}{}{}{written}",
        run.stdout, run.stderr, ok.stdout, ok.stderr
    );
    assert!(
        !everything.contains(SECRET),
        "a secret leaked:\n{everything}"
    );
}

#[test]
fn var_files_apply_to_every_command_and_short_or_unknown_vars_are_refused_readably() {
    let kiln = Kiln::offline();
    let text = "name: app\nversion: \"2\"\nsource: { image: ami-0123456789abcdef0 }\nbuilder: { instance_type: t3.micro, iam_instance_profile: kiln-builder }\nvars:\n  greeting: hello\n  api_key: { value: \"\", secret: true }\nsteps:\n  - name: key\n    run: echo {{ vars.greeting }} {{ vars.api_key }}\n";
    let path = kiln.write("app.yaml", text);
    let path = path.to_str().unwrap();
    kiln.write("v.yaml", "version: \"3.1\"\ngreeting: from-the-file\n");
    let validated = kiln.run(&["validate", path, "--var-file", "v.yaml", "--json"]);
    validated.assert_code(0);
    let plan = validated.json();
    assert_eq!(plan["plan"]["version"], json!("3.1"));
    assert!(plan.to_string().contains("echo from-the-file"), "{plan}");
    for command in [
        "build",
        "history",
        "status",
        "release",
        "rollback",
        "prune",
        "iam-policy",
    ] {
        let run = kiln.run(&[command, path, "--var-file", "missing.yaml"]);
        run.assert_code(2);
        assert!(
            run.stderr.contains("missing.yaml: var file"),
            "{command}: {}",
            run.stderr
        );
    }
    let typo = kiln.run(&["validate", path, "--var", "greting=hi"]);
    typo.assert_code(2);
    assert!(
        typo.stderr.contains(
            "unknown variable greting (declared: api_key, greeting) (did you mean `greeting`?)"
        ),
        "{}",
        typo.stderr
    );
    // A one-letter secret is refused with the reason; no word of the message is garbled.
    let short = kiln.run(&["build", path, "--var", "api_key=x"]);
    short.assert_code(2);
    assert!(
        short.stderr.contains(
            "secret variable `api_key` from --var api_key is 1 character long: kiln refuses secrets shorter than 8 characters"
        ),
        "{}",
        short.stderr
    );
    assert!(!short.stderr.contains("***"), "{}", short.stderr);
}
