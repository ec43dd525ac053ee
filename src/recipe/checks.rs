//! Format rules for single recipe values (names, AWS ids, paths, modes, ...).
//!
//! Each check takes one value and, when it is not acceptable, returns a message fragment that
//! follows the field path (`` `source.image` `` + `is not an AMI id: ...`). The patterns are those
//! of the recipe contract, written out by hand (the crate has no regex dependency). This module
//! must not know where values come from or report anything itself.

/// Result of a check: `Err` holds the fragment that follows the field path.
pub(crate) type Check = Result<(), String>;

fn is_lower_alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

fn is_lower_hex(c: char) -> bool {
    c.is_ascii_digit() || ('a'..='f').contains(&c)
}

/// `^[a-z0-9][a-z0-9-]{0,62}$`
pub(crate) fn recipe_name(name: &str) -> Check {
    let valid = name.len() <= 63
        && name.chars().next().is_some_and(is_lower_alnum)
        && name.chars().all(|c| is_lower_alnum(c) || c == '-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "is not a valid recipe name: `{name}` (1 to 63 characters of a-z, 0-9 and `-`, starting with a letter or digit)"
        ))
    }
}

/// A recipe identity: 1 to 128 characters of `a-z 0-9 - _ . / @ :`, starting with a letter or
/// digit (it is written into the `kiln:identity` tag).
pub(crate) fn recipe_id(id: &str) -> Check {
    let allowed = |c: char| is_lower_alnum(c) || "-_./@:".contains(c);
    let valid = (1..=128).contains(&id.len())
        && id.chars().next().is_some_and(is_lower_alnum)
        && id.chars().all(allowed);
    if valid {
        Ok(())
    } else {
        Err(format!(
            "is not a valid recipe id: `{id}` (1 to 128 characters of a-z, 0-9 and `-_./@:`, starting with a letter or digit)"
        ))
    }
}

/// `[A-Za-z0-9._+-]{1,64}`
pub(crate) fn version(version: &str) -> Check {
    let valid = (1..=64).contains(&version.len())
        && version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "is not a valid version: `{version}` (1 to 64 characters of A-Z, a-z, 0-9, `.`, `_`, `+` and `-`)"
        ))
    }
}

/// `^[A-Za-z_][A-Za-z0-9_]*$`, and not the reserved `version`.
pub(crate) fn variable_name(name: &str) -> Check {
    let valid = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(format!(
            "`{name}` is not a valid variable name (letters, digits and `_`, not starting with a digit)"
        ));
    }
    if name == "version" {
        return Err(
            "`version` is reserved: override the recipe version with `--var version=...`".into(),
        );
    }
    Ok(())
}

/// `^ami-([0-9a-f]{8}|[0-9a-f]{17})$`
pub(crate) fn ami_id(id: &str) -> Check {
    let valid = id
        .strip_prefix("ami-")
        .is_some_and(|hex| matches!(hex.len(), 8 | 17) && hex.chars().all(is_lower_hex));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "is not an AMI id: `{id}` (expected `ami-` and 8 or 17 lowercase hex digits)"
        ))
    }
}

/// `^<prefix>-[0-9a-f]+$` — subnet and security group ids.
pub(crate) fn resource_id(id: &str, prefix: &str, what: &str) -> Check {
    let valid = id
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|hex| !hex.is_empty() && hex.chars().all(is_lower_hex));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "is not a {what} id: `{id}` (expected `{prefix}-` and lowercase hex digits)"
        ))
    }
}

/// `family.size`, e.g. `t3.large`, `m7g.metal-48xl`, `u-6tb1.metal`: every family starts with a
/// letter (so a YAML number such as `1.5` is never an instance type).
pub(crate) fn instance_type(instance_type: &str) -> Check {
    let parts: Vec<&str> = instance_type.split('.').collect();
    let valid = parts.len() == 2
        && instance_type.starts_with(|c: char| c.is_ascii_lowercase())
        && parts
            .iter()
            .all(|part| !part.is_empty() && part.chars().all(|c| is_lower_alnum(c) || c == '-'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "is not an EC2 instance type: `{instance_type}` (expected something like `t3.large`)"
        ))
    }
}

