//! Tests of [`load_plan`] as a whole: the good recipes, templating positions, the digest's
//! properties, complete messages, and the corpus of bad recipes in `tests/recipes/bad`.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{load_plan, Diagnostic, LoadOptions, SecretValues};
use crate::plan::{Plan, SourceSpec, StepKind};

/// 2026-11-25T21:22:41Z
fn build_time() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_795_641_761)
}

/// A build's options: secret values are needed.
fn options() -> LoadOptions {
    LoadOptions {
        now: build_time(),
        build_id: "b-42".into(),
        secrets: SecretValues::Build,
        ..LoadOptions::without_build(Vec::new())
    }
}

fn options_with_vars(vars: &[(&str, &str)]) -> LoadOptions {
    LoadOptions {
        vars: vars
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect(),
        ..options()
    }
}

/// The repository holding `tests/recipes`: `KILN_REPO` when set, else this crate's manifest
/// folder when it has the corpus, else the folder three levels above this source file (for
/// builds that compile these sources from another crate).
fn repo_root() -> PathBuf {
    if let Some(repo) = std::env::var_os("KILN_REPO") {
        return PathBuf::from(repo);
    }
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    if manifest_dir.join("tests/recipes").is_dir() {
        return manifest_dir;
    }
    Path::new(file!())
        .ancestors()
        .nth(3)
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn good(relative: &str) -> PathBuf {
    repo_root().join("tests/recipes/good").join(relative)
}

fn load_ok(path: &Path, options: &LoadOptions) -> Plan {
    match load_plan(path, options) {
        Ok(plan) => plan,
        Err(problems) => panic!(
            "{} failed to load:\n{}",
            path.display(),
            rendered(&problems)
        ),
    }
}

fn load_err(path: &Path, options: &LoadOptions) -> Vec<String> {
    match load_plan(path, options) {
        Ok(plan) => panic!("{} loaded but should not: {plan:?}", path.display()),
        Err(problems) => problems.iter().map(ToString::to_string).collect(),
    }
}

fn rendered(problems: &[Diagnostic]) -> String {
    problems
        .iter()
        .map(Diagnostic::render)
        .collect::<Vec<_>>()
        .join("\n")
}

/// A scratch folder with files; paths in messages are `<folder>/<name>`.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Self {
        Scratch {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn write(&self, name: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let path = self.dir.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&path, content).expect("write");
        path
    }

    fn shown(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

const HEADER: &str = "name: web\nversion: \"1.0\"\nsource: { image: ami-0123456789abcdef0 }\nbuilder: { instance_type: t3.large, iam_instance_profile: kiln-builder }\n";

fn step_names(plan: &Plan) -> Vec<&str> {
    plan.steps.iter().map(|step| step.name.as_str()).collect()
}

fn script_of<'p>(plan: &'p Plan, step: &str) -> &'p str {
    match plan
        .steps
        .iter()
        .find(|candidate| candidate.name == step)
        .map(|step| &step.kind)
    {
        Some(StepKind::Run { script }) => script,
        other => panic!("no run step `{step}`: {other:?}"),
    }
}

#[test]
fn minimal_recipe_gets_every_default() {
    let plan = load_ok(&good("minimal.yaml"), &options());
    assert_eq!(plan.name, "plain");
    assert!(plan.steps.is_empty());
    assert!(plan.builder.imdsv2_required && plan.builder.encrypted);
    assert_eq!(plan.builder.associate_public_ip, None);
    assert_eq!(plan.image.name, "plain-1.0-20261125T212241Z");
    assert_eq!(plan.timeouts, crate::plan::Timeouts::default());
    assert!(plan.release.is_none());
    assert!(plan.secrets.is_empty());
    assert_eq!(plan.digest.len(), 64);
}

#[test]
fn a_builder_without_an_instance_profile_needs_the_default_host_management_opt_out() {
    let scratch = Scratch::new();
    let base = "name: web\nversion: \"1.0\"\nsource: { image: ami-0123456789abcdef0 }\n";
    let refused = scratch.write(
        "refused.yaml",
        format!("{base}builder: {{ instance_type: t3.large }}\n"),
    );
    let problems = load_err(&refused, &options());
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("refused.yaml:4:1: `builder` has no `iam_instance_profile`"),
        "{problems:?}"
    );
    let opted_out = scratch.write(
        "dhmc.yaml",
        format!("{base}builder: {{ instance_type: t3.large, default_host_management: true }}\n"),
    );
    let plan = load_ok(&opted_out, &options());
    assert!(plan.builder.default_host_management);
    assert_eq!(plan.builder.iam_instance_profile, None);
    // Only set, it enters the digest: recipes without it keep theirs.
    let with_profile = scratch.write(
        "profile.yaml",
        format!("{base}builder: {{ instance_type: t3.large, iam_instance_profile: p }}\n"),
    );
    assert!(
        !load_ok(&with_profile, &options())
            .builder
            .default_host_management
    );
}

