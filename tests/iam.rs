//! `kiln iam-policy`: the policy it prints must allow every AWS action kiln called during the
//! whole test suite, and name no action kiln does not call (recorded over the suite, or listed in
//! [`NOT_RECORDED`] with why the emulator cannot see it). Each emulator writes the actions kiln
//! called when it stops; this test runs after the suite (scripts/test.sh runs it with
//! `--ignored`). scripts/iam-lint checks the same policies with an IAM policy linter.

use std::collections::BTreeSet;

use crate::support::*;

/// Policy actions the emulator never records, and why.
const NOT_RECORDED: &[(&str, &str)] = &[
    (
        "iam:PassRole",
        "checked by IAM inside RunInstances with an instance profile, not a call of its own",
    ),
    (
        "ec2:CreateTags",
        "authorised by IAM for the tags in RunInstances, CreateImage and CopyImage; kiln tags nothing afterwards",
    ),
    (
        "ssm:DescribeParameters",
        "checked by IAM inside DescribeImageReferences when it looks at SSM parameters",
    ),
    (
        "kms:DescribeKey",
        "EBS calls KMS for the caller (kms:ViaService ec2)",
    ),
    (
        "kms:CreateGrant",
        "EBS calls KMS for the caller (kms:ViaService ec2)",
    ),
    (
        "kms:GenerateDataKeyWithoutPlaintext",
        "EBS calls KMS for the caller (kms:ViaService ec2)",
    ),
    (
        "kms:ReEncryptFrom",
        "EBS calls KMS for the caller (kms:ViaService ec2)",
    ),
    (
        "kms:ReEncryptTo",
        "EBS calls KMS for the caller (kms:ViaService ec2)",
    ),
    (
        "kms:Decrypt",
        "EBS calls KMS for the caller (kms:ViaService ec2)",
    ),
];

fn policy_actions() -> BTreeSet<String> {
    let kiln = Kiln::offline();
    let recipe = repo_root().join("tests/recipes/full-featured.yaml");
    let run = kiln.run(&["iam-policy", recipe.to_str().unwrap()]);
    run.assert_code(0);
    let policy = run.json();
    assert_eq!(policy["Version"], serde_json::json!("2012-10-17"));
    kiln::iam::actions(&policy).into_iter().collect()
}

#[test]
fn iam_policy_takes_the_builder_role_or_says_the_role_is_a_guess() {
    let kiln = Kiln::offline();
    let recipe = repo_root().join("tests/recipes/full-featured.yaml");
    let guessed = kiln.run(&["iam-policy", recipe.to_str().unwrap()]);
    guessed.assert_code(0);
    assert!(guessed.stderr.contains("a guess"), "{}", guessed.stderr);
    assert!(
        guessed
            .stderr
            .contains("aws iam get-instance-profile --instance-profile-name kiln-builder"),
        "{}",
        guessed.stderr
    );
    let named = kiln.run(&[
        "iam-policy",
        recipe.to_str().unwrap(),
        "--builder-role",
        "ci-image-builder",
    ]);
    named.assert_code(0);
    // No guess about the builder role; offline, only the template's role is unknown.
    assert!(!named.stderr.contains("a guess"), "{}", named.stderr);
    assert!(
        named
            .stderr
            .contains("the release launch template's instance profile could not be read"),
        "{}",
        named.stderr
    );
    let pass_role = named.json()["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["Sid"] == "KilnPassBuilderRole")
        .cloned()
        .expect("a PassRole statement");
    assert_eq!(
        pass_role["Resource"],
        "arn:aws:iam::*:role/ci-image-builder"
    );
    assert_eq!(
        pass_role["Condition"]["StringEquals"]["iam:PassedToService"],
        "ec2.amazonaws.com"
    );
}

#[test]
fn the_policy_names_only_real_actions_of_the_services_kiln_uses() {
    for action in policy_actions() {
        let (service, name) = action.split_once(':').expect("service:Action");
        assert!(
            [
                "ec2",
                "ssm",
                "autoscaling",
                "elasticloadbalancing",
                "iam",
                "kms",
                "secretsmanager"
            ]
            .contains(&service),
            "{action}"
        );
        assert!(
            name.chars().next().is_some_and(|c| c.is_ascii_uppercase()),
            "{action}"
        );
    }
}

#[test]
#[ignore = "runs after the suite: scripts/test.sh"]
fn policy_allows_every_action_the_suite_recorded() {
    let allowed = policy_actions();
    let dir = recorded_actions_dir();
    let mut recorded = BTreeSet::new();
    for entry in std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e} (run the suite first)", dir.display()))
        .flatten()
    {
        recorded.extend(read(&entry.path()).lines().map(str::to_owned));
    }
    assert!(
        recorded.len() >= 20,
        "only {} actions recorded: {recorded:?}",
        recorded.len()
    );
    let missing: Vec<&String> = recorded.iter().filter(|a| !allowed.contains(*a)).collect();
    assert!(
        missing.is_empty(),
        "kiln called actions its policy does not allow: {missing:?}"
    );
    let excused: BTreeSet<&str> = NOT_RECORDED.iter().map(|(action, _)| *action).collect();
    let unused: Vec<&String> = allowed
        .iter()
        .filter(|a| !recorded.contains(*a) && !excused.contains(a.as_str()))
        .collect();
    assert!(
        unused.is_empty(),
        "the policy allows actions kiln never called over the suite: {unused:?} \
         (remove them, exercise them in a test, or list them in NOT_RECORDED with the reason)"
    );
}

