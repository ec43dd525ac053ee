//! The recipe schemas (`kiln schema`, `kiln schema --fragment`) and `kiln validate` agree, over
//! the good recipes and the bad-recipe corpus, with check-jsonschema (pinned in
//! scripts/lint-requirements.txt, installed into .tools/venv by `scripts/lint-shipping install`)
//! on the schema side:
//! - the schemas are valid JSON Schema, and every good recipe and included file matches its one;
//! - every recipe the schemas reject (the root or a file it includes), `kiln validate` rejects;
//! - every bad recipe is rejected by the schemas too, unless [`VALUE_LEVEL_ONLY`] says why a
//!   JSON Schema cannot see its problem (and that list holds only such cases).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::support::*;

/// Bad recipes that only `kiln build` refuses (the value is needed only to send steps).
const BUILD_ONLY: &[&str] = &["100-empty-secret"];

/// The bad recipes whose problem no JSON Schema of one file can see, and why.
const VALUE_LEVEL_ONLY: &[(&str, &str)] = &[
    (
        "07-anchor-and-alias",
        "YAML kiln refuses: anchors and aliases",
    ),
    ("09-yaml-tag", "YAML kiln refuses: tags"),
    ("56-unknown-variable", "templates: an undeclared variable"),
    (
        "57-unknown-variable-in-block-scalar",
        "templates: an undeclared variable",
    ),
    ("58-unknown-template-name", "templates: an unknown name"),
    ("59-unclosed-template", "templates: an unclosed `{{`"),
    ("61-include-cycle-two-files", "includes: a cycle"),
    ("62-include-cycle-three-files", "includes: a cycle"),
    ("63-include-self", "includes: a cycle"),
    ("64-include-outside-folder", "includes: where the file is"),
    ("65-include-symlink-escapes", "includes: where the file is"),
    ("66-include-missing", "includes: a missing file"),
    ("67-include-directory", "includes: a folder"),
    ("71-file-source-missing", "file sources: a missing file"),
    ("72-file-source-is-a-directory", "file sources: a folder"),
    (
        "73-file-source-outside-folder",
        "file sources: where the file is",
    ),
    ("77-file-template-not-utf8", "file sources: the content"),
    (
        "78-file-template-unknown-variable",
        "file sources: the content's templates",
    ),
    (
        "79-duplicate-step-names",
        "a rule between list items: unique step names",
    ),
    (
        "85-check-interval-not-shorter-than-timeout",
        "a rule between two durations",
    ),
    (
        "86-check-timeout-set-twice",
        "a rule between the step and its check",
    ),
    ("89-zero-timeout", "a duration's range"),
    ("90-huge-timeout", "a duration's range"),
    (
        "91-image-name-too-long-after-rendering",
        "a value after rendering",
    ),
    ("92-image-name-bad-character", "a value after rendering"),
    ("94-default-image-name-invalid", "a value after rendering"),
    ("100-empty-secret", "a value after `--var`s"),
    (
        "101-short-secret",
        "a value after `--var`s, `--var-file`s and the environment: a secret's length",
    ),
    (
        "101-verified-without-group",
        "a rule between release fields",
    ),
    (
        "102-refresh-settings-of-the-other-strategy",
        "a rule between release fields",
    ),
    (
        "103-bake-time-without-verified",
        "a rule between release fields",
    ),
    ("image-deprecate-after-too-far", "a duration's range"),
    ("image-deprecate-after-too-soon", "a duration's range"),
    (
        "image-share-default-key",
        "a rule between the image and the builder's key",
    ),
    (
        "test-without-subnet",
        "a rule between the test phase and the release",
    ),
];

/// kiln reports a builder without an instance profile only when nothing else is wrong (it would
/// hide the real problem); the schema reports it always. Cases that do not end at that problem
/// leave its schema error out.
const DEFERRED_PROFILE_PROBLEM: &str = "has no `iam_instance_profile`";

fn check_jsonschema() -> PathBuf {
    let tool = std::env::var_os("KILN_CHECK_JSONSCHEMA").map_or_else(
        || repo_root().join(".tools/venv/bin/check-jsonschema"),
        PathBuf::from,
    );
    assert!(
        tool.exists(),
        "check-jsonschema is not installed, so the schema agreement cannot be checked: run \
         `scripts/lint-shipping install` (installs the pinned tools of scripts/lint-requirements.txt \
         into .tools/venv), or set KILN_CHECK_JSONSCHEMA"
    );
    tool
}

/// One recipe to validate: its root, and the root with every file it includes.
struct Case {
    name: String,
    root: PathBuf,
    fragments: Vec<PathBuf>,
}

/// The files `file` includes (paths as written, relative to it); none when it does not parse.
fn includes(file: &Path) -> Vec<PathBuf> {
    let Ok(text) = std::fs::read_to_string(file) else {
        return Vec::new();
    };
    let Ok(node) = marked_yaml::parse_yaml(0, &text) else {
        return Vec::new();
    };
    let listed = node
        .as_mapping()
        .and_then(|map| map.get_sequence("include"))
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item.as_scalar())
                .map(|s| s.as_str().to_owned())
                .collect()
        })
        .unwrap_or_else(Vec::new);
    let dir = file.parent().expect("a file's folder");
    listed.into_iter().map(|path| dir.join(path)).collect()
}

