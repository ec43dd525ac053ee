//! `kiln iam-policy`: the least-privilege IAM policy the caller of kiln needs for a recipe.
//!
//! Pure: built from the plan (and the builder's role, when the caller names it). Mutating
//! actions are scoped to kiln's own resources where IAM allows it: builders by their `kiln:role`
//! tag, images and their snapshots by their `kiln:recipe` tag, tags only in the call that
//! creates a resource, the recipe's launch template and SSM parameter; describe
//! calls cannot be scoped and use `*`.
//!
//! Every action a policy names is in [`ACTIONS`] with the `Cloud` operation that calls it, so
//! the policy never grants what kiln does not do.

use serde_json::{json, Value};

use crate::aws::InstanceProfile;
use crate::plan::{Plan, SecretSource};
use crate::tags;

/// Every action kiln's policies may name, with the [`Cloud`](crate::aws::Cloud) operation that
/// needs it.
pub const ACTIONS: &[(&str, &str)] = &[
    ("ec2:DescribeImages", "images, find_images"),
    ("ec2:DescribeInstances", "instance, find_instances"),
    ("ec2:DescribeSnapshots", "snapshots_of_image"),
    (
        "ec2:DescribeLaunchTemplates",
        "launch_template, launch_templates",
    ),
    (
        "ec2:DescribeLaunchTemplateVersions",
        "default_template_version, template_versions",
    ),
    ("ec2:DescribeImageReferences", "image_references"),
    (
        "ssm:DescribeParameters",
        "image_references (AWS checks the SSM parameters it looks at)",
    ),
    ("ec2:RunInstances", "launch_instance"),
    (
        "ec2:CreateTags",
        "launch_instance, create_image, copy_image (tags in the creating call); create_tags (the release hold, kiln:test on an image that failed its test, kiln:released on a released image)",
    ),
    ("ec2:StopInstances", "stop_instance"),
    ("ec2:TerminateInstances", "terminate_instance"),
    ("ec2:CreateImage", "create_image"),
    ("ec2:CopyImage", "copy_image"),
    ("ec2:DeregisterImage", "deregister_image"),
    ("ec2:DeleteSnapshot", "delete_snapshot"),
    ("ec2:ModifyImageAttribute", "share_image, require_imdsv2"),
    ("ec2:EnableImageDeprecation", "deprecate_image"),
    ("ec2:EnableImageDeregistrationProtection", "protect_image"),
    (
        "ec2:DisableImageDeregistrationProtection",
        "unprotect_image",
    ),
    ("ec2:ModifySnapshotAttribute", "share_image"),
    ("ec2:CreateLaunchTemplateVersion", "create_template_version"),
    ("ec2:ModifyLaunchTemplate", "set_default_version"),
    (
        "ec2:DeleteLaunchTemplateVersions",
        "delete_template_version",
    ),
    ("ssm:DescribeInstanceInformation", "agent_status"),
    ("ssm:SendCommand", "send_command"),
    ("ssm:GetCommandInvocation", "invocation"),
    ("ssm:CancelCommand", "cancel_command"),
    ("ssm:PutParameter", "put_parameter"),
    (
        "ssm:GetParameter",
        "parameter_value (a secret variable `from: ssm:`)",
    ),
    (
        "secretsmanager:GetSecretValue",
        "secret_value (a secret variable `from: secretsmanager:`)",
    ),
    ("autoscaling:StartInstanceRefresh", "start_refresh"),
    ("autoscaling:DescribeInstanceRefreshes", "refresh, active_refresh"),
    ("autoscaling:RollbackInstanceRefresh", "rollback_refresh"),
    (
        "autoscaling:DescribeAutoScalingGroups",
        "auto_scaling_group, auto_scaling_groups",
    ),
    (
        "autoscaling:UpdateAutoScalingGroup",
        "set_group_launch_template, set_group_max_size (a verified release pins a group on $Default/$Latest and makes room for one more instance)",
    ),
    ("elasticloadbalancing:DescribeTargetHealth", "target_health"),
    (
        "ec2:DeleteTags",
        "delete_tags (the release hold on launch templates)",
    ),
    (
        "iam:GetInstanceProfile",
        "instance_profile (the build's preflight of the builder's profile)",
    ),
    (
        "iam:PassRole",
        "launch_instance (RunInstances with an instance profile passes its role)",
    ),
    (
        "kms:DescribeKey",
        "launch_instance, copy_image with a customer managed key",
    ),
    (
        "kms:CreateGrant",
        "launch_instance, copy_image with a customer managed key",
    ),
    (
        "kms:GenerateDataKeyWithoutPlaintext",
        "launch_instance, copy_image with a customer managed key",
    ),
    (
        "kms:ReEncryptFrom",
        "copy_image with a customer managed key",
    ),
    ("kms:ReEncryptTo", "copy_image with a customer managed key"),
    (
        "kms:Decrypt",
        "launch_instance, copy_image with a customer managed key",
    ),
];