#[test]
fn iam_policy_reads_the_role_inside_the_builder_s_profile_and_writes_the_region_s_partition() {
    let emulator = Emulator::seeded();
    let aws = emulator.aws();
    let assume = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
    for (role, profile) in [
        ("ci-image-builder", "ci-profile"),
        ("web-role", "web-profile"),
    ] {
        aws.block_on(
            aws.iam
                .create_role()
                .role_name(role)
                .assume_role_policy_document(assume)
                .send(),
        )
        .expect("CreateRole");
        aws.empty_instance_profile(profile);
        aws.block_on(
            aws.iam
                .add_role_to_instance_profile()
                .instance_profile_name(profile)
                .role_name(role)
                .send(),
        )
        .expect("AddRoleToInstanceProfile");
    }
    // Production's instances run with their own profile, named in the launch template.
    let data = aws_sdk_ec2::types::RequestLaunchTemplateData::builder()
        .iam_instance_profile(
            aws_sdk_ec2::types::LaunchTemplateIamInstanceProfileSpecificationRequest::builder()
                .name("web-profile")
                .build(),
        )
        .build();
    aws.new_default_version("rudder-dataplane", data);
    let kiln = Kiln::new(&emulator);
    let text = recipe("  - name: install\n    run: echo install").replace(
        "iam_instance_profile: kiln-builder",
        "iam_instance_profile: ci-profile",
    );
    let recipe = kiln.write("app.yaml", &text);
    let run = kiln.run(&["iam-policy", recipe.to_str().unwrap()]);
    run.assert_code(0);
    assert!(
        run.stderr
            .contains("`ci-image-builder`, read from the builder's instance profile"),
        "{}",
        run.stderr
    );
    let statements = run.json()["Statement"].as_array().unwrap().clone();
    let pass_role = statements
        .iter()
        .find(|s| s["Sid"] == "KilnPassBuilderRole")
        .expect("PassRole");
    assert_eq!(
        pass_role["Resource"],
        "arn:aws:iam::*:role/ci-image-builder"
    );
    let template_role = statements
        .iter()
        .find(|s| s["Sid"] == "KilnPassTemplateRole")
        .expect("PassRole on the template's role");
    assert_eq!(template_role["Resource"], "arn:aws:iam::*:role/web-role");
    // GovCloud: every ARN in its partition.
    let gov = kiln.run(&[
        "iam-policy",
        recipe.to_str().unwrap(),
        "--region",
        "us-gov-west-1",
    ]);
    gov.assert_code(0);
    let text = gov.stdout;
    assert!(!text.contains("arn:aws:"), "{text}");
    assert!(text.contains("arn:aws-us-gov:ec2:"), "{text}");
}
