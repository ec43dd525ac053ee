//! A build's preflight of the builder's instance profile: before anything is created, the profile
//! the recipe names (`builder.iam_instance_profile`, a name or an ARN) must exist and hold a role.
//! Without a role the builder gets no credentials and its SSM agent never registers, which would
//! otherwise show only after `timeouts.ssm_online`. The tester launched without a release
//! section uses the same profile, so this one check covers it too.
//!
//! A caller whose policy lacks `iam:GetInstanceProfile` (`AccessDenied`), or that cannot reach
//! IAM (a runner in a private subnet: IAM's VPC endpoint is only in us-east-1), is warned and the
//! build goes on unchecked: the check must not stop builds that worked before it existed.

use crate::aws::{Cloud, InstanceProfile, Meaning};
use crate::error::{Error, Result};
use crate::pipeline::Context;
use crate::plan::Plan;

/// Refuses a build whose builder profile is missing or has no role; warns (once per build,
/// since a build checks once) when IAM does not let the caller look.
pub async fn check_builder_profile(ctx: &Context<'_>, plan: &Plan) -> Result<()> {
    let Some(reference) = plan.builder.iam_instance_profile.as_deref() else {
        return Ok(());
    };
    let cloud = ctx.cloud.as_ref();
    match cloud.instance_profile(reference).await {
        Ok(Some(profile)) if profile.roles.is_empty() => Err(no_role(&profile)),
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(missing(cloud, plan, reference)),
        Err(e) if e.meaning() == Some(Meaning::Denied) => {
            ctx.reporter.warning(&format!(
                "could not check instance profile `{reference}`: the caller may not call \
                 iam:GetInstanceProfile ({}); going on without the check (`kiln iam-policy RECIPE` \
                 prints a policy that allows it)",
                e.aws_code().unwrap_or_default()
            ));
            Ok(())
        }
        Err(e) if e.is_transient() => {
            ctx.reporter.warning(&format!(
                "could not check instance profile `{reference}`: IAM did not answer ({}); going on \
                 without the check",
                crate::pipeline::first_line(&e.to_string())
            ));
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// The profile does not exist (or, for an ARN, has another ARN).
fn missing(cloud: &dyn Cloud, plan: &Plan, reference: &str) -> Error {
    let name = InstanceProfile::name_in(reference);
    let what = if reference.starts_with("arn:") {
        format!("no instance profile has the ARN `{reference}` (none is named `{name}`, or its account or path differ)")
    } else {
        format!("instance profile `{reference}` does not exist")
    };
    Error::Refused(format!(
        "{what}: GetInstanceProfile found none in the account of the current credentials \
         (IAM is global; the build runs in {region}; `aws sts get-caller-identity` shows the account). \
         Nothing was created. Create it with a role that has AmazonSSMManagedInstanceCore \
         (`aws iam create-instance-profile --instance-profile-name {name}` then \
         `aws iam add-role-to-instance-profile --instance-profile-name {name} --role-name ROLE`), \
         or fix `builder.iam_instance_profile` in {recipe}. If you created it just now, wait a few \
         seconds and retry: IAM is eventually consistent",
        region = cloud.region(),
        recipe = plan.recipe_path.display(),
    ))
}

/// The profile exists but holds no role.
fn no_role(profile: &InstanceProfile) -> Error {
    Error::Refused(format!(
        "instance profile `{name}` ({arn}) has no role: a builder launched with it gets no \
         credentials, so its SSM agent cannot register and kiln cannot run steps. Nothing was \
         created. Add a role that has AmazonSSMManagedInstanceCore: `aws iam \
         add-role-to-instance-profile --instance-profile-name {name} --role-name ROLE`",
        name = profile.name,
        arn = profile.arn,
    ))
}