/// The policy document for building, releasing, rolling back, pruning and collecting garbage
/// for `plan`. `builder_role` is the role inside the builder's instance profile (a name or an
/// ARN); without it the role is guessed to have the profile's name (see [`builder_role_note`]).
pub fn policy(plan: &Plan, builder_role: Option<&str>) -> Value {
    let mut statements = build_statements(&plan.name);
    if let Some(profile) = &plan.builder.iam_instance_profile {
        statements.push(read_profile(profile));
        statements.push(pass_role(builder_role.unwrap_or(profile)));
    }
    if let Some(release) = &plan.release {
        statements.extend(release_statements(release, &plan.name));
    }
    if let Some(statement) = kms_statement(plan) {
        statements.push(statement);
    }
    if !plan.test.is_empty() {
        statements.extend(tester_statements(&plan.name, plan.release.is_some()));
    }
    if let Some(parameter) = &plan.image.ssm_parameter {
        statements.push(json!({
            "Sid": "KilnPublishParameter",
            "Effect": "Allow",
            "Action": ["ssm:PutParameter"],
            "Resource": format!("arn:aws:ssm:*:*:parameter{parameter}")
        }));
    }
    statements.extend(source_statements(plan));
    json!({ "Version": "2012-10-17", "Statement": statements })
}

/// Reading the recipe's secret variables declared `from: ssm:` (`ssm:GetParameter` on each
/// parameter) and `from: secretsmanager:` (`secretsmanager:GetSecretValue` on each secret: by
/// name, the ARN ends in `-` and six random characters). No `kms:Decrypt`: the AWS managed keys
/// `aws/ssm` and `aws/secretsmanager` grant it to every principal of the account ("The AWS
/// managed key for Parameter Store (aws/ssm) grants Decrypt permission to all IAM principals in
/// the AWS account", Systems Manager user guide); a customer managed key is not named in the
/// recipe, see [`source_key_note`].
fn source_statements(plan: &Plan) -> Vec<Value> {
    let mut parameters = Vec::new();
    let mut secrets = Vec::new();
    for declared in &plan.sources {
        match &declared.source {
            SecretSource::Env(_) => {}
            SecretSource::Ssm(name) => {
                let path = if name.starts_with('/') {
                    name.clone()
                } else {
                    format!("/{name}")
                };
                parameters.push(format!("arn:aws:ssm:*:*:parameter{path}"));
            }
            SecretSource::SecretsManager { id, .. } if id.starts_with("arn:") => {
                secrets.push(id.clone())
            }
            SecretSource::SecretsManager { id, .. } => {
                secrets.push(format!("arn:aws:secretsmanager:*:*:secret:{id}-??????"))
            }
        }
    }
    parameters.sort();
    parameters.dedup();
    secrets.sort();
    secrets.dedup();
    let mut statements = Vec::new();
    if !parameters.is_empty() {
        statements.push(json!({
            "Sid": "KilnReadSecretParameters",
            "Effect": "Allow",
            "Action": ["ssm:GetParameter"],
            "Resource": parameters
        }));
    }
    if !secrets.is_empty() {
        statements.push(json!({
            "Sid": "KilnReadSecrets",
            "Effect": "Allow",
            "Action": ["secretsmanager:GetSecretValue"],
            "Resource": secrets
        }));
    }
    statements
}

/// What to tell the caller when the recipe reads SSM parameters or Secrets Manager secrets:
/// one encrypted with a customer managed KMS key also needs `kms:Decrypt` on that key.
pub fn source_key_note(plan: &Plan) -> Option<String> {
    let reads = plan
        .sources
        .iter()
        .any(|declared| !matches!(declared.source, SecretSource::Env(_)));
    reads.then(|| {
        "note: the policy reads the recipe's `from: ssm:` parameters and `from: secretsmanager:` secrets without kms:Decrypt, \
         which the AWS managed keys (aws/ssm, aws/secretsmanager) grant to every principal of the account; for one encrypted \
         with a customer managed KMS key, also allow kms:Decrypt on that key (with the condition kms:ViaService = \
         ssm.REGION.amazonaws.com or secretsmanager.REGION.amazonaws.com)"
            .to_owned()
    })
}