#[test]
fn includes_merge_in_contract_order() {
    let plan = load_ok(&good("full/main.yaml"), &options());
    assert_eq!(
        step_names(&plan),
        [
            "base packages",
            "transformer user",
            "install transformer",
            "config",
            "transformer is healthy"
        ]
    );
    let root = good("full/main.yaml");
    let parts = good("full/parts");
    assert_eq!(
        plan.files,
        [
            root.clone(),
            parts.join("base.yaml"),
            parts.join("transformer.yaml"),
            parts.join("transformer-user.yaml"),
        ]
    );
    // The root's vars and tags win per key; other keys come from the includes.
    assert!(script_of(&plan, "install transformer").contains("echo \"9090 ${HOME}\""));
    let tags: Vec<(&str, &str)> = plan
        .image
        .tags
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        tags,
        [("app", "rudder"), ("owner", "platform"), ("team", "data")]
    );
    assert_eq!(plan.image.name, "rudder-dataplane-1.83.0-20261125T212241Z");
    assert_eq!(
        plan.image.description.as_deref(),
        Some("Rudder dataplane 1.83.0, built 20261125T212241Z")
    );
    let release = plan.release.as_ref().expect("release");
    assert_eq!((release.keep, release.set_default), (3, true));
    assert_eq!(release.instance_warmup, Duration::from_secs(90));
    assert_eq!(plan.timeouts.image_available, Duration::from_secs(90 * 60));
    assert_eq!(plan.timeouts.ssm_online, Duration::from_secs(10 * 60));
    assert_eq!(plan.recipe_path, root);
}

#[test]
fn step_defaults_and_file_and_check_steps() {
    let plan = load_ok(&good("full/main.yaml"), &options());
    let timeouts: Vec<u64> = plan
        .steps
        .iter()
        .map(|step| step.timeout.as_secs())
        .collect();
    assert_eq!(timeouts, [1800, 1800, 1200, 300, 120]);
    match &plan.steps[3].kind {
        StepKind::File {
            source,
            content,
            destination,
            mode,
            owner,
        } => {
            assert_eq!(source, &good("full/files/rudder.env.tmpl"));
            let content = String::from_utf8(content.clone()).expect("utf-8");
            assert_eq!(
                content,
                "# written by kiln for rudder-dataplane 1.83.0\nTRANSFORMER_PORT=9090\nDB_PASSWORD=\nHOME_DIR=${HOME}\n"
            );
            assert_eq!(
                (destination.as_str(), *mode, owner.as_deref()),
                ("/etc/rudderstack/env", 0o640, Some("root:rudder"))
            );
        }
        other => panic!("expected a file step, got {other:?}"),
    }
    match &plan.steps[4].kind {
        StepKind::Check {
            url,
            expect_status,
            expect_body,
            interval,
        } => {
            assert_eq!(url, "http://127.0.0.1:9090/health");
            assert_eq!(
                (*expect_status, expect_body.as_deref()),
                (200, Some("\"UP\""))
            );
            assert_eq!(*interval, Duration::from_secs(2));
        }
        other => panic!("expected a check step, got {other:?}"),
    }
}

#[test]
fn filter_source_and_builder_fields() {
    let plan = load_ok(&good("filter-source.yaml"), &options());
    assert_eq!(
        plan.source,
        SourceSpec::Filter {
            name: "al2023-ami-2023.*-arm64".into(),
            owners: vec!["amazon".into()],
            architecture: Some("arm64".into()),
        }
    );
    assert_eq!(plan.version, "2.4.1");
    assert_eq!(
        plan.builder.security_group_ids,
        ["sg-0123abcd", "sg-4567ef01"]
    );
    assert_eq!(
        (
            plan.builder.volume_size_gb,
            plan.builder.associate_public_ip
        ),
        (Some(30), Some(false))
    );
    assert_eq!(plan.image.name, "api-node 2.4.1 (b-42)");
    assert_eq!(plan.image.share_with, ["012345678901"]);
    // Regions as plain names or `{ region, kms_key_id }`; keys for the builder and each copy.
    assert_eq!(plan.image.regions, ["us-east-1", "eu-west-1"]);
    assert_eq!(plan.builder.kms_key_id.as_deref(), Some("alias/api-node"));
    assert_eq!(
        plan.image.region_kms_keys["eu-west-1"],
        "arn:aws:kms:eu-west-1:012345678901:alias/api-node"
    );
    assert!(plan.image.require_imdsv2);
    assert!(script_of(&plan, "install").contains("echo \"${HOSTNAME:-unknown}\" > /etc/motd"));
}

