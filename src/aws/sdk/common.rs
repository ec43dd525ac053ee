//! Small pieces shared by the SDK modules: tag and filter conversions, text limits, and the
//! reading of "not found" answers as absence.
//!
//! Nothing here calls AWS.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{Filter, ResourceType, Tag, TagSpecification};

use crate::error::Result;

/// EC2 tags as a map; a tag without a key is dropped, a missing value reads as empty.
pub fn tag_map(tags: &[Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .filter_map(|t| {
            Some((
                t.key()?.to_owned(),
                t.value().unwrap_or_default().to_owned(),
            ))
        })
        .collect()
}

/// One EC2 filter: `name` matching any of `values`.
pub fn filter(name: &str, values: impl IntoIterator<Item = impl Into<String>>) -> Filter {
    let mut filter = Filter::builder().name(name);
    for value in values {
        filter = filter.values(value.into());
    }
    filter.build()
}

pub fn sdk_tags(tags: &[(String, String)]) -> Vec<Tag> {
    tags.iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

/// Tags for a resource created by the same call.
pub fn tag_spec(resource: ResourceType, tags: &[(String, String)]) -> TagSpecification {
    TagSpecification::builder()
        .resource_type(resource)
        .set_tags(Some(sdk_tags(tags)))
        .build()
}

/// At most `max` characters of `text` (never splitting a character).
pub fn truncate(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

/// `None` when `result` failed with an error code starting with one of `codes` ("not found"
/// answers), the result otherwise.
///
/// This is how "already gone is success" and "not there is `None`" are read, once.
pub fn absent_on<T>(result: Result<T>, codes: &[&str]) -> Result<Option<T>> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(e)
            if e.aws_code()
                .is_some_and(|c| codes.iter().any(|p| c.starts_with(p))) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{AwsError, Error};

    fn aws(code: &str) -> Error {
        Error::Aws(AwsError {
            operation: "DescribeImages",
            resource: "ami-1".into(),
            region: "eu-west-1".into(),
            code: Some(code.into()),
            message: String::new(),
            http_status: None,
        })
    }

    #[test]
    fn absent_on_reads_listed_codes_as_none() {
        let gone: Result<()> = Err(aws("InvalidAMIID.NotFound"));
        assert!(matches!(absent_on(gone, &["InvalidAMIID"]), Ok(None)));
        let other: Result<()> = Err(aws("UnauthorizedOperation"));
        assert!(absent_on(other, &["InvalidAMIID"]).is_err());
        assert!(matches!(absent_on(Ok(3), &["InvalidAMIID"]), Ok(Some(3))));
    }

    #[test]
    fn truncate_counts_characters() {
        assert_eq!(truncate("héllo", 2), "hé");
        assert_eq!(truncate("ab", 10), "ab");
    }
}