/// What to tell the caller when the policy's `iam:PassRole` names a guessed role.
pub fn builder_role_note(plan: &Plan, builder_role: Option<&str>) -> Option<String> {
    let profile = plan.builder.iam_instance_profile.as_deref()?;
    if builder_role.is_some() {
        return None;
    }
    let name = InstanceProfile::name_in(profile);
    Some(format!(
        "note: iam:PassRole names the role `{name}`, a guess: AWS checks PassRole on the role inside the instance profile \
         `{profile}`, whose name may differ. Find it with\n  aws iam get-instance-profile --instance-profile-name {name} \
         --query 'InstanceProfile.Roles[0].RoleName' --output text\nand run `kiln iam-policy RECIPE --builder-role ROLE`"
    ))
}

/// Describe calls, launching and driving the builder, tags and images.
fn build_statements(recipe: &str) -> Vec<Value> {
    let mut statements = vec![
        json!({
            "Sid": "KilnDescribe",
            "Effect": "Allow",
            "Action": [
                "ec2:DescribeImages", "ec2:DescribeInstances", "ec2:DescribeSnapshots",
                "ec2:DescribeLaunchTemplates", "ec2:DescribeLaunchTemplateVersions",
                // DescribeImageReferences also needs to describe what it checks (SSM parameters).
                "ec2:DescribeImageReferences", "ssm:DescribeParameters",
                "ssm:DescribeInstanceInformation", "ssm:GetCommandInvocation"
            ],
            "Resource": "*"
        }),
        json!({
            "Sid": "KilnLaunchBuilder",
            "Effect": "Allow",
            "Action": ["ec2:RunInstances"],
            "Resource": [
                "arn:aws:ec2:*:*:instance/*", "arn:aws:ec2:*:*:volume/*", "arn:aws:ec2:*:*:network-interface/*",
                "arn:aws:ec2:*:*:subnet/*", "arn:aws:ec2:*:*:security-group/*", "arn:aws:ec2:*::image/*", "arn:aws:ec2:*:*:image/*"
            ]
        }),
        json!({
            "Sid": "KilnDriveBuilder",
            "Effect": "Allow",
            "Action": ["ec2:StopInstances", "ec2:TerminateInstances", "ec2:CreateImage"],
            "Resource": "arn:aws:ec2:*:*:instance/*",
            "Condition": { "StringEquals": { format!("ec2:ResourceTag/{}", tags::ROLE): tags::ROLE_BUILDER } }
        }),
        json!({
            "Sid": "KilnCreateImages",
            "Effect": "Allow",
            "Action": ["ec2:CreateImage", "ec2:CopyImage"],
            // Image ARNs have no account; snapshot ARNs do.
            "Resource": ["arn:aws:ec2:*::image/*", "arn:aws:ec2:*:*:snapshot/*"]
        }),
    ];
    statements.extend(tag_statements());
    statements.extend(own_image_statements(recipe));
    statements.extend(run_command_statements());
    statements
}

/// Tags only in the call that creates the resource (kiln tags everything it makes that way), so
/// the policy cannot tag an existing instance `kiln:role=builder` and then drive it, nor tag
/// someone else's image as this recipe's and then deregister it.
fn tag_statements() -> Vec<Value> {
    vec![json!({
        "Sid": "KilnTagOnCreate",
        "Effect": "Allow",
        "Action": ["ec2:CreateTags"],
        "Resource": ["arn:aws:ec2:*:*:instance/*", "arn:aws:ec2:*:*:volume/*", "arn:aws:ec2:*::image/*", "arn:aws:ec2:*:*:snapshot/*"],
        "Condition": { "StringEquals": { "ec2:CreateAction": ["RunInstances", "CreateImage", "CopyImage"] } }
    })]
}