#[test]
fn an_instance_type_list_is_tried_in_order_and_keys_change_the_digest() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = |builder: &str| {
        format!(
            "name: web\nversion: \"1.0\"\nsource:\n  image: ami-0123456789abcdef0\nbuilder:\n  iam_instance_profile: kiln-builder\n{builder}"
        )
    };
    let load = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        load_ok(&path, &options())
    };
    let listed = load(
        "a.yaml",
        recipe("  instance_type: [m7i.large, m6i.large, m5.large]\n"),
    );
    assert_eq!(listed.builder.instance_type, "m7i.large");
    assert_eq!(
        listed.builder.fallback_instance_types,
        ["m6i.large", "m5.large"]
    );
    let one = load("b.yaml", recipe("  instance_type: m7i.large\n"));
    assert!(one.builder.fallback_instance_types.is_empty());
    let keyed = load(
        "c.yaml",
        recipe("  instance_type: m7i.large\n  kms_key_id: alias/web\n"),
    );
    assert_ne!(one.digest, keyed.digest);
    assert_ne!(one.digest, listed.digest);
}

#[test]
fn cli_vars_override_values_version_and_secrets_are_redacted() {
    let vars = [
        ("version", "1.84.0-rc.1"),
        ("db_password", "s3cr3t!pw"),
        ("transformer_port", "7070"),
    ];
    let plan = load_ok(&good("full/main.yaml"), &options_with_vars(&vars));
    assert_eq!(plan.version, "1.84.0-rc.1");
    assert_eq!(
        plan.image.name,
        "rudder-dataplane-1.84.0-rc.1-20261125T212241Z"
    );
    assert_eq!(plan.secrets, ["s3cr3t!pw"]);
    let script = script_of(&plan, "install transformer");
    assert!(script.contains("PGPASSWORD='s3cr3t!pw'"), "{script}");
    assert!(script.contains("echo \"7070 ${HOME}\""));
    assert_eq!(
        plan.redact(script),
        "set -euo pipefail\necho \"7070 ${HOME}\"\nPGPASSWORD='***' psql -c 'select 1'\n"
    );
    assert!(!format!("{plan:?}").contains("s3cr3t!pw"));
}

#[test]
fn unknown_and_invalid_cli_vars() {
    let problems = load_err(
        &good("full/main.yaml"),
        &options_with_vars(&[("nope", "1"), ("version", "1 0")]),
    );
    assert_eq!(
        problems,
        [
            "--var: unknown variable nope (declared: db_password, transformer_port)",
            "--var: `version` is not a valid version: `1 0` (1 to 64 characters of A-Z, a-z, 0-9, `.`, `_`, `+` and `-`)",
        ]
    );
}

#[test]
fn unknown_variable_positions_inside_block_and_plain_scalars() {
    let scratch = Scratch::new();
    let recipe = scratch.write(
        "x.yaml",
        format!(
            "{HEADER}vars: {{ port: \"1\" }}\nsteps:\n  - name: a\n    run: |\n      set -eu\n      echo ${{HOME}} {{{{vars.port}}}} {{{{ vars.prot }}}}\n  - name: b\n    run: \"echo {{{{ vars.nope }}}}\"\n"
        ),
    );
    let shown = scratch.shown("x.yaml");
    assert_eq!(
        load_err(&recipe, &options()),
        [
            format!(
                "{shown}:10:34: unknown variable `prot` in `{{{{ vars.prot }}}}` (declared: port)"
            ),
            format!(
                "{shown}:12:16: unknown variable `nope` in `{{{{ vars.nope }}}}` (declared: port)"
            ),
        ]
    );
}

#[test]
fn literal_braces_and_shell_syntax_survive_rendering() {
    let scratch = Scratch::new();
    let recipe = scratch.write(
        "x.yaml",
        format!("{HEADER}steps:\n  - name: a\n    run: |\n      echo '{{{{ \"{{{{\" }}}} x }}}}' ${{A:-b}} $C {{ }}\n"),
    );
    let plan = load_ok(&recipe, &options());
    assert_eq!(script_of(&plan, "a"), "echo '{{ x }}' ${A:-b} $C { }\n");
}

#[test]
fn secrets_are_refused_where_aws_would_store_them() {
    let scratch = Scratch::new();
    let recipe = scratch.write(
        "x.yaml",
        format!("{HEADER}vars:\n  token: {{ value: t0k3n-value, secret: true }}\nimage:\n  tags: {{ auth: \"Bearer {{{{ vars.token }}}}\" }}\n"),
    );
    assert_eq!(
        load_err(&recipe, &options()),
        [format!(
            "{}:8:25: secret variable `token` cannot be used in `image.tags.auth`: AWS would store its value where it cannot be redacted",
            scratch.shown("x.yaml")
        )]
    );
}

#[test]
fn template_errors_in_file_content_point_into_the_file() {
    let scratch = Scratch::new();
    scratch.write(
        "files/app.conf",
        "port = 1\nname = {{ name }}\nbad = {{ vars.missing }}\n",
    );
    let recipe = scratch.write(
        "x.yaml",
        format!("{HEADER}steps:\n  - name: conf\n    file: {{ source: files/app.conf, destination: /etc/app.conf, template: true }}\n"),
    );
    assert_eq!(
        load_err(&recipe, &options()),
        [format!(
            "{}:3:7: unknown variable `missing` in `{{{{ vars.missing }}}}` (no variables are declared)",
            scratch.shown("files/app.conf")
        )]
    );
}