/// A KMS key: a key id (`1234abcd-...`, `mrk-...`), `alias/NAME`, or a key or alias ARN.
pub(crate) fn kms_key_id(key: &str) -> Check {
    let name_ok = |name: &str| {
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "/_-".contains(c))
    };
    let key_id_ok = |id: &str| {
        let hex = |t: &str| !t.is_empty() && t.chars().all(|c| c.is_ascii_hexdigit());
        match id.strip_prefix("mrk-") {
            Some(rest) => rest.len() == 32 && hex(rest),
            None => id.len() == 36 && id.split('-').all(hex),
        }
    };
    let valid = if let Some(name) = key.strip_prefix("alias/") {
        name_ok(name)
    } else if key.starts_with("arn:") {
        let parts: Vec<&str> = key.splitn(6, ':').collect();
        parts.len() == 6
            && parts[2] == "kms"
            && (parts[5].strip_prefix("key/").is_some_and(key_id_ok)
                || parts[5].strip_prefix("alias/").is_some_and(name_ok))
    } else {
        key_id_ok(key)
    };
    if valid {
        Ok(())
    } else {
        Err(format!(
            "is not a KMS key: `{key}` (expected a key id, `alias/NAME`, or a key or alias ARN)"
        ))
    }
}

/// Whether a KMS key names the AWS managed default EBS key (`aws/ebs`), whose snapshots AWS
/// refuses to share.
pub(crate) fn is_default_ebs_key(key: &str) -> bool {
    key == "alias/aws/ebs" || key.ends_with(":alias/aws/ebs")
}

/// An instance profile name (`[\w+=,.@-]{1,128}`) or ARN.
pub(crate) fn instance_profile(profile: &str) -> Check {
    let valid = if profile.starts_with("arn:") {
        profile.contains(":instance-profile/") && !profile.contains(char::is_whitespace)
    } else {
        (1..=128).contains(&profile.len())
            && profile
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c))
    };
    if valid {
        Ok(())
    } else {
        Err(format!(
            "is not an instance profile name or ARN: `{profile}`"
        ))
    }
}

/// The architectures EC2 knows.
pub(crate) const ARCHITECTURES: [&str; 5] = ["i386", "x86_64", "arm64", "x86_64_mac", "arm64_mac"];

/// One of [`ARCHITECTURES`].
pub(crate) fn architecture(architecture: &str) -> Check {
    if ARCHITECTURES.contains(&architecture) {
        Ok(())
    } else {
        Err(format!(
            "is not an architecture: `{architecture}` (expected one of {})",
            ARCHITECTURES.join(", ")
        ))
    }
}

/// `^[a-z]{2}(-[a-z]+)+-\d$`
pub(crate) fn region(region: &str) -> Check {
    let parts: Vec<&str> = region.split('-').collect();
    let valid = parts.len() >= 3
        && parts[0].len() == 2
        && parts[0].chars().all(|c| c.is_ascii_lowercase())
        && parts[1..parts.len() - 1]
            .iter()
            .all(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_lowercase()))
        && parts[parts.len() - 1].len() == 1
        && parts[parts.len() - 1].chars().all(|c| c.is_ascii_digit());
    if valid {
        Ok(())
    } else {
        Err(format!(
            "is not an AWS region: `{region}` (expected something like `us-west-2`)"
        ))
    }
}

/// 12 digits.
pub(crate) fn account_id(id: &str) -> Check {
    if id.len() == 12 && id.chars().all(|c| c.is_ascii_digit()) {
        Ok(())
    } else {
        Err(format!(
            "is not an AWS account id: `{id}` (expected 12 digits; quote it so YAML keeps leading zeros)"
        ))
    }
}

/// Starts with `/`.
pub(crate) fn ssm_parameter(name: &str) -> Check {
    if name.starts_with('/') && name.len() > 1 && !name.contains(char::is_whitespace) {
        Ok(())
    } else {
        Err(format!(
            "is not an SSM parameter name: `{name}` (expected a path starting with `/`, without spaces)"
        ))
    }
}

