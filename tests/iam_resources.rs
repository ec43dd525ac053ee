//! `kiln iam-policy` covers resources, not only actions: for each recipe shape, release runs
//! against the emulator (a build that releases, a second one, a rollback), then every
//! authorization AWS would evaluate for kiln's requests (action, resource ARN, condition context:
//! scripts/kiln_emulator/authorization.py) must be allowed by the policy `kiln iam-policy` prints
//! for that recipe (support/policy.rs evaluates it).

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::support::policy::{arn_matches, denial, glob};
use crate::support::*;

const GROUP: &str = "rudder-dataplane";

/// The test recipe released to the seed's launch template (refreshing its group when `group`),
/// with a `test:` section when `tested`; a var makes each build a new image.
fn shaped_recipe(kiln: &Kiln, group: bool, tested: bool) -> String {
    let mut text = recipe("  - name: install\n    run: echo install {{ vars.flavour }}")
        .replace("steps:\n", "vars: { flavour: vanilla }\nsteps:\n")
        .replace(
            "  tags: { app: demo }\n",
            "  name: \"{{ name }}-{{ version }}-{{ build_id }}\"\n  tags: { app: demo }\n",
        );
    if group {
        text = text.replace(
            "  keep: 2\n",
            &format!("  keep: 2\n  auto_scaling_group: {GROUP}\n"),
        );
    }
    if tested {
        text += "test:\n  - name: boots\n    run: echo boots\n";
    }
    if tested && !group {
        // As the rudder recipe: the tester takes a subnet of the group, which is only read.
        text += &format!("tester: {{ auto_scaling_group: {GROUP} }}\n");
    }
    kiln.write("app.yaml", &text).to_str().unwrap().to_owned()
}

/// The policy `kiln iam-policy` prints for `recipe` (it reads both roles from the emulator).
fn policy_for(kiln: &Kiln, recipe: &str) -> Value {
    let run = kiln.run(&["iam-policy", recipe]);
    run.assert_code(0);
    run.json()
}

/// Two releases and a rollback of `recipe`.
fn release_runs(kiln: &Kiln, recipe: &str) {
    kiln.run(&["build", recipe]).assert_code(0);
    kiln.run(&["build", recipe, "--var", "flavour=second"])
        .assert_code(0);
    kiln.run(&["rollback", recipe]).assert_code(0);
}

/// Every authorization of kiln's recorded requests, each allowed by `policy`; returns them.
fn assert_policy_allows_what_kiln_needed(
    emulator: &Emulator,
    policy: &Value,
    shape: &str,
) -> Vec<Value> {
    let mut missing = BTreeSet::new();
    let mut all = Vec::new();
    for request in emulator.kiln_requests() {
        let ok = request["status"]
            .as_i64()
            .is_some_and(|s| (200..300).contains(&s));
        if let (true, Some(error)) = (ok, request["authorization_error"].as_str()) {
            missing.insert(format!(
                "{}: the emulator could not tell what it needs: {error}",
                request["action"]
            ));
        }
        for authorization in request["authorizations"].as_array().into_iter().flatten() {
            if let Some(why) = denial(policy, authorization) {
                missing.insert(why);
            }
            all.push(authorization.clone());
        }
    }
    assert!(
        missing.is_empty(),
        "{shape}: the policy of `kiln iam-policy` does not allow what kiln's requests needed:\n  {}",
        missing.into_iter().collect::<Vec<_>>().join("\n  ")
    );
    all
}

/// Whether some recorded authorization is `action` on a resource matching `resource`.
fn recorded(all: &[Value], action: &str, resource: &str) -> bool {
    all.iter().any(|a| {
        a["action"] == action && arn_matches(resource, a["resource"].as_str().unwrap_or_default())
    })
}

/// Release runs of the recipe of this shape on `emulator`, checked against its policy; every
/// authorization kiln's requests needed.
fn check_shape(emulator: &Emulator, group: bool, tested: bool, shape: &str) -> Vec<Value> {
    let kiln = Kiln::new(emulator);
    let recipe = shaped_recipe(&kiln, group, tested);
    let policy = policy_for(&kiln, &recipe);
    emulator.clear_requests();
    release_runs(&kiln, &recipe);
    assert_policy_allows_what_kiln_needed(emulator, &policy, shape)
}