#[test]
fn every_problem_is_reported_together_with_rendered_source() {
    let scratch = Scratch::new();
    scratch.write(
        "part.yaml",
        "steps:\n  - name: dup\n    run: echo 1\n  - nme: x\n    run: echo\n",
    );
    scratch.write("broken.yaml", "steps: [\n");
    let recipe = scratch.write(
        "x.yaml",
        "name: Web\nversion: \"1.0\"\ninclude: [part.yaml, broken.yaml]\nsource: { image: ami-123 }\nbuilder:\n  instance_type: t3.large\n  volume_size_gb: 4\nsteps:\n  - name: dup\n    run: echo 2\n    timeout: 0s\n",
    );
    let problems = match load_plan(&recipe, &options()) {
        Ok(plan) => panic!("loaded: {plan:?}"),
        Err(problems) => problems,
    };
    let x = scratch.shown("x.yaml");
    let part = scratch.shown("part.yaml");
    let broken = scratch.shown("broken.yaml");
    let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        [
            format!("{x}:1:7: `name` is not a valid recipe name: `Web` (1 to 63 characters of a-z, 0-9 and `-`, starting with a letter or digit)"),
            format!("{x}:4:18: `source.image` is not an AMI id: `ami-123` (expected `ami-` and 8 or 17 lowercase hex digits)"),
            format!("{x}:7:19: `builder.volume_size_gb` must be between 8 and 16384, found 4"),
            format!("{x}:11:14: `steps[0].timeout` must be longer than zero"),
            format!("{part}:4:5: unknown field `nme` in `steps[1]`, expected one of `name`, `run`, `file`, `check`, `timeout` (did you mean `name`?)"),
            format!("{part}:4:5: missing required field `name` in `steps[1]`"),
            format!("{broken}:2:1: YAML syntax error: while parsing a node, did not find expected node content"),
            format!("{x}:9:11: duplicate step name `dup`; the first is at {part}:2:11"),
        ]
    );
    assert_eq!(
        problems[2].render(),
        format!("{x}:7:19: `builder.volume_size_gb` must be between 8 and 16384, found 4\n  |\n7 |   volume_size_gb: 4\n  |                   ^")
    );
}

#[test]
fn crlf_line_endings_and_byte_order_mark_keep_positions_right() {
    let scratch = Scratch::new();
    let text = format!("\u{feff}{HEADER}steps:\n  - name: a\n    run: |\n      echo ok\n      echo {{{{ vars.nope }}}}\n")
        .replace('\n', "\r\n");
    let recipe = scratch.write("x.yaml", text);
    assert_eq!(
        load_err(&recipe, &options()),
        [format!(
            "{}:9:12: unknown variable `nope` in `{{{{ vars.nope }}}}` (no variables are declared)",
            scratch.shown("x.yaml")
        )]
    );
}

#[test]
fn recipe_larger_than_one_mib_is_rejected_unparsed() {
    let scratch = Scratch::new();
    let mut text = String::from(HEADER);
    while text.len() <= 1024 * 1024 {
        text.push_str("# padding padding padding padding padding padding padding padding\n");
    }
    let recipe = scratch.write("big.yaml", &text);
    assert_eq!(
        load_err(&recipe, &options()),
        [format!(
            "{}: recipe file is too large: {} bytes (at most 1 MiB)",
            scratch.shown("big.yaml"),
            text.len()
        )]
    );
}

#[test]
fn missing_recipe() {
    assert_eq!(
        load_err(Path::new("no/such/recipe.yaml"), &options()),
        ["no/such/recipe.yaml: recipe file not found"]
    );
}

mod digest {
    use super::*;

    /// Loads `x.yaml` after applying `edit` to a baseline recipe with every kind of step.
    fn digest_with(edit: impl Fn(&mut Recipe), vars: &[(&str, &str)]) -> String {
        let mut recipe = Recipe::baseline();
        edit(&mut recipe);
        let scratch = Scratch::new();
        scratch.write("files/app.conf", &recipe.file_content);
        let path = scratch.write("x.yaml", recipe.yaml());
        load_ok(&path, &options_with_vars(vars)).digest
    }

    struct Recipe {
        version: String,
        source: String,
        script: String,
        file_content: String,
        var_value: String,
        keep: u32,
        image_available: String,
    }

    impl Recipe {
        fn baseline() -> Self {
            Recipe {
                version: "1.0".into(),
                source: "ami-0123456789abcdef0".into(),
                script: "echo {{ vars.greeting }} {{ vars.token }} {{ build_id }}".into(),
                file_content: "built={{ timestamp }}\n".into(),
                var_value: "hello".into(),
                keep: 5,
                image_available: "60m".into(),
            }
        }

