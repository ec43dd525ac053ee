//! Nightly builds, release pipelines and rollbacks: skip-if-unchanged, history, rollback,
//! retention, regions/sharing/publishing and instance refresh, checked through the AWS API.

use std::path::Path;

use serde_json::{json, Value};

use crate::support::*;

const ONE_STEP: &str = "  - name: install\n    run: echo install {{ vars.flavour }}";

/// The test recipe with a var, and an image name unique per build: these tests build several
/// images of one version within a second, and AMI names must be unique.
pub(crate) fn app_recipe(kiln: &Kiln, extra_release: &str, extra_image: &str) -> String {
    let text = recipe(ONE_STEP)
        .replace("steps:\n", "vars: { flavour: vanilla }\nsteps:\n")
        .replace(
            "  tags: { app: demo }\n",
            &format!("  name: \"{{{{ name }}}}-{{{{ version }}}}-{{{{ build_id }}}}\"\n  tags: {{ app: demo }}\n{extra_image}"),
        )
        .replace("  keep: 2\n", &format!("  keep: 2\n{extra_release}"));
    kiln.write("app.yaml", &text).to_str().unwrap().to_owned()
}

fn build(kiln: &Kiln, recipe: &str, extra: &[&str]) -> Value {
    let mut args = vec!["build", recipe, "--json"];
    args.extend_from_slice(extra);
    let run = kiln.run(&args);
    run.assert_code(0);
    run.json()
}