/// Deregistering, deleting, sharing and image settings: only images and snapshots tagged as
/// this recipe's (kiln tags them in CreateImage and CopyImage, so even a pending image's
/// snapshots carry the tag).
fn own_image_statements(recipe: &str) -> Vec<Value> {
    vec![json!({
        "Sid": "KilnManageOwnImages",
        "Effect": "Allow",
        "Action": [
            "ec2:DeregisterImage", "ec2:DeleteSnapshot", "ec2:ModifyImageAttribute", "ec2:ModifySnapshotAttribute",
            "ec2:EnableImageDeprecation", "ec2:EnableImageDeregistrationProtection", "ec2:DisableImageDeregistrationProtection"
        ],
        "Resource": ["arn:aws:ec2:*::image/*", "arn:aws:ec2:*:*:snapshot/*"],
        "Condition": { "StringEquals": { format!("ec2:ResourceTag/{}", tags::RECIPE): recipe } }
    })]
}

/// Run Command: the shell document, on builders only.
fn run_command_statements() -> Vec<Value> {
    vec![
        json!({
            "Sid": "KilnRunCommandDocument",
            "Effect": "Allow",
            "Action": ["ssm:SendCommand"],
            "Resource": "arn:aws:ssm:*:*:document/AWS-RunShellScript"
        }),
        json!({
            "Sid": "KilnRunCommandOnBuilders",
            "Effect": "Allow",
            "Action": ["ssm:SendCommand"],
            "Resource": "arn:aws:ec2:*:*:instance/*",
            "Condition": { "StringEquals": { format!("ssm:resourceTag/{}", tags::ROLE): tags::ROLE_BUILDER } }
        }),
        json!({
            // Command ids have no ARN to scope by.
            "Sid": "KilnCancelCommand",
            "Effect": "Allow",
            "Action": ["ssm:CancelCommand"],
            "Resource": "*"
        }),
    ]
}

/// The customer managed keys the recipe names (the builder's volume, each copy region's), used
/// through EC2 only: what EBS needs of the caller to encrypt, copy and re-encrypt with them.
fn kms_statement(plan: &Plan) -> Option<Value> {
    let mut keys: Vec<&String> = plan.builder.kms_key_id.iter().collect();
    keys.extend(plan.image.region_kms_keys.values());
    keys.sort();
    keys.dedup();
    if keys.is_empty() {
        return None;
    }
    let resources: Vec<String> = keys
        .iter()
        .map(|key| {
            if key.starts_with("arn:") {
                (*key).clone()
            } else {
                // A key id or alias: IAM needs the key's ARN; any region and account.
                "arn:aws:kms:*:*:key/*".to_owned()
            }
        })
        .collect();
    Some(json!({
        "Sid": "KilnUseKmsKeys",
        "Effect": "Allow",
        "Action": [
            "kms:DescribeKey", "kms:CreateGrant", "kms:GenerateDataKeyWithoutPlaintext",
            "kms:ReEncryptFrom", "kms:ReEncryptTo", "kms:Decrypt"
        ],
        "Resource": resources,
        "Condition": { "StringLike": { "kms:ViaService": "ec2.*.amazonaws.com" } }
    }))
}

/// The test phase: launch the tester (from the release launch template when there is one), run
/// the test steps on it and terminate it, scoped by its `kiln:role=tester` tag. The launch
/// template's own instance role must also be passable (`iam:PassRole`): it is not in the recipe.
fn tester_statements(recipe: &str, from_template: bool) -> Vec<Value> {
    let mut statements = vec![
        json!({
            // kiln:test=failed on the recipe's image, sent with its kiln:recipe tag.
            "Sid": "KilnMarkFailedTest",
            "Effect": "Allow",
            "Action": ["ec2:CreateTags"],
            "Resource": "arn:aws:ec2:*::image/*",
            "Condition": {
                "StringEquals": { format!("aws:RequestTag/{}", tags::RECIPE): recipe },
                "ForAllValues:StringEquals": { "aws:TagKeys": [tags::TEST, tags::RECIPE] }
            }
        }),
        json!({
            "Sid": "KilnDriveTester",
            "Effect": "Allow",
            "Action": ["ec2:TerminateInstances"],
            "Resource": "arn:aws:ec2:*:*:instance/*",
            "Condition": { "StringEquals": { format!("ec2:ResourceTag/{}", tags::ROLE): tags::ROLE_TESTER } }
        }),
        json!({
            "Sid": "KilnRunCommandOnTesters",
            "Effect": "Allow",
            "Action": ["ssm:SendCommand"],
            "Resource": "arn:aws:ec2:*:*:instance/*",
            "Condition": { "StringEquals": { format!("ssm:resourceTag/{}", tags::ROLE): tags::ROLE_TESTER } }
        }),
    ];
    if from_template {
        // The template and the key pair it may name (RunInstances checks each resource of the
        // launch, what the template version names included).
        statements.push(json!({
            "Sid": "KilnLaunchTesterFromTemplate",
            "Effect": "Allow",
            "Action": ["ec2:RunInstances"],
            "Resource": ["arn:aws:ec2:*:*:launch-template/*", "arn:aws:ec2:*:*:key-pair/*"]
        }));
    }
    statements
}