        fn yaml(&self) -> String {
            format!(
                "name: web\nversion: \"{}\"\nsource: {{ image: {} }}\nbuilder: {{ instance_type: t3.large, iam_instance_profile: kiln-builder }}\n\
                 vars:\n  greeting: {}\n  token: {{ value: \"\", secret: true, allow_empty: true }}\n\
                 steps:\n  - name: a\n    run: \"{}\"\n  - name: f\n    file: {{ source: files/app.conf, destination: /etc/app.conf, template: true }}\n  \
                 - name: c\n    check: {{ url: \"http://127.0.0.1/\" }}\n\
                 release: {{ launch_template: web, keep: {} }}\ntimeouts: {{ image_available: {} }}\n",
                self.version, self.source, self.var_value, self.script, self.keep, self.image_available
            )
        }
    }

    fn baseline() -> String {
        digest_with(|_| {}, &[])
    }

    #[test]
    fn same_inputs_give_the_same_digest_at_any_time_and_build_id() {
        let scratch = Scratch::new();
        let recipe = Recipe::baseline();
        scratch.write("files/app.conf", &recipe.file_content);
        let path = scratch.write("x.yaml", recipe.yaml());
        let first = load_ok(&path, &options());
        let later = LoadOptions {
            now: build_time() + Duration::from_secs(86_400 * 3 + 17),
            build_id: "another-build".into(),
            ..options()
        };
        let second = load_ok(&path, &later);
        assert_ne!(first.image.name, second.image.name);
        assert_eq!(first.digest, second.digest);
        assert_eq!(first.digest, baseline());
    }

    #[test]
    fn the_baseline_digest_is_pinned() {
        // The digest decides whether an image is rebuilt: its bytes must not change.
        assert_eq!(
            baseline(),
            "8f50f1561156329a19233a9a06c6683a3cfbe5a54a7ca34c1a496834b90ad3b0"
        );
    }

