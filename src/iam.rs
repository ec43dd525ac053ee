//! `kiln iam-policy`: the least-privilege IAM policy the caller of kiln needs for a recipe.
//!
//! Pure: built from the plan alone. Mutating actions are scoped to kiln's own resources where
//! IAM allows it (builders by their `kiln:role` tag, the recipe's launch template, the recipe's
//! SSM parameter); describe calls cannot be scoped and use `*`.

use serde_json::{json, Value};

use crate::plan::Plan;
use crate::tags;

/// The policy document for building, releasing, rolling back, pruning and collecting garbage
/// for `plan`.
pub fn policy(plan: &Plan) -> Value {
    let mut statements = build_statements();
    if let Some(profile) = &plan.builder.iam_instance_profile {
        statements.push(pass_role(profile));
    }
    if let Some(release) = &plan.release {
        statements.extend(release_statements(release));
    }
    if let Some(parameter) = &plan.image.ssm_parameter {
        statements.push(json!({
            "Sid": "KilnPublishParameter",
            "Effect": "Allow",
            "Action": ["ssm:PutParameter"],
            "Resource": format!("arn:aws:ssm:*:*:parameter{parameter}")
        }));
    }
    json!({ "Version": "2012-10-17", "Statement": statements })
}

/// What every build needs: describe, launch, tag, drive the builder, images, Run Command.
fn build_statements() -> Vec<Value> {
    vec![
        json!({
            "Sid": "KilnDescribe",
            "Effect": "Allow",
            "Action": [
                "ec2:DescribeImages", "ec2:DescribeInstances", "ec2:DescribeSnapshots",
                "ec2:DescribeLaunchTemplates", "ec2:DescribeLaunchTemplateVersions",
                // DescribeImageReferences also needs to describe what it checks (SSM parameters).
                "ec2:DescribeImageReferences", "ssm:DescribeParameters",
                "ssm:DescribeInstanceInformation", "ssm:GetCommandInvocation", "ssm:ListCommandInvocations"
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
            "Sid": "KilnTag",
            "Effect": "Allow",
            "Action": ["ec2:CreateTags"],
            "Resource": ["arn:aws:ec2:*:*:instance/*", "arn:aws:ec2:*:*:volume/*", "arn:aws:ec2:*::image/*", "arn:aws:ec2:*:*:snapshot/*"]
        }),
        json!({
            "Sid": "KilnDriveBuilder",
            "Effect": "Allow",
            "Action": ["ec2:StopInstances", "ec2:TerminateInstances", "ec2:CreateImage"],
            "Resource": "arn:aws:ec2:*:*:instance/*",
            "Condition": { "StringEquals": { format!("ec2:ResourceTag/{}", tags::ROLE): tags::ROLE_BUILDER } }
        }),
        json!({
            "Sid": "KilnImages",
            "Effect": "Allow",
            "Action": [
                "ec2:CreateImage", "ec2:CopyImage", "ec2:DeregisterImage", "ec2:DeleteSnapshot", "ec2:ModifyImageAttribute", "ec2:ModifySnapshotAttribute",
                "ec2:EnableImageDeprecation", "ec2:EnableImageDeregistrationProtection", "ec2:DisableImageDeregistrationProtection"
            ],
            // Image ARNs have no account; snapshot ARNs do.
            "Resource": ["arn:aws:ec2:*::image/*", "arn:aws:ec2:*:*:snapshot/*"]
        }),
        json!({
            "Sid": "KilnRunCommandDocument",
            "Effect": "Allow",
            "Action": ["ssm:SendCommand"],
            "Resource": "arn:aws:ssm:*::document/AWS-RunShellScript"
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

/// Passing the builder's role to EC2.
fn pass_role(profile: &str) -> Value {
    let role = profile.rsplit('/').next().unwrap_or(profile);
    json!({
        "Sid": "KilnPassBuilderRole",
        "Effect": "Allow",
        "Action": ["iam:PassRole"],
        "Resource": format!("arn:aws:iam::*:role/{role}"),
        "Condition": { "StringEquals": { "iam:PassedToService": "ec2.amazonaws.com" } }
    })
}

/// Releasing to the launch template, and refreshing the group when the recipe names one.
fn release_statements(release: &crate::plan::ReleaseSpec) -> Vec<Value> {
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
    if let Some(group) = &release.auto_scaling_group {
        statements.push(json!({
            "Sid": "KilnInstanceRefresh",
            "Effect": "Allow",
            "Action": ["autoscaling:StartInstanceRefresh", "autoscaling:CancelInstanceRefresh"],
            "Resource": format!("arn:aws:autoscaling:*:*:autoScalingGroup:*:autoScalingGroupName/{group}")
        }));
        statements.push(json!({
            "Sid": "KilnFollowRefresh",
            "Effect": "Allow",
            "Action": ["autoscaling:DescribeInstanceRefreshes"],
            "Resource": "*"
        }));
    }
    statements
}
