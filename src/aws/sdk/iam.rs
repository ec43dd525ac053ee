//! IAM: the instance profile a recipe names, for the build's preflight.
//!
//! IAM is global: the client shares the configuration of the others (credentials, endpoint
//! override); the SDK signs for IAM's own region whatever the configured one is. Errors still
//! name the region kiln builds in, where the profile is used.

use super::common::absent_on;
use super::Sdk;
use crate::aws::model::InstanceProfile;
use crate::error::Result;

/// `GetInstanceProfile` by the name in `reference` (a name or an ARN); `None` on
/// `NoSuchEntity`, or when `reference` is an ARN the profile of that name does not have.
pub async fn instance_profile(sdk: &Sdk, reference: &str) -> Result<Option<InstanceProfile>> {
    const OP: &str = "GetInstanceProfile";
    let resource = format!("instance profile {reference}");
    let answer = sdk
        .iam
        .get_instance_profile()
        .instance_profile_name(InstanceProfile::name_in(reference))
        .send()
        .await
        .map_err(|e| sdk.fail(OP, &resource, e));
    let Some(out) = absent_on(answer, &["NoSuchEntity"])? else {
        return Ok(None);
    };
    let found = sdk.required(out.instance_profile(), OP, "InstanceProfile", &resource)?;
    // The SDK fills a required field AWS left out with an empty string: read that as missing.
    let text = |value: &str, field: &str| {
        let value = (!value.is_empty()).then(|| value.to_owned());
        sdk.required(value, OP, field, &resource)
    };
    let mut roles = Vec::new();
    for (i, role) in found.roles().iter().enumerate() {
        roles.push(text(
            role.role_name(),
            &format!("InstanceProfile.Roles[{i}].RoleName"),
        )?);
    }
    let profile = InstanceProfile {
        name: text(
            found.instance_profile_name(),
            "InstanceProfile.InstanceProfileName",
        )?,
        arn: text(found.arn(), "InstanceProfile.Arn")?,
        roles,
    };
    Ok(profile.is_named_by(reference).then_some(profile))
}