    #[test]
    fn the_good_recipes_digests_are_pinned() {
        let digests: Vec<(&str, String)> = ["minimal.yaml", "filter-source.yaml", "full/main.yaml"]
            .into_iter()
            .map(|recipe| (recipe, load_ok(&good(recipe), &options()).digest))
            .collect();
        assert_eq!(
            digests,
            [
                (
                    "minimal.yaml",
                    "a16c54ff99deee28e7ea46f2b17bd9e3557b4a786e28812bcc5fe12227c0bb5d".to_owned()
                ),
                (
                    "filter-source.yaml",
                    "12c93eb3ff148e8d486723a8739676cc8395af104b880c2dde6406df66e847b4".to_owned()
                ),
                (
                    "full/main.yaml",
                    "c486724ef47c9234020123b74edb4523fd5eb0ce941a406f8b9b6e39a19bdd3f".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn what_defines_the_image_changes_the_digest() {
        let base = baseline();
        let changed = [
            ("version", digest_with(|r| r.version = "1.1".into(), &[])),
            ("version var", digest_with(|_| {}, &[("version", "1.1")])),
            (
                "source",
                digest_with(|r| r.source = "ami-0123456789abcdef1".into(), &[]),
            ),
            ("step", digest_with(|r| r.script.push_str(" more"), &[])),
            (
                "file bytes",
                digest_with(|r| r.file_content.push('\n'), &[]),
            ),
            (
                "var in yaml",
                digest_with(|r| r.var_value = "bye".into(), &[]),
            ),
            (
                "var on command line",
                digest_with(|_| {}, &[("greeting", "bye")]),
            ),
        ];
        for (what, digest) in changed {
            assert_ne!(digest, base, "changing the {what} must change the digest");
        }
    }

    #[test]
    fn release_timeouts_and_secrets_do_not_change_the_digest() {
        let base = baseline();
        let unchanged = [
            ("release.keep", digest_with(|r| r.keep = 9, &[])),
            (
                "timeouts",
                digest_with(|r| r.image_available = "2h".into(), &[]),
            ),
            (
                "secret value",
                digest_with(|_| {}, &[("token", "t0ps3cret")]),
            ),
        ];
        for (what, digest) in unchanged {
            assert_eq!(digest, base, "changing {what} must not change the digest");
        }
    }
}

mod corpus {
    use super::*;

    /// One bad recipe and what loading it must report.
    struct Case {
        recipe: PathBuf,
        expect: PathBuf,
    }

    /// `NN-name.yaml` with `NN-name.expect` beside it, or a folder `NN-name/` with `main.yaml`
    /// and `main.expect`.
    fn cases(corpus: &Path) -> Vec<Case> {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(corpus)
            .unwrap_or_else(|err| panic!("cannot list {}: {err}", corpus.display()))
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .collect();
        entries.sort();
        entries
            .into_iter()
            .filter_map(|path| {
                if path.is_dir() {
                    Some(Case {
                        recipe: path.join("main.yaml"),
                        expect: path.join("main.expect"),
                    })
                } else if path.extension().is_some_and(|ext| ext == "yaml") {
                    Some(Case {
                        expect: path.with_extension("expect"),
                        recipe: path,
                    })
                } else {
                    None
                }
            })
            .collect()
    }

    /// Problems with one case, empty when it behaves as expected.
    fn check_case(case: &Case) -> Vec<String> {
        let expectation = match std::fs::read_to_string(&case.expect) {
            Ok(text) => text,
            Err(err) => return vec![format!("cannot read {}: {err}", case.expect.display())],
        };
        let dir = case
            .recipe
            .parent()
            .unwrap_or(Path::new(""))
            .display()
            .to_string();
        let expected: Vec<String> = expectation
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| line.replace("{dir}", &dir))
            .collect();
        let actual: Vec<String> = match load_plan(&case.recipe, &options()) {
            Ok(_) => return vec!["loaded without problems".into()],
            Err(problems) => problems.iter().map(ToString::to_string).collect(),
        };
        let mut failures = Vec::new();
        match (expected.first(), actual.first()) {
            (Some(want), Some(got)) if want == got => {}
            (want, _) => failures.push(format!("first problem: expected {want:?}")),
        }
        for want in expected.iter().skip(1) {
            if !actual.iter().any(|got| got.contains(want.as_str())) {
                failures.push(format!("no problem contains {want:?}"));
            }
        }
        if !failures.is_empty() {
            failures.push(format!("actual problems:\n    {}", actual.join("\n    ")));
        }
        failures
    }

    #[test]
    fn every_bad_recipe_fails_with_its_expected_problems() {
        let corpus = repo_root().join("tests/recipes/bad");
        let cases = cases(&corpus);
        assert!(
            cases.len() >= 55,
            "only {} cases in {}",
            cases.len(),
            corpus.display()
        );
        let failures: Vec<String> = cases
            .iter()
            .filter_map(|case| {
                let problems = check_case(case);
                (!problems.is_empty())
                    .then(|| format!("{}:\n  {}", case.recipe.display(), problems.join("\n  ")))
            })
            .collect();
        assert!(
            failures.is_empty(),
            "{} failing case(s):\n{}",
            failures.len(),
            failures.join("\n")
        );
    }

    #[test]
    fn every_good_recipe_loads() {
        for recipe in ["minimal.yaml", "filter-source.yaml", "full/main.yaml"] {
            load_ok(&good(recipe), &options());
        }
    }
}

/// Every templated field of a plan, by name, as rendered.
fn templated_fields(plan: &Plan) -> Vec<(&'static str, String)> {
    let mut fields = vec![("image.name", plan.image.name.clone())];
    fields.push((
        "image.description",
        plan.image.description.clone().unwrap_or_default(),
    ));
    fields.push((
        "image.tags.t",
        plan.image.tags.get("t").cloned().unwrap_or_default(),
    ));
    fields.push((
        "image.ssm_parameter",
        plan.image.ssm_parameter.clone().unwrap_or_default(),
    ));
    for step in &plan.steps {
        match &step.kind {
            StepKind::Run { script } => fields.push(("run", script.clone())),
            StepKind::File {
                content,
                destination,
                ..
            } => {
                fields.push(("file.destination", destination.clone()));
                fields.push((
                    "file content",
                    String::from_utf8_lossy(content).into_owned(),
                ));
            }
            StepKind::Check {
                url, expect_body, ..
            } => {
                fields.push(("check.url", url.clone()));
                fields.push(("check.expect_body", expect_body.clone().unwrap_or_default()));
            }
        }
    }
    fields
}

/// `kiln validate` renders build-time values with placeholders that pass the same checks as a
/// build's values: every template variable in every templated field loads, both ways.
#[test]
fn every_template_variable_renders_in_every_templated_field_without_a_build() {
    let validate = LoadOptions::without_build(Vec::new());
    let build = LoadOptions {
        build_id: "20261125t214628123z-9dede2".into(),
        ..options()
    };
    let stamp = super::template::format_timestamp(validate.now);
    let cases = [
        ("{{ name }}", "web".to_owned()),
        ("{{ version }}", "1.0".to_owned()),
        ("{{ timestamp }}", stamp),
        ("{{ build_id }}", super::PLACEHOLDER_BUILD_ID.to_owned()),
        ("{{ vars.v }}", "x1".to_owned()),
    ];
    for (template, expected) in cases {
        let scratch = Scratch::new();
        scratch.write("f.tmpl", format!("x={template}\n"));
        let recipe = scratch.write(
            "x.yaml",
            format!(
                "{HEADER}vars: {{ v: x1 }}\nsteps:\n  - name: r\n    run: \"echo {template}\"\n  - name: f\n    file: {{ source: f.tmpl, destination: \"/etc/{template}.conf\", template: true }}\n  - name: c\n    check: {{ url: \"http://127.0.0.1:8080/{template}\", expect_body: \"{template}\" }}\nimage:\n  name: \"n-{template}\"\n  description: \"d {template}\"\n  tags: {{ t: \"{template}\" }}\n  ssm_parameter: \"/kiln/{template}\"\n"
            ),
        );
        let plan = load_ok(&recipe, &validate);
        let fields = templated_fields(&plan);
        assert_eq!(fields.len(), 9, "{fields:?}");
        for (field, value) in fields {
            assert!(
                value.contains(&expected),
                "{template} in {field}: {value:?}"
            );
            assert!(!value.contains('{'), "{template} in {field}: {value:?}");
        }
        load_ok(&recipe, &build);
    }
}

#[test]
fn declared_vars_that_no_template_uses_are_warned_about() {
    let scratch = Scratch::new();
    scratch.write("app.conf.tmpl", "port={{ vars.in_file }}\n");
    let recipe = scratch.write(
        "x.yaml",
        format!("{HEADER}vars:\n  in_file: \"1\"\n  in_script: \"2\"\n  forgotten: \"3\"\nsteps:\n  - name: a\n    run: echo {{{{ vars.in_script }}}}\n  - name: f\n    file: {{ source: app.conf.tmpl, destination: /etc/app.conf, template: true }}\n"),
    );
    let plan = load_ok(&recipe, &options());
    assert_eq!(
        plan.warnings,
        [format!(
            "{}:8:3: warning: variable `forgotten` is declared but no template uses it (use it as `{{{{ vars.forgotten }}}}`, or remove it)",
            scratch.shown("x.yaml")
        )]
    );
    for recipe in ["minimal.yaml", "filter-source.yaml", "full/main.yaml"] {
        assert!(
            load_ok(&good(recipe), &options()).warnings.is_empty(),
            "{recipe}"
        );
    }
}

/// Variable values from every source: `--var` > `--var-file` > `KILN_VAR_<name>` > `from:` >
/// `value:`.
mod values {
    use super::*;

    const VARS: &str = "vars:\n  a: { value: from-value-a, secret: true, from: \"env:A_SOURCE\" }\n  b: { value: from-value-b, secret: true, from: \"ssm:/app/b\" }\n  c: { value: from-value-c, secret: true }\n  d: { value: from-value-d, secret: true }\n  e: plain-e\nsteps:\n  - name: s\n    run: echo {{ vars.a }} {{ vars.b }} {{ vars.c }} {{ vars.d }} {{ vars.e }}\n";

    fn recipe(scratch: &Scratch) -> PathBuf {
        scratch.write("x.yaml", format!("{HEADER}{VARS}"))
    }

    fn read(values: &[(&str, &str)]) -> SecretValues {
        SecretValues::Read(
            values
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn each_source_wins_over_the_weaker_ones() {
        let scratch = Scratch::new();
        let path = recipe(&scratch);
        let file = scratch.write(
            "vars.yaml",
            "b: var-file-b\nc: { value: var-file-c }\nd: var-file-d\nversion: \"2.0\"\n",
        );
        let options = LoadOptions {
            vars: vec![("d".into(), "cli-var-d".into())],
            var_files: vec![file],
            env: [("c", "env-c-value"), ("b", "env-b-value"), ("other", "x")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            secrets: read(&[("a", "source-a-value")]),
            ..options()
        };
        let plan = load_ok(&path, &options);
        assert_eq!(
            script_of(&plan, "s"),
            "echo source-a-value var-file-b var-file-c cli-var-d plain-e"
        );
        assert_eq!(plan.version, "2.0");
        let overridden: Vec<(&str, bool)> = plan
            .sources
            .iter()
            .map(|s| (s.var.as_str(), s.overridden))
            .collect();
        assert_eq!(overridden, [("a", false), ("b", true)]);
        assert_eq!(plan.sources[1].source.to_string(), "ssm:/app/b");
        assert_eq!(
            plan.sources[0].declared_at,
            format!("{}:6:49", scratch.shown("x.yaml"))
        );
        // Values of secret variables from every source are redacted.
        for value in ["source-a-value", "var-file-b", "var-file-c", "cli-var-d"] {
            assert!(plan.secrets.iter().any(|s| s == value), "{value}");
        }
        assert_eq!(plan.redact("cli-var-d plain-e"), "*** plain-e");
    }

    #[test]
    fn without_other_values_the_recipe_value_stays_and_unread_sources_are_not_refused() {
        let scratch = Scratch::new();
        let path = recipe(&scratch);
        // A build before its sources are read: `a` and `b` are pending, nothing refused.
        let plan = load_ok(&path, &options());
        assert_eq!(
            script_of(&plan, "s"),
            "echo from-value-a from-value-b from-value-c from-value-d plain-e"
        );
        assert!(plan.sources.iter().all(|s| !s.overridden));
    }

    #[test]
    fn an_empty_secret_is_refused_only_when_a_build_needs_it() {
        let scratch = Scratch::new();
        let path = scratch.write(
            "x.yaml",
            format!("{HEADER}vars:\n  key: {{ value: \"\", secret: true }}\n  fetched: {{ secret: true, from: \"env:FETCHED\" }}\nsteps:\n  - name: s\n    run: echo {{{{ vars.key }}}} {{{{ vars.fetched }}}}\n"),
        );
        let not_needed = LoadOptions::without_build(Vec::new());
        load_ok(&path, &not_needed);
        let build = load_err(&path, &options());
        assert_eq!(build.len(), 1, "{build:?}");
        assert!(
            build[0].contains(":6:3: secret variable `key` is empty: a build needs its value"),
            "{build:?}"
        );
        // Once read, an empty value from a source is refused too, naming the source.
        let read_empty = LoadOptions {
            vars: vec![("key".into(), "given-key-value".into())],
            secrets: read(&[("fetched", "")]),
            ..options()
        };
        let problems = load_err(&path, &read_empty);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("secret variable `fetched` is empty (from `from: env:FETCHED`)"),
            "{problems:?}"
        );
    }

    #[test]
    fn a_secret_too_short_to_redact_is_refused_naming_where_it_came_from_never_the_value() {
        let scratch = Scratch::new();
        let path = recipe(&scratch);
        for (options, origin) in [
            (options_with_vars(&[("c", "x")]), "from --var c"),
            (
                LoadOptions {
                    env: [("c".to_string(), "short".to_string())].into(),
                    ..options()
                },
                "from KILN_VAR_c",
            ),
            (
                LoadOptions {
                    secrets: read(&[("a", "tiny")]),
                    ..options()
                },
                "from `from: env:A_SOURCE`",
            ),
        ] {
            let problems = load_err(&path, &options);
            assert_eq!(problems.len(), 1, "{problems:?}");
            assert!(problems[0].contains(origin), "{origin}: {problems:?}");
            assert!(
                problems[0].contains("kiln refuses secrets shorter than 8 characters"),
                "{problems:?}"
            );
            assert!(!problems[0].contains("`x`") && !problems[0].contains("tiny"));
        }
        // Eight characters are enough, and so is any length for a variable that is not secret.
        load_ok(&path, &options_with_vars(&[("c", "8chars!!"), ("e", "x")]));
    }

    #[test]
    fn unknown_names_get_the_nearest_declared_one_and_var_file_problems_have_positions() {
        let scratch = Scratch::new();
        let path = scratch.write(
            "x.yaml",
            format!("{HEADER}vars:\n  greeting: hello\nsteps:\n  - name: s\n    run: echo {{{{ vars.greeting }}}}\n"),
        );
        assert_eq!(
            load_err(&path, &options_with_vars(&[("greting", "hi")])),
            ["--var: unknown variable greting (declared: greeting) (did you mean `greeting`?)"]
        );
        assert_eq!(
            load_err(&path, &options_with_vars(&[("colour", "red")])),
            ["--var: unknown variable colour (declared: greeting)"]
        );
        let file = scratch.write(
            "v.yaml",
            "greeting: hi\ngreetin: hey\nlist: [1]\nsecretive: { value: a, secret: true }\n",
        );
        let with_file = LoadOptions {
            var_files: vec![file],
            ..options()
        };
        let shown = scratch.shown("v.yaml");
        assert_eq!(
            load_err(&path, &with_file),
            [
                format!("{shown}:3:7: `list` must be a string or a mapping with `value`, found a list (a var file gives values; the recipe declares `secret`, `allow_empty` and `from`)"),
                format!("{shown}:4:24: unknown field `secret` in `secretive`, expected `value`"),
                format!("{shown}:2:1: unknown variable greetin (declared: greeting) (did you mean `greeting`?)"),
                format!("{shown}:4:1: unknown variable secretive (declared: greeting)"),
            ]
        );
        let missing = LoadOptions {
            var_files: vec![scratch.dir.path().join("none.yaml")],
            ..options()
        };
        let problems = load_err(&path, &missing);
        assert!(
            problems[0].starts_with(&format!("{}: var file", scratch.shown("none.yaml"))),
            "{problems:?}"
        );
    }

    #[test]
    fn hints_repeat_var_files_and_plain_vars_and_name_secret_vars_only_for_a_build() {
        let scratch = Scratch::new();
        let path = recipe(&scratch);
        let file = scratch.write("ci/vars.yaml", "c: var-file-c\n");
        let options = LoadOptions {
            vars: vec![
                ("e".into(), "two words".into()),
                ("d".into(), "cli-var-d-secret".into()),
            ],
            var_files: vec![file.clone()],
            ..LoadOptions::without_build(Vec::new())
        };
        let plan = load_ok(&path, &options);
        let (recipe, file) = (path.display(), file.display());
        assert_eq!(
            plan.command_hint("release"),
            format!("kiln release {recipe} --var-file {file} --var 'e=two words'")
        );
        assert_eq!(
            plan.command_hint("build"),
            format!("kiln build {recipe} --var-file {file} --var 'e=two words' --var d=\"$D\"")
        );
        assert!(!format!("{:?}", plan.var_flags).contains("cli-var-d-secret"));
    }
}