fn case(name: &str, root: PathBuf) -> Case {
    let mut seen = BTreeSet::from([root.clone()]);
    let mut fragments = Vec::new();
    let mut queue = includes(&root);
    while let Some(file) = queue.pop() {
        if file.is_file() && seen.insert(file.clone()) {
            queue.extend(includes(&file));
            fragments.push(file);
        }
    }
    Case {
        name: name.to_owned(),
        root,
        fragments,
    }
}

fn good_cases(kiln: &Kiln) -> Vec<Case> {
    kiln.run(&["init", "starter"]).assert_code(0);
    let good = repo_root().join("tests/recipes/good");
    vec![
        case(
            "rudder-dataplane",
            repo_root().join("recipes/rudder-dataplane.yaml"),
        ),
        case(
            "full-featured",
            repo_root().join("tests/recipes/full-featured.yaml"),
        ),
        case("good/minimal", good.join("minimal.yaml")),
        case("good/filter-source", good.join("filter-source.yaml")),
        case("good/full", good.join("full/main.yaml")),
        case("kiln init", kiln.path("starter.yaml")),
    ]
}

fn bad_cases() -> Vec<Case> {
    let root = repo_root().join("tests/recipes/bad");
    let mut cases = Vec::new();
    for entry in std::fs::read_dir(&root)
        .expect("the corpus folder")
        .flatten()
    {
        let path = entry.path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            cases.push(case(&name, path.join("main.yaml")));
        } else if path.extension().is_some_and(|e| e == "yaml") {
            cases.push(case(&name, path));
        }
    }
    cases.sort_by(|a, b| a.name.cmp(&b.name));
    cases
}