/// After rendering: 3..=128 characters of `[A-Za-z0-9()\[\]./\-'@_ ]`.
pub(crate) fn image_name(name: &str) -> Check {
    let length = name.chars().count();
    if !(3..=128).contains(&length) {
        return Err(format!(
            "must be 3 to 128 characters after rendering, found {length}: `{name}`"
        ));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || "()[]./-'@_ ".contains(c);
    match name.chars().find(|c| !allowed(*c)) {
        None => Ok(()),
        Some(bad) => Err(format!(
            "contains `{bad}` after rendering, which AMI names do not allow: `{name}` (allowed: A-Z, a-z, 0-9, space and ( ) [ ] . / - ' @ _)"
        )),
    }
}

/// At most 255 characters (EC2's limit).
pub(crate) fn image_description(description: &str) -> Check {
    let length = description.chars().count();
    if length <= 255 {
        Ok(())
    } else {
        Err(format!(
            "must be at most 255 characters after rendering, found {length}"
        ))
    }
}

/// 1..=128 characters, not starting with the reserved `kiln:` or `aws:` prefixes.
pub(crate) fn tag_key(key: &str) -> Check {
    let lowercase = key.to_ascii_lowercase();
    if lowercase.starts_with("kiln:") || lowercase.starts_with("aws:") {
        return Err(format!(
            "`{key}` is reserved: tag keys starting with `kiln:` or `aws:` are set by kiln and AWS"
        ));
    }
    if key.is_empty() || key.chars().count() > 128 {
        return Err(format!("`{key}` must be 1 to 128 characters"));
    }
    Ok(())
}

/// At most 256 characters.
pub(crate) fn tag_value(value: &str) -> Check {
    let length = value.chars().count();
    if length <= 256 {
        Ok(())
    } else {
        Err(format!(
            "must be at most 256 characters after rendering, found {length}"
        ))
    }
}

/// 3 or 4 octal digits, as a string; returns the mode.
pub(crate) fn file_mode(mode: &str) -> Result<u32, String> {
    let digits_ok = (3..=4).contains(&mode.len()) && mode.chars().all(|c| ('0'..='7').contains(&c));
    match u32::from_str_radix(mode, 8) {
        Ok(value) if digits_ok => Ok(value),
        _ => Err(format!(
            "is not a file mode: `{mode}` (expected 3 or 4 octal digits, like \"0644\")"
        )),
    }
}

/// `user` or `user:group`.
pub(crate) fn file_owner(owner: &str) -> Check {
    let is_name = |part: &str| {
        !part.is_empty()
            && !part.starts_with('-')
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    };
    let parts: Vec<&str> = owner.split(':').collect();
    if parts.len() <= 2 && parts.iter().all(|part| is_name(part)) {
        Ok(())
    } else {
        Err(format!(
            "is not an owner: `{owner}` (expected `user` or `user:group`)"
        ))
    }
}

/// After rendering: an absolute path to a file.
pub(crate) fn destination(path: &str) -> Check {
    if !path.starts_with('/') {
        return Err(format!(
            "must be an absolute path after rendering, found `{path}`"
        ));
    }
    if path.ends_with('/') {
        return Err(format!("must name a file, not a directory: `{path}`"));
    }
    if path.contains(['\n', '\r', '\0']) {
        return Err("must not contain line breaks or NUL characters".into());
    }
    Ok(())
}

/// After rendering: an `http://` or `https://` URL with a host.
pub(crate) fn check_url(url: &str) -> Check {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    match rest {
        None => Err(format!(
            "must start with http:// or https://, found `{url}`"
        )),
        Some(rest) if rest.is_empty() || rest.starts_with('/') => {
            Err(format!("has no host: `{url}`"))
        }
        Some(_) if url.contains(char::is_whitespace) => {
            Err(format!("must not contain spaces: `{url}`"))
        }
        Some(_) => Ok(()),
    }
}

/// A launch template id (`lt-` + hex) or name (3..=128 of `[A-Za-z0-9().\-/_]`).
pub(crate) fn launch_template(template: &str) -> Check {
    let is_id = template
        .strip_prefix("lt-")
        .is_some_and(|hex| !hex.is_empty() && hex.chars().all(is_lower_hex));
    let is_name = (3..=128).contains(&template.len())
        && template
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "().-/_".contains(c));
    if is_id || is_name {
        Ok(())
    } else {
        Err(format!(
            "is not a launch template name or id: `{template}` (3 to 128 characters of A-Z, a-z, 0-9 and ( ) . - / _, or `lt-` and hex digits)"
        ))
    }
}

/// An Auto Scaling group name: 1..=255 printable characters.
pub(crate) fn auto_scaling_group(name: &str) -> Check {
    if (1..=255).contains(&name.chars().count()) && !name.contains(char::is_control) {
        Ok(())
    } else {
        Err(format!("is not an Auto Scaling group name: `{name}`"))
    }
}