/// `kiln prune --keep N --json`: the report and the ids of the images it deleted.
pub(crate) fn prune(kiln: &Kiln, recipe: &str, keep: u32) -> (Value, Vec<String>) {
    let run = kiln.run(&["prune", recipe, "--keep", &keep.to_string(), "--json"]);
    run.assert_code(0);
    let report = run.json();
    let deleted = report["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["image_id"].as_str().unwrap().to_owned())
        .collect();
    (report, deleted)
}

/// Builds versions 1.0.0 ..= N.0.0 of `recipe`; returns their image ids, oldest first.
pub(crate) fn build_versions(kiln: &Kiln, recipe: &str, n: usize) -> Vec<String> {
    (1..=n)
        .map(|v| {
            build(kiln, recipe, &["--var", &format!("version={v}.0.0")])["images"][0]["image_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

#[test]
fn an_unchanged_recipe_is_skipped_and_a_change_rebuilds() {
    let emulator = Emulator::seeded();
    let aws = emulator.aws();
    let kiln = Kiln::new(&emulator);
    let recipe = app_recipe(&kiln, "", "");
    let first = build(&kiln, &recipe, &[]);
    let versions_after_first = aws.template_versions("rudder-dataplane");

    emulator.clear_requests();
    let run = kiln.run(&["build", &recipe]);
    run.assert_code(0);
    assert!(run.stderr.contains("reusing image"), "{}", run.stderr);
    assert!(run.stdout.contains("skipped:"), "{}", run.stdout);
    let actions = emulator.kiln_actions();
    assert!(
        !actions.iter().any(|a| a == "RunInstances"
            || a == "CreateImage"
            || a == "CreateLaunchTemplateVersion"),
        "{actions:?}"
    );
    assert_eq!(aws.kiln_images().len(), 1);
    assert_eq!(
        aws.template_versions("rudder-dataplane"),
        versions_after_first
    );

    let second = build(&kiln, &recipe, &[]);
    assert_eq!(second["skipped"], json!(true));
    assert_eq!(
        second["images"][0]["image_id"],
        first["images"][0]["image_id"]
    );
    assert_eq!(second["fingerprint"], first["fingerprint"]);
    assert_eq!(
        second["launch_template"]["default_version"],
        first["launch_template"]["default_version"]
    );

    // --force builds anyway; a changed variable changes the fingerprint.
    let forced = build(&kiln, &recipe, &["--force"]);
    assert_eq!(forced["skipped"], json!(false));
    assert_eq!(forced["fingerprint"], first["fingerprint"]);
    let changed = build(&kiln, &recipe, &["--var", "flavour=chocolate"]);
    assert_eq!(changed["skipped"], json!(false));
    assert_ne!(changed["fingerprint"], first["fingerprint"]);
    assert_eq!(aws.kiln_images().len(), 3);
}

#[test]
fn a_skipped_build_still_points_the_launch_template_at_the_image() {
    let emulator = Emulator::seeded();
    let aws = emulator.aws();
    let kiln = Kiln::new(&emulator);
    let recipe = app_recipe(&kiln, "", "");
    let first = build(&kiln, &recipe, &["--no-release"]);
    assert_eq!(first["launch_template"], Value::Null);
    let (default_version, _) = aws.template_versions("rudder-dataplane");
    assert_ne!(
        aws.template_image("rudder-dataplane", default_version),
        first["images"][0]["image_id"].as_str().unwrap()
    );
    let second = build(&kiln, &recipe, &[]);
    assert_eq!(second["skipped"], json!(true));
    let (default_after, _) = aws.template_versions("rudder-dataplane");
    assert_eq!(
        aws.template_image("rudder-dataplane", default_after),
        first["images"][0]["image_id"].as_str().unwrap()
    );
}

#[test]
fn a_default_version_that_resolves_an_ssm_alias_to_the_image_is_already_released() {
    let emulator = Emulator::seeded();
    let aws = emulator.aws();
    let kiln = Kiln::new(&emulator);
    let recipe = app_recipe(&kiln, "", "");
    let image = build(&kiln, &recipe, &[])["images"][0]["image_id"]
        .as_str()
        .unwrap()
        .to_owned();
    aws.block_on(
        aws.ssm
            .put_parameter()
            .name("/app/ami")
            .value(&image)
            .r#type(aws_sdk_ssm::types::ParameterType::String)
            .send(),
    )
    .expect("parameter");
    // The template now launches `resolve:ssm:/app/ami`, which AWS resolves to the same image.
    let alias = aws_sdk_ec2::types::RequestLaunchTemplateData::builder()
        .image_id("resolve:ssm:/app/ami")
        .build();
    let alias_version = aws.new_default_version("rudder-dataplane", alias);
    let again = build(&kiln, &recipe, &[]);
    assert_eq!(again["skipped"], json!(true));
    assert_eq!(
        again["launch_template"]["created_version"],
        Value::Null,
        "{again}"
    );
    assert_eq!(aws.template_versions("rudder-dataplane").0, alias_version);
    let history = kiln.run(&["history", &recipe, "--json"]);
    history.assert_code(0);
    assert!(history.stdout.contains(&image), "{}", history.stdout);
    assert!(
        !history.stdout.contains("resolve:ssm:"),
        "{}",
        history.stdout
    );
}

#[test]
fn history_rollback_and_idempotent_rollback() {
    let emulator = Emulator::seeded();
    let aws = emulator.aws();
    let kiln = Kiln::new(&emulator);
    let recipe = app_recipe(&kiln, "", "");
    let (seed_version, _) = aws.template_versions("rudder-dataplane");
    let a = build(&kiln, &recipe, &["--var", "version=1.0.0"]);
    let b = build(&kiln, &recipe, &["--var", "version=1.1.0"]);
    let image_a = a["images"][0]["image_id"].as_str().unwrap();
    let image_b = b["images"][0]["image_id"].as_str().unwrap();
    assert_eq!(b["version"], json!("1.1.0"));

    let history = kiln.run(&["history", &recipe, "--json"]);
    history.assert_code(0);
    let history = history.json();
    let versions = history["versions"].as_array().unwrap();
    assert_eq!(versions.len() as i64, seed_version + 2);
    assert_eq!(versions[0]["image_id"], json!(image_b));
    assert_eq!(versions[0]["is_default"], json!(true));
    assert_eq!(versions[0]["recipe_version"], json!("1.1.0"));
    assert_eq!(versions[0]["build_id"], b["build_id"]);
    assert_eq!(versions[0]["image_exists"], json!(true));
    assert_eq!(versions[1]["image_id"], json!(image_a));
    assert_eq!(versions[1]["is_default"], json!(false));
    let human = kiln.run(&["history", &recipe]);
    assert!(
        human.stdout.contains(image_a) && human.stdout.contains("1.1.0"),
        "{}",
        human.stdout
    );

    let rollback = kiln.run(&["rollback", &recipe, "--json"]);
    rollback.assert_code(0);
    let outcome = rollback.json();
    assert_eq!(outcome["before"]["image_id"], json!(image_b));
    assert_eq!(outcome["after"]["image_id"], json!(image_a));
    assert_eq!(outcome["changed"], json!(true));
    let (default_version, latest) = aws.template_versions("rudder-dataplane");
    assert_eq!(
        aws.template_image("rudder-dataplane", default_version),
        image_a
    );

    // Again: it would go further back, never forward onto B; there is no earlier release (the
    // seed's version is not kiln's), so it refuses and nothing changes.
    let again = kiln.run(&["rollback", &recipe, "--json"]);
    again.assert_code(1);
    assert!(
        again
            .stderr
            .contains("has no earlier release to roll back to"),
        "{}",
        again.stderr
    );
    assert_eq!(
        aws.template_versions("rudder-dataplane"),
        (default_version, latest)
    );

    // --to the newest version brings B back; --image with a foreign image is refused.
    kiln.run(&["rollback", &recipe, "--to", &latest.to_string()])
        .assert_code(0);
    assert_eq!(
        aws.template_image(
            "rudder-dataplane",
            aws.template_versions("rudder-dataplane").0
        ),
        image_b
    );
    let foreign = a["source_image"].as_str().unwrap();
    let refused = kiln.run(&["rollback", &recipe, "--image", foreign]);
    refused.assert_code(1);
    assert!(
        refused.stderr.contains("--allow-foreign"),
        "{}",
        refused.stderr
    );
    assert_eq!(aws.template_versions("rudder-dataplane"), (latest, latest));
    kiln.run(&["rollback", &recipe, "--image", foreign, "--allow-foreign"])
        .assert_code(0);
    let (default_now, latest_now) = aws.template_versions("rudder-dataplane");
    assert_eq!((default_now, latest_now), (latest + 1, latest + 1));
    assert_eq!(aws.template_image("rudder-dataplane", default_now), foreign);
    kiln.run(&["rollback", &recipe, "--image", "ami-0000000000000dead"])
        .assert_code(1);
}

#[test]
fn prune_keeps_the_newest_and_everything_referenced() {
    let emulator = Emulator::seeded();
    let aws = emulator.aws();
    let kiln = Kiln::new(&emulator);
    let recipe = app_recipe(&kiln, "", "");
    let ids = build_versions(&kiln, &recipe, 3);
    let snapshots_of_first = aws
        .kiln_images()
        .into_iter()
        .find(|i| i.id == ids[0])
        .unwrap()
        .snapshots;
    // Roll back to the second: it is now the default, the third stays the latest.
    let (_, latest) = aws.template_versions("rudder-dataplane");
    kiln.run(&["rollback", &recipe, "--to", &(latest - 1).to_string()])
        .assert_code(0);

    let dry = kiln.run(&["prune", &recipe, "--keep", "1", "--dry-run", "--json"]);
    dry.assert_code(0);
    let dry = dry.json();
    assert_eq!(dry["deleted"].as_array().unwrap().len(), 1);
    assert_eq!(dry["deleted"][0]["image_id"], json!(ids[0]));
    assert_eq!(aws.kiln_images().len(), 3, "dry run deleted something");
    let reasons = |report: &Value, id: &str| -> String {
        report["kept"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["image_id"] == json!(id))
            .map(|k| k["reasons"].to_string())
            .unwrap_or_default()
    };
    assert!(reasons(&dry, &ids[1]).contains("default version"), "{dry}");
    assert!(reasons(&dry, &ids[2]).contains("newest 1"), "{dry}");

    let pruned = kiln.run(&["prune", &recipe, "--keep", "1", "--json"]);
    pruned.assert_code(0);
    let mut left: Vec<String> = aws.kiln_images().into_iter().map(|i| i.id).collect();
    left.sort();
    let mut expected = vec![ids[1].clone(), ids[2].clone()];
    expected.sort();
    assert_eq!(left, expected);
    for snapshot in snapshots_of_first {
        assert!(
            aws.snapshot_tags(&snapshot).is_none(),
            "snapshot {snapshot} of the pruned image is still there"
        );
    }
    // `keep` prunes kiln's launch template versions too: beyond the newest, never the default,
    // the latest, or a version kiln did not make (the seeded version 1).
    let pruned = pruned.json();
    let versions = pruned["versions"].as_array().unwrap();
    assert!(!versions.is_empty(), "{pruned}");
    assert!(versions.iter().all(|v| v["failure"].is_null()), "{pruned}");
    let (default, latest) = aws.template_versions("rudder-dataplane");
    let left: Vec<i64> = aws
        .block_on(
            aws.ec2
                .describe_launch_template_versions()
                .launch_template_name("rudder-dataplane")
                .send(),
        )
        .expect("versions")
        .launch_template_versions()
        .iter()
        .filter_map(|v| v.version_number())
        .collect();
    for number in &left {
        assert!(
            [1, default, latest].contains(number),
            "version {number} survived: {left:?} (default {default}, latest {latest})"
        );
    }
    let invalid = kiln.run(&["prune", &recipe, "--keep", "0"]);
    invalid.assert_code(2);
}

#[test]
fn prune_spares_images_in_use_or_protected_and_asks_aws_what_uses_them() {
    let emulator = Emulator::seeded();
    let aws = emulator.aws();
    let kiln = Kiln::new(&emulator);
    let recipe = app_recipe(&kiln, "", "");
    let ids = build_versions(&kiln, &recipe, 6);
    aws.block_on(
        aws.ec2
            .run_instances()
            .image_id(&ids[0])
            .min_count(1)
            .max_count(1)
            .send(),
    )
    .expect("run an instance");
    aws.block_on(
        aws.ec2
            .create_launch_template()
            .launch_template_name("someone-else")
            .launch_template_data(
                aws_sdk_ec2::types::RequestLaunchTemplateData::builder()
                    .image_id(&ids[1])
                    .build(),
            )
            .send(),
    )
    .expect("create another template");
    aws.block_on(
        aws.ssm
            .put_parameter()
            .name("/other/ami")
            .value(&ids[2])
            .r#type(aws_sdk_ssm::types::ParameterType::String)
            .send(),
    )
    .expect("another stack's parameter");
    aws.block_on(
        aws.ec2
            .enable_image_deregistration_protection()
            .image_id(&ids[3])
            .send(),
    )
    .expect("protect");
    let deleted = |report: &Value| -> Vec<String> {
        let mut ids: Vec<String> = report["deleted"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["image_id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    };
    // Where AWS does not offer DescribeImageReferences, kiln scans templates and instances,
    // and cannot see SSM parameters.
    emulator.behaviour(json!({"image_references": false}));
    let scanned = kiln.run(&["prune", &recipe, "--keep", "1", "--dry-run", "--json"]);
    scanned.assert_code(0);
    let scanned = scanned.json();
    let mut expected = vec![ids[2].clone(), ids[4].clone()];
    expected.sort();
    assert_eq!(deleted(&scanned), expected, "{scanned}");
    emulator.behaviour(json!({"image_references": true}));
    let report = kiln.run(&["prune", &recipe, "--keep", "1", "--json"]);
    report.assert_code(0);
    let report = report.json();
    assert_eq!(deleted(&report), [ids[4].clone()], "{report}");
    let text = report.to_string();
    for reason in [
        "used by instance",
        "used by launch template someone-else",
        "used by SSM parameter /other/ami",
        "deregistration protection is enabled-without-cooldown",
    ] {
        assert!(text.contains(reason), "{reason}: {text}");
    }
    assert!(emulator
        .kiln_actions()
        .contains(&"DescribeImageReferences".to_owned()));
}

#[test]
fn copies_shares_and_publishes_to_ssm() {
    let emulator = Emulator::seeded();
    let aws = emulator.aws();
    let kiln = Kiln::new(&emulator);
    // Shared images need customer managed keys: the builder's, and one per copy region.
    let recipe = app_recipe(&kiln, "", "  regions: [{ region: us-west-2, kms_key_id: alias/kiln-west }, { region: eu-west-1, kms_key_id: alias/kiln-eu }]\n  share_with: [\"210987654321\"]\n  ssm_parameter: /kiln/demo-app/ami\n");
    let text = read(Path::new(&recipe)).replace(
        "  volume_size_gb: 10\n",
        "  volume_size_gb: 10\n  kms_key_id: alias/kiln-east\n",
    );
    std::fs::write(&recipe, text).unwrap();
    let manifest = build(&kiln, &recipe, &[]);
    let images = manifest["images"].as_array().unwrap();
    assert_eq!(images.len(), 3, "{manifest}");
    let regions: Vec<&str> = images
        .iter()
        .map(|i| i["region"].as_str().unwrap())
        .collect();
    assert_eq!(regions[0], REGION);
    assert!(regions.contains(&"us-west-2") && regions.contains(&"eu-west-1"));
    for image in images {
        let region = image["region"].as_str().unwrap();
        let ec2 = aws_sdk_ec2::Client::from_conf(
            aws.ec2
                .config()
                .to_builder()
                .region(aws_sdk_ec2::config::Region::new(region.to_owned()))
                .build(),
        );
        let id = image["image_id"].as_str().unwrap();
        let out = aws
            .block_on(ec2.describe_images().image_ids(id).send())
            .expect("describe copy");
        let found = &out.images()[0];
        assert_eq!(found.state().map(|s| s.as_str()), Some("available"));
        assert_eq!(
            found.imds_support().map(|s| s.as_str()),
            Some("v2.0"),
            "{region}"
        );
        assert!(
            found
                .tags()
                .iter()
                .any(|t| t.key() == Some("kiln:fingerprint")
                    && t.value() == manifest["fingerprint"].as_str()),
            "{region}"
        );
        let attr = aws
            .block_on(
                ec2.describe_image_attribute()
                    .image_id(id)
                    .attribute(aws_sdk_ec2::types::ImageAttributeName::LaunchPermission)
                    .send(),
            )
            .expect("attribute");
        assert!(
            attr.launch_permissions()
                .iter()
                .any(|p| p.user_id() == Some("210987654321")),
            "{region}: {attr:?}"
        );
        let ssm = aws_sdk_ssm::Client::from_conf(
            aws.ssm
                .config()
                .to_builder()
                .region(aws_sdk_ssm::config::Region::new(region.to_owned()))
                .build(),
        );
        let parameter = aws
            .block_on(ssm.get_parameter().name("/kiln/demo-app/ami").send())
            .expect("parameter");
        assert_eq!(parameter.parameter().and_then(|p| p.value()), Some(id));
    }
    assert_eq!(manifest["ssm_parameters"].as_array().unwrap().len(), 3);
}

#[test]
fn a_release_refreshes_the_group_and_a_failed_refresh_rolls_back() {
    let emulator = Emulator::seeded();
    let aws = emulator.aws();
    let kiln = Kiln::new(&emulator);
    let recipe = app_recipe(&kiln, "  auto_scaling_group: rudder-dataplane\n  strategy: default-then-refresh\n  rollback_on_failure: true\n  refresh: { min_healthy_percentage: 0, instance_warmup: 5s }\n", "");
    let manifest = build(&kiln, &recipe, &[]);
    assert_eq!(manifest["instance_refresh"]["status"], json!("Successful"));
    assert_eq!(
        manifest["instance_refresh"]["auto_scaling_group"],
        json!("rudder-dataplane")
    );
    let good_version = manifest["launch_template"]["default_version"]
        .as_i64()
        .unwrap();

    emulator.behaviour(json!({"refresh": {"status": "Failed", "seconds": 1}}));
    let run = kiln.run(&["build", &recipe, "--var", "flavour=broken", "--json"]);
    run.assert_code(1);
    assert!(run.stderr.contains("instance refresh"), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("the default is version 2 again (release.rollback_on_failure)")
            && run
                .stderr
                .contains("ended Failed: it failed and was not rolled back"),
        "{}",
        run.stderr
    );
    let (default_version, latest) = aws.template_versions("rudder-dataplane");
    assert_eq!(default_version, good_version);
    assert_eq!(latest, good_version + 1);

    // --no-refresh skips it.
    let quiet = build(&kiln, &recipe, &["--var", "flavour=quiet", "--no-refresh"]);
    assert_eq!(quiet["instance_refresh"], Value::Null);
}

#[test]
fn only_this_accounts_snapshots_count_as_an_images_snapshots() {
    let emulator = Emulator::seeded();
    let aws = emulator.aws();
    let kiln = Kiln::new(&emulator);
    let recipe = app_recipe(&kiln, "", "");
    let image = build(&kiln, &recipe, &["--no-release"])["images"][0]["image_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Another account copied the image (shared with it) and shares the copy's snapshot back:
    // its description names this account's image.
    let description = format!(
        "Copied for DestinationAmi ami-0f0f0f0f0f0f0f0f0 from SourceAmi {image} for SourceSnapshot snap-0"
    );
    let foreign = emulator.shared_snapshot("210987654321", &description);
    let everyone: Vec<String> = aws
        .block_on(aws.ec2.describe_snapshots().send())
        .expect("describe")
        .snapshots()
        .iter()
        .filter_map(|s| s.snapshot_id().map(str::to_owned))
        .collect();
    assert!(everyone.contains(&foreign), "without OwnerIds AWS lists it");
    let sdk = aws.block_on(kiln_sdk(&emulator.url));
    let found = aws
        .block_on(kiln::aws::Cloud::snapshots_of_image(&sdk, &image))
        .expect("snapshots");
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(!found.contains(&foreign), "{found:?}");
}

#[test]
fn history_limit_keeps_the_newest_and_debug_logs_have_no_colours_in_ci() {
    let emulator = Emulator::seeded();
    let kiln = Kiln::new(&emulator);
    let recipe = app_recipe(&kiln, "", "");
    let built = build(&kiln, &recipe, &[]);
    let all = kiln.run(&["history", &recipe, "--json"]);
    assert!(all.json()["versions"].as_array().unwrap().len() >= 2);
    let newest = kiln.run(&["history", &recipe, "--limit", "1", "--json"]);
    newest.assert_code(0);
    let versions = newest.json()["versions"].as_array().unwrap().clone();
    assert_eq!(versions.len(), 1);
    assert_eq!(versions[0]["image_id"], built["images"][0]["image_id"]);
    // -vv logs every request; CI is set and stderr is a pipe: plain text, no ANSI escapes.
    let debug = kiln.run(&["-vv", "history", &recipe]);
    debug.assert_code(0);
    assert!(debug.stderr.contains("DEBUG"), "{}", debug.stderr);
    assert!(!debug.stderr.contains('\u{1b}'), "{}", debug.stderr);
}