/// Runs check-jsonschema with `schema` over `files`: the problems of each file that has some.
fn schema_problems(schema: &Path, files: &[&PathBuf]) -> BTreeMap<PathBuf, Vec<String>> {
    let mut problems: BTreeMap<PathBuf, Vec<String>> = BTreeMap::new();
    if files.is_empty() {
        return problems;
    }
    let output = Command::new(check_jsonschema())
        .args(["--output-format", "json", "--schemafile"])
        .arg(schema)
        .args(files)
        .output()
        .expect("run check-jsonschema");
    let report: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "check-jsonschema printed no JSON report ({e}), exit {:?}:\n{}\n{}",
            output.status.code(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    for error in report["errors"].as_array().into_iter().flatten() {
        let best = error["best_deep_match"]["message"]
            .as_str()
            .unwrap_or_default();
        let message = format!(
            "{}: {} {best}",
            error["path"].as_str().unwrap_or("?"),
            error["message"]
        );
        problems
            .entry(PathBuf::from(error["filename"].as_str().unwrap()))
            .or_default()
            .push(message);
    }
    for error in report["parse_errors"].as_array().into_iter().flatten() {
        let message = format!("does not parse: {}", error["message"]);
        problems
            .entry(PathBuf::from(error["filename"].as_str().unwrap()))
            .or_default()
            .push(message);
    }
    problems
}

/// The schema problems of every case: the root against the recipe schema, the files it includes
/// against the fragment schema.
fn problems_of(schemas: &Path, cases: &[Case]) -> Vec<Vec<String>> {
    let roots: Vec<&PathBuf> = cases.iter().map(|case| &case.root).collect();
    let fragments: Vec<&PathBuf> = cases.iter().flat_map(|case| &case.fragments).collect();
    let mut found = schema_problems(&schemas.join("recipe.schema.json"), &roots);
    found.extend(schema_problems(
        &schemas.join("fragment.schema.json"),
        &fragments,
    ));
    cases
        .iter()
        .map(|case| {
            std::iter::once(&case.root)
                .chain(&case.fragments)
                .flat_map(|file| {
                    let shown = file
                        .strip_prefix(repo_root())
                        .unwrap_or(file)
                        .display()
                        .to_string();
                    found
                        .get(file)
                        .into_iter()
                        .flatten()
                        .map(move |problem| format!("{shown}: {problem}"))
                })
                .collect()
        })
        .collect()
}

/// `kiln schema` and `kiln schema --fragment`, written where check-jsonschema reads them.
fn schemas(kiln: &Kiln) -> PathBuf {
    for (file, args) in [
        ("recipe.schema.json", vec!["schema"]),
        ("fragment.schema.json", vec!["schema", "--fragment"]),
    ] {
        let run = kiln.run(&args);
        run.assert_code(0);
        kiln.write(&format!("schemas/{file}"), &run.stdout);
    }
    let dir = kiln.path("schemas");
    let metaschema = Command::new(check_jsonschema())
        .arg("--check-metaschema")
        .args([
            dir.join("recipe.schema.json"),
            dir.join("fragment.schema.json"),
        ])
        .output()
        .expect("run check-jsonschema");
    assert!(
        metaschema.status.success(),
        "the schemas are not valid JSON Schema:\n{}",
        String::from_utf8_lossy(&metaschema.stdout)
    );
    dir
}

#[test]
fn the_schemas_accept_every_good_recipe_and_kiln_validate_too() {
    let kiln = Kiln::offline();
    let schemas = schemas(&kiln);
    let cases = good_cases(&kiln);
    for (case, problems) in cases.iter().zip(problems_of(&schemas, &cases)) {
        assert!(
            problems.is_empty(),
            "{}: the schema rejects a good recipe:\n{}",
            case.name,
            problems.join("\n")
        );
        // An empty secret is refused by a build only: other commands do not need its value.
        let command = if BUILD_ONLY.contains(&case.name.as_str()) {
            "build"
        } else {
            "validate"
        };
        let run = kiln.run(&[command, case.root.to_str().unwrap()]);
        assert_eq!(run.code, 0, "{}: {}", case.name, run.stderr);
    }
}

#[test]
fn every_bad_recipe_fails_the_schemas_unless_its_problem_is_value_level() {
    let kiln = Kiln::offline();
    let schemas = schemas(&kiln);
    let cases = bad_cases();
    assert!(cases.len() >= 90, "only {} cases", cases.len());
    let value_level: BTreeMap<&str, &str> = VALUE_LEVEL_ONLY.iter().copied().collect();
    let mut disagreements = Vec::new();
    for (case, problems) in cases.iter().zip(problems_of(&schemas, &cases)) {
        // An empty secret is refused by a build only: other commands do not need its value.
        let command = if BUILD_ONLY.contains(&case.name.as_str()) {
            "build"
        } else {
            "validate"
        };
        let run = kiln.run(&[command, case.root.to_str().unwrap()]);
        // Every recipe the schemas reject, kiln rejects: here every recipe is bad.
        if run.code != 2 {
            disagreements.push(format!(
                "{}: kiln validate exits {}, not 2",
                case.name, run.code
            ));
            continue;
        }
        let problems: Vec<&String> = problems
            .iter()
            .filter(|problem| {
                run.stderr.contains(DEFERRED_PROFILE_PROBLEM)
                    || !problem.contains("iam_instance_profile")
            })
            .collect();
        match (problems.is_empty(), value_level.get(case.name.as_str())) {
            (true, None) => disagreements.push(format!(
                "{}: kiln validate rejects it and the schemas accept it; kiln says:\n{}",
                case.name, run.stderr
            )),
            (false, Some(reason)) => disagreements.push(format!(
                "{}: listed as value-level only ({reason}), but the schemas reject it: {problems:?}",
                case.name
            )),
            _ => {}
        }
    }
    let names: BTreeSet<&str> = cases.iter().map(|case| case.name.as_str()).collect();
    for (name, _) in VALUE_LEVEL_ONLY {
        if !names.contains(name) {
            disagreements.push(format!(
                "{name}: listed as value-level only, but there is no such case"
            ));
        }
    }
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
}

/// A recipe the schemas reject (a wrong type in an included file, an unknown field), kiln
/// rejects: checked on recipes written for it, beyond the corpus.
#[test]
fn what_the_schemas_reject_kiln_validate_rejects() {
    let kiln = Kiln::offline();
    let schemas = schemas(&kiln);
    let base = "name: web\nversion: \"1.0\"\nsource: { image: ami-0123456789abcdef0 }\nbuilder: { instance_type: t3.large, iam_instance_profile: kiln-builder }\n";
    let variants = [
        (
            "include: [part.yaml]\n",
            "steps: [{ name: a, run: echo, timeout: 10 }]\n",
        ),
        ("include: [part.yaml]\n", "id: web\n"),
        (
            "include: [part.yaml]\n",
            "image: { share_with: [\"1234\"] }\n",
        ),
        ("release: { launch_template: web, strategy: fast }\n", ""),
        ("vars: { 1x: a }\n", ""),
        ("image: { tags: { aws:owner: me } }\n", ""),
        (
            "steps: [{ name: a, file: { source: x, destination: relative } }]\n",
            "",
        ),
    ];
    let mut cases = Vec::new();
    for (index, (root, part)) in variants.iter().enumerate() {
        let dir = format!("variant-{index}");
        kiln.write(&format!("{dir}/part.yaml"), part);
        let root = kiln.write(&format!("{dir}/main.yaml"), &format!("{base}{root}"));
        cases.push(case(&dir, root));
    }
    for (case, problems) in cases.iter().zip(problems_of(&schemas, &cases)) {
        assert!(!problems.is_empty(), "{}: the schemas accept it", case.name);
        // An empty secret is refused by a build only: other commands do not need its value.
        let command = if BUILD_ONLY.contains(&case.name.as_str()) {
            "build"
        } else {
            "validate"
        };
        let run = kiln.run(&[command, case.root.to_str().unwrap()]);
        assert_eq!(
            run.code, 2,
            "{}: the schemas reject it ({problems:?}), kiln accepts it",
            case.name
        );
    }
}