/// RunInstances subnets recorded.
fn launch_subnets(all: &[Value]) -> BTreeSet<&str> {
    all.iter()
        .filter(|a| a["action"] == "ec2:RunInstances")
        .filter_map(|a| a["resource"].as_str())
        .filter(|r| r.contains(":subnet/"))
        .collect()
}

#[test]
fn with_a_test_phase_and_a_group_the_policy_allows_every_resource_kiln_used() {
    let emulator = Emulator::seeded();
    let all = check_shape(&emulator, true, true, "test: and auto_scaling_group");
    // The tester from the template; the group's launch check in every subnet of its
    // VPCZoneIdentifier.
    assert!(recorded(
        &all,
        "ec2:RunInstances",
        "arn:aws:ec2:*:*:launch-template/*"
    ));
    assert!(recorded(
        &all,
        "autoscaling:StartInstanceRefresh",
        "arn:aws:autoscaling:*:*:autoScalingGroup:*:autoScalingGroupName/rudder-dataplane"
    ));
    assert!(recorded(
        &all,
        "ssm:SendCommand",
        "arn:aws:ec2:*:*:instance/*"
    ));
    assert!(launch_subnets(&all).len() > 1, "{:?}", launch_subnets(&all));
}

#[test]
fn with_a_group_and_no_test_phase_the_policy_allows_every_resource_kiln_used() {
    let emulator = Emulator::seeded();
    let all = check_shape(&emulator, true, false, "auto_scaling_group without test:");
    assert!(recorded(
        &all,
        "ec2:RunInstances",
        "arn:aws:ec2:*:*:launch-template/*"
    ));
    assert!(recorded(
        &all,
        "autoscaling:UpdateAutoScalingGroup",
        "arn:aws:autoscaling:*:*:autoScalingGroup:*:autoScalingGroupName/rudder-dataplane"
    ));
}

#[test]
fn without_a_test_phase_or_a_group_the_policy_allows_every_resource_kiln_used() {
    let emulator = Emulator::seeded();
    let all = check_shape(&emulator, false, false, "no test:, no group");
    assert!(recorded(
        &all,
        "ec2:ModifyLaunchTemplate",
        "arn:aws:ec2:*:*:launch-template/*"
    ));
    assert!(!recorded(
        &all,
        "ec2:RunInstances",
        "arn:aws:ec2:*:*:launch-template/*"
    ));
}

#[test]
fn with_a_key_pair_and_an_instance_profile_in_the_template_the_policy_allows_them() {
    let emulator = Emulator::seeded();
    let aws = emulator.aws();
    aws.block_on(aws.ec2.create_key_pair().key_name("ops").send())
        .expect("CreateKeyPair");
    let assume = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
    aws.block_on(
        aws.iam
            .create_role()
            .role_name("web-role")
            .assume_role_policy_document(assume)
            .send(),
    )
    .expect("CreateRole");
    aws.empty_instance_profile("web-profile");
    aws.block_on(
        aws.iam
            .add_role_to_instance_profile()
            .instance_profile_name("web-profile")
            .role_name("web-role")
            .send(),
    )
    .expect("AddRoleToInstanceProfile");
    // Production's instances: a key pair and their own profile, named in the default version.
    let data = aws_sdk_ec2::types::RequestLaunchTemplateData::builder()
        .key_name("ops")
        .iam_instance_profile(
            aws_sdk_ec2::types::LaunchTemplateIamInstanceProfileSpecificationRequest::builder()
                .name("web-profile")
                .build(),
        )
        .build();
    aws.new_default_version(GROUP, data);
    // The tester launches from the template (no group: only the test phase needs it).
    let all = check_shape(
        &emulator,
        false,
        true,
        "test: with a KeyName and a profile in the template",
    );
    assert!(recorded(
        &all,
        "ec2:RunInstances",
        "arn:aws:ec2:*:*:key-pair/ops"
    ));
    assert!(recorded(
        &all,
        "iam:PassRole",
        "arn:aws:iam::*:role/web-role"
    ));
    assert!(recorded(
        &all,
        "iam:PassRole",
        "arn:aws:iam::*:role/kiln-builder"
    ));
}