/// Reading the builder's instance profile (a name or an ARN): the build's preflight checks it
/// exists and holds a role. Its ARN carries its path, which a name does not say: any path.
fn read_profile(profile: &str) -> Value {
    let resource = if profile.starts_with("arn:") {
        json!(profile)
    } else {
        json!([
            format!("arn:aws:iam::*:instance-profile/{profile}"),
            format!("arn:aws:iam::*:instance-profile/*/{profile}")
        ])
    };
    json!({
        "Sid": "KilnReadBuilderProfile",
        "Effect": "Allow",
        "Action": ["iam:GetInstanceProfile"],
        "Resource": resource
    })
}

/// Passing the builder's role (a name or an ARN) to EC2, and to nothing else.
fn pass_role(role: &str) -> Value {
    let resource = if role.starts_with("arn:") {
        role.to_owned()
    } else {
        let name = role.rsplit('/').next().unwrap_or(role);
        format!("arn:aws:iam::*:role/{name}")
    };
    json!({
        "Sid": "KilnPassBuilderRole",
        "Effect": "Allow",
        "Action": ["iam:PassRole"],
        "Resource": resource,
        "Condition": { "StringEquals": { "iam:PassedToService": "ec2.amazonaws.com" } }
    })
}

/// Releasing to the launch template, and refreshing the group when the recipe names one.
fn release_statements(release: &crate::plan::ReleaseSpec, recipe: &str) -> Vec<Value> {
    let mut statements = vec![json!({
        "Sid": "KilnRelease",
        "Effect": "Allow",
        "Action": ["ec2:CreateLaunchTemplateVersion", "ec2:ModifyLaunchTemplate", "ec2:DeleteLaunchTemplateVersions"],
        // Launch template ARNs carry the id, not the name: narrow this to the template's id.
        "Resource": if release.launch_template.starts_with("lt-") {
            format!("arn:aws:ec2:*:*:launch-template/{}", release.launch_template)
        } else {
            "arn:aws:ec2:*:*:launch-template/*".to_owned()
        }
    })];
    // The release hold (`kiln rollback` / `kiln release`): only the kiln:hold tag, only on
    // launch templates.
    statements.push(json!({
        "Sid": "KilnReleaseHold",
        "Effect": "Allow",
        "Action": ["ec2:CreateTags", "ec2:DeleteTags"],
        "Resource": "arn:aws:ec2:*:*:launch-template/*",
        "Condition": { "ForAllValues:StringEquals": { "aws:TagKeys": ["kiln:hold"] } }
    }));
    // `kiln:released` on the image a release made the default (rollback goes back only to
    // released images): only that key, only on this recipe's images.
    statements.push(json!({
        "Sid": "KilnMarkReleased",
        "Effect": "Allow",
        "Action": ["ec2:CreateTags"],
        "Resource": "arn:aws:ec2:*::image/*",
        "Condition": {
            "StringEquals": { format!("ec2:ResourceTag/{}", tags::RECIPE): recipe },
            "ForAllValues:StringEquals": { "aws:TagKeys": [tags::RELEASED] }
        }
    }));
    // Every release, teardown and prune reads which versions groups, their instances and
    // active refreshes use (never deleting those). Describe actions of these services take no
    // resource narrower than "*".
    statements.push(json!({
        "Sid": "KilnReadGroups",
        "Effect": "Allow",
        "Action": ["autoscaling:DescribeInstanceRefreshes", "autoscaling:DescribeAutoScalingGroups", "elasticloadbalancing:DescribeTargetHealth"],
        "Resource": "*"
    }));
    if let Some(group) = &release.auto_scaling_group {
        statements.push(json!({
            "Sid": "KilnInstanceRefresh",
            "Effect": "Allow",
            "Action": ["autoscaling:StartInstanceRefresh", "autoscaling:RollbackInstanceRefresh", "autoscaling:UpdateAutoScalingGroup"],
            "Resource": format!("arn:aws:autoscaling:*:*:autoScalingGroup:*:autoScalingGroupName/{group}")
        }));
        // StartInstanceRefresh and UpdateAutoScalingGroup check the caller's permissions
        // against the launch template with an ec2:RunInstances dry run ("Control Amazon EC2
        // launch template usage in Auto Scaling groups"): the template and what it names.
        statements.push(json!({
            "Sid": "KilnGroupLaunchesFromTemplate",
            "Effect": "Allow",
            "Action": ["ec2:RunInstances"],
            "Resource": [
                "arn:aws:ec2:*:*:launch-template/*", "arn:aws:ec2:*:*:key-pair/*",
                "arn:aws:ec2:*:*:instance/*", "arn:aws:ec2:*:*:volume/*", "arn:aws:ec2:*:*:network-interface/*",
                "arn:aws:ec2:*:*:subnet/*", "arn:aws:ec2:*:*:security-group/*", "arn:aws:ec2:*::image/*"
            ]
        }));
    }
    statements
}