/// A non-empty value without line breaks.
pub(crate) fn single_line(value: &str) -> Check {
    if value.trim().is_empty() {
        Err("must not be empty".into())
    } else if value.contains(['\n', '\r']) {
        Err("must be a single line".into())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_versions() {
        assert!(recipe_name("rudder-dataplane").is_ok());
        assert!(recipe_name("0a").is_ok());
        assert!(recipe_name(&"a".repeat(63)).is_ok());
        for bad in ["", "-a", "Web", "a_b", &"a".repeat(64)] {
            assert!(recipe_name(bad).is_err(), "{bad}");
        }
        assert!(version("1.83.0+build-1_rc").is_ok());
        assert!(version("").is_err());
        assert!(version("1 0").is_err());
        assert!(version(&"1".repeat(65)).is_err());
    }

    #[test]
    fn aws_ids() {
        assert!(ami_id("ami-0123456789abcdef0").is_ok());
        assert!(ami_id("ami-01234567").is_ok());
        assert!(ami_id("ami-0123456789ABCDEF0").is_err());
        assert!(ami_id("ami-0123456789").is_err());
        assert!(resource_id("subnet-0abc", "subnet", "subnet").is_ok());
        assert!(resource_id("subnet-", "subnet", "subnet").is_err());
        assert!(resource_id("sg-xyz", "sg", "security group").is_err());
        assert!(region("us-west-2").is_ok());
        assert!(region("us-gov-east-1").is_ok());
        for bad in ["us-west", "usa-west-2", "us-west-12", "US-west-2", "us--2"] {
            assert!(region(bad).is_err(), "{bad}");
        }
        assert!(account_id("012345678901").is_ok());
        assert!(account_id("12345678901").is_err());
        assert!(instance_type("m7g.metal-48xl").is_ok());
        assert!(instance_type("t3large").is_err());
        assert!(instance_type("u-6tb1.metal").is_ok());
        assert!(instance_type("1.5").is_err());
        assert!(kms_key_id("1234abcd-12ab-34cd-56ef-1234567890ab").is_ok());
        assert!(kms_key_id("mrk-1234abcd12ab34cd56ef1234567890ab").is_ok());
        assert!(kms_key_id("alias/kiln-images").is_ok());
        assert!(kms_key_id(
            "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
        )
        .is_ok());
        assert!(kms_key_id("arn:aws:kms:us-west-2:123456789012:alias/kiln").is_ok());
        assert!(kms_key_id("my key").is_err());
        assert!(kms_key_id("arn:aws:s3:::bucket").is_err());
        assert!(is_default_ebs_key("alias/aws/ebs"));
        assert!(!is_default_ebs_key("alias/kiln"));
        assert!(instance_profile("kiln-builder").is_ok());
        assert!(instance_profile("arn:aws:iam::123456789012:instance-profile/kiln").is_ok());
        assert!(instance_profile("has space").is_err());
        assert!(launch_template("lt-0abc").is_ok());
        assert!(launch_template("rudder-dataplane").is_ok());
        assert!(launch_template("x").is_err());
    }

    #[test]
    fn image_fields() {
        assert!(image_name("web-1.0-20260101T000000Z").is_ok());
        assert!(image_name("ab").is_err());
        assert!(image_name(&"a".repeat(129)).is_err());
        assert_eq!(
            image_name("web+1").expect_err("plus"),
            "contains `+` after rendering, which AMI names do not allow: `web+1` (allowed: A-Z, a-z, 0-9, space and ( ) [ ] . / - ' @ _)"
        );
        assert!(tag_key("app").is_ok());
        assert!(tag_key("kiln:recipe").is_err());
        assert!(tag_key("AWS:x").is_err());
        assert!(ssm_parameter("/kiln/web/ami").is_ok());
        assert!(ssm_parameter("kiln/web").is_err());
    }

    #[test]
    fn file_fields() {
        assert_eq!(file_mode("0640"), Ok(0o640));
        assert_eq!(file_mode("755"), Ok(0o755));
        assert_eq!(file_mode("4755"), Ok(0o4755));
        for bad in ["64", "0888", "00644", "rw-r--r--", "+644"] {
            assert!(file_mode(bad).is_err(), "{bad}");
        }
        assert!(file_owner("root").is_ok());
        assert!(file_owner("app:app").is_ok());
        assert!(file_owner("a:b:c").is_err());
        assert!(file_owner(":grp").is_err());
        assert!(destination("/etc/x.conf").is_ok());
        assert!(destination("etc/x.conf").is_err());
        assert!(destination("/etc/").is_err());
        assert!(check_url("http://127.0.0.1:9090/health").is_ok());
        assert!(check_url("ftp://x").is_err());
        assert!(check_url("http:///path").is_err());
    }
}