#[test]
fn the_evaluator_allows_only_the_action_resource_and_conditions_a_statement_names() {
    let policy = json!({"Version": "2012-10-17", "Statement": [
        {"Sid": "Drive", "Effect": "Allow", "Action": ["ec2:TerminateInstances"],
         "Resource": "arn:aws:ec2:*:*:instance/*",
         "Condition": {"StringEquals": {"ec2:ResourceTag/kiln:role": "builder"}}},
        {"Sid": "Hold", "Effect": "Allow", "Action": "ec2:CreateTags",
         "Resource": "arn:aws:ec2:*:*:launch-template/*",
         "Condition": {"ForAllValues:StringEquals": {"aws:TagKeys": ["kiln:hold"]}}},
        {"Sid": "Run", "Effect": "Allow", "Action": "ec2:RunInstances",
         "Resource": ["arn:aws:ec2:*::image/*", "arn:aws:ec2:*:*:subnet/*"]},
        {"Sid": "Odd", "Effect": "Allow", "Action": "ec2:StopInstances", "Resource": "*",
         "Condition": {"NumericLessThan": {"ec2:Count": "2"}}}
    ]});
    let auth = |action: &str, resource: &str, context: Value| json!({"action": action, "resource": resource, "context": context});
    let instance = "arn:aws:ec2:us-east-1:123456789012:instance/i-1";
    // Allowed: the action (any case), the resource, the tag.
    let builder = json!({"ec2:ResourceTag/kiln:role": "builder"});
    assert_eq!(
        denial(
            &policy,
            &auth("ec2:TerminateInstances", instance, builder.clone())
        ),
        None
    );
    assert_eq!(
        denial(
            &policy,
            &auth("EC2:terminateinstances", instance, builder.clone())
        ),
        None
    );
    // `*` in the account matches an image ARN's empty account.
    assert_eq!(
        denial(
            &policy,
            &auth(
                "ec2:RunInstances",
                "arn:aws:ec2:us-east-1::image/ami-1",
                json!({})
            )
        ),
        None
    );
    // Wrong resource, wrong action.
    let why = denial(
        &policy,
        &auth(
            "ec2:RunInstances",
            "arn:aws:ec2:us-east-1:123456789012:key-pair/ops",
            json!({}),
        ),
    )
    .unwrap();
    assert!(why.contains("no statement allows ec2:RunInstances on arn:aws:ec2:us-east-1:123456789012:key-pair/ops"), "{why}");
    assert!(denial(
        &policy,
        &auth("ec2:StopInstances", instance, builder.clone())
    )
    .is_some());
    // Condition mismatch, and a missing key, name the condition.
    let why = denial(
        &policy,
        &auth(
            "ec2:TerminateInstances",
            instance,
            json!({"ec2:ResourceTag/kiln:role": "tester"}),
        ),
    )
    .unwrap();
    assert!(
        why.contains("Drive")
            && why.contains("ec2:ResourceTag/kiln:role")
            && why.contains("tester"),
        "{why}"
    );
    let why = denial(
        &policy,
        &auth("ec2:TerminateInstances", instance, json!({})),
    )
    .unwrap();
    assert!(why.contains("a key the request does not have"), "{why}");
    // Set operators: every tag key must be listed; a missing key fails closed.
    let template = "arn:aws:ec2:us-east-1:123456789012:launch-template/lt-1";
    assert_eq!(
        denial(
            &policy,
            &auth(
                "ec2:CreateTags",
                template,
                json!({"aws:TagKeys": ["kiln:hold"]})
            )
        ),
        None
    );
    assert!(denial(
        &policy,
        &auth(
            "ec2:CreateTags",
            template,
            json!({"aws:TagKeys": ["kiln:hold", "owner"]})
        )
    )
    .is_some());
    assert!(denial(&policy, &auth("ec2:CreateTags", template, json!({}))).is_some());
    // An operator the evaluator does not know never allows.
    assert!(denial(
        &policy,
        &auth("ec2:StopInstances", instance, json!({"ec2:Count": "1"}))
    )
    .is_some());
    // A Deny wins.
    let mut denied = policy.clone();
    denied["Statement"].as_array_mut().unwrap().push(json!(
        {"Effect": "Deny", "Action": "ec2:*", "Resource": "*"}));
    assert!(denial(&denied, &auth("ec2:TerminateInstances", instance, builder)).is_some());
    assert!(glob("a*c?e", "abbbcde") && !glob("a*c", "abd"));
}