/// `iam:PassRole` on the role inside the release launch template's instance profile: launching
/// from the template (the tester; StartInstanceRefresh and UpdateAutoScalingGroup, which AWS
/// checks with a RunInstances dry run) passes that role.
pub fn pass_template_role(role: &str) -> Value {
    let mut statement = pass_role(role);
    statement["Sid"] = json!("KilnPassTemplateRole");
    statement
}

/// The ARN partition of a region: `aws-cn` for China, `aws-us-gov` for GovCloud, `aws-iso` and
/// `aws-iso-b` for the isolated regions, `aws` elsewhere.
pub fn partition(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else if region.starts_with("us-isob-") {
        "aws-iso-b"
    } else if region.starts_with("us-iso-") {
        "aws-iso"
    } else {
        "aws"
    }
}

/// `policy` with every ARN it writes (`arn:aws:...`) in `partition` instead.
pub fn in_partition(policy: Value, partition: &str) -> Value {
    match policy {
        Value::String(text) => match text.strip_prefix("arn:aws:") {
            Some(rest) => Value::String(format!("arn:{partition}:{rest}")),
            None => Value::String(text),
        },
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|v| in_partition(v, partition))
                .collect(),
        ),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, in_partition(v, partition)))
                .collect(),
        ),
        other => other,
    }
}

/// Every action named in `policy`.
pub fn actions(policy: &Value) -> Vec<String> {
    let mut actions: Vec<String> = policy["Statement"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["Action"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect();
    actions.sort();
    actions.dedup();
    actions
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recipe::{load_plan, LoadOptions};

    fn full_plan() -> Plan {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let options = LoadOptions {
            now: std::time::SystemTime::UNIX_EPOCH,
            build_id: "b".into(),
            ..LoadOptions::without_build(Vec::new())
        };
        load_plan(&root.join("tests/recipes/full-featured.yaml"), &options).expect("loads")
    }

    #[test]
    fn the_policy_names_exactly_the_actions_kiln_has_an_operation_for() {
        let named = actions(&policy(&full_plan(), None));
        let known: Vec<String> = ACTIONS.iter().map(|(a, _)| a.to_string()).collect();
        for action in &named {
            assert!(
                known.contains(action),
                "{action} has no operation in ACTIONS"
            );
        }
        for action in &known {
            assert!(
                named.contains(action),
                "{action} is in ACTIONS but in no statement"
            );
        }
    }

    #[test]
    fn secret_sources_are_read_only_on_the_parameters_and_secrets_the_recipe_names() {
        let mut plan = full_plan();
        let statement = |policy: &Value, sid: &str| {
            policy["Statement"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["Sid"] == sid)
                .cloned()
        };
        let policy = policy(&plan, None);
        let parameters = statement(&policy, "KilnReadSecretParameters").expect("parameters");
        assert_eq!(parameters["Action"], json!(["ssm:GetParameter"]));
        assert_eq!(
            parameters["Resource"],
            json!(["arn:aws:ssm:*:*:parameter/kiln/full-featured/api-key"])
        );
        let secrets = statement(&policy, "KilnReadSecrets").expect("secrets");
        assert_eq!(secrets["Action"], json!(["secretsmanager:GetSecretValue"]));
        assert_eq!(
            secrets["Resource"],
            json!(["arn:aws:secretsmanager:*:*:secret:kiln/full-featured/db-??????"])
        );
        assert!(source_key_note(&plan).is_some());
        // An ARN is taken as written; `env:` sources need no permission.
        plan.sources[1].source = SecretSource::SecretsManager {
            id: "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf".into(),
            key: None,
        };
        plan.sources[0].source = SecretSource::Env("API_KEY".into());
        let policy = super::policy(&plan, None);
        assert!(statement(&policy, "KilnReadSecretParameters").is_none());
        assert_eq!(
            statement(&policy, "KilnReadSecrets").unwrap()["Resource"],
            json!(["arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf"])
        );
        plan.sources.remove(1);
        assert!(source_key_note(&plan).is_none());
        assert!(statement(&super::policy(&plan, None), "KilnReadSecrets").is_none());
    }

    #[test]
    fn arns_follow_the_partition_of_the_region() {
        assert_eq!(partition("us-east-1"), "aws");
        assert_eq!(partition("cn-north-1"), "aws-cn");
        assert_eq!(partition("us-gov-west-1"), "aws-us-gov");
        let policy = in_partition(policy(&full_plan(), Some("ci")), partition("cn-north-1"));
        let text = policy.to_string();
        assert!(!text.contains("arn:aws:"), "{text}");
        assert!(text.contains("arn:aws-cn:iam::*:role/ci"), "{text}");
        assert!(text.contains("arn:aws-cn:ec2:*::image/*"), "{text}");
    }

    #[test]
    fn tags_only_at_creation_and_changes_only_to_the_recipes_images() {
        let policy = policy(
            &full_plan(),
            Some("arn:aws:iam::123456789012:role/builders/r"),
        );
        let statements = policy["Statement"].as_array().unwrap();
        for statement in statements
            .iter()
            .filter(|s| s["Action"] == json!(["ec2:CreateTags"]))
        {
            let condition = &statement["Condition"]["StringEquals"];
            let on_create = condition.get("ec2:CreateAction").is_some();
            let instances = statement["Resource"].to_string().contains(":instance/");
            assert!(on_create || !instances, "{statement}");
            // On an existing image: only as this recipe's, sent with its kiln:recipe tag or on an
            // image that already has it.
            assert!(
                on_create
                    || condition.get("aws:RequestTag/kiln:recipe").is_some()
                    || condition.get("ec2:ResourceTag/kiln:recipe").is_some(),
                "{statement}"
            );
        }
        let manage = statements
            .iter()
            .find(|s| s["Sid"] == "KilnManageOwnImages")
            .unwrap();
        assert_eq!(
            manage["Condition"]["StringEquals"]["ec2:ResourceTag/kiln:recipe"],
            json!(full_plan().name)
        );
        let pass = statements
            .iter()
            .find(|s| s["Sid"] == "KilnPassBuilderRole")
            .unwrap();
        assert_eq!(
            pass["Resource"],
            json!("arn:aws:iam::123456789012:role/builders/r")
        );
    }

    #[test]
    fn the_builder_profile_is_read_only_by_its_name_on_any_path_or_by_its_arn() {
        let statement = |profile: &str| {
            let mut plan = full_plan();
            plan.builder.iam_instance_profile = Some(profile.to_owned());
            policy(&plan, None)["Statement"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["Sid"] == "KilnReadBuilderProfile")
                .cloned()
                .expect("a GetInstanceProfile statement")
        };
        let by_name = statement("kiln-builder");
        assert_eq!(by_name["Action"], json!(["iam:GetInstanceProfile"]));
        assert_eq!(
            by_name["Resource"],
            json!([
                "arn:aws:iam::*:instance-profile/kiln-builder",
                "arn:aws:iam::*:instance-profile/*/kiln-builder"
            ])
        );
        let arn = "arn:aws:iam::123456789012:instance-profile/ci/kiln-builder";
        assert_eq!(statement(arn)["Resource"], json!(arn));
        let mut plan = full_plan();
        plan.builder.iam_instance_profile = None;
        let none = policy(&plan, None);
        assert!(!actions(&none).contains(&"iam:GetInstanceProfile".to_owned()));
    }
}
