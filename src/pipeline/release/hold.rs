//! A hold on a launch template's releases, kept in AWS as the template's `kiln:hold` tag.
//!
//! `kiln rollback` puts one (naming the image it rolled back to and when), so the nightly's
//! unchanged `kiln build` cannot release again the image that was just rolled back from. While
//! the hold is there, `kiln build` still builds (or skips) but does not release; `kiln release`
//! releases explicitly and clears it. The tag's value reads
//! `image=ami-… version=N at=2026-11-28T03:40:00Z`.

use serde::Serialize;

use crate::aws::{Cloud, LaunchTemplate};
use crate::error::Result;
use crate::pipeline::now_rfc3339;

/// The launch template tag that holds releases.
pub const TAG: &str = "kiln:hold";

/// A hold: what the template was held at, and since when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hold {
    pub image_id: String,
    pub version: i64,
    /// RFC 3339, UTC.
    pub at: String,
}

impl Hold {
    /// A hold on `version` (using `image_id`) from now.
    pub fn now(image_id: &str, version: i64) -> Hold {
        Hold {
            image_id: image_id.to_owned(),
            version,
            at: now_rfc3339(),
        }
    }

    pub fn tag_value(&self) -> String {
        format!(
            "image={} version={} at={}",
            self.image_id, self.version, self.at
        )
    }

    /// Reads a tag value; fields it cannot read stay empty (a hold set by hand still holds).
    pub fn parse(value: &str) -> Hold {
        let mut hold = Hold {
            image_id: String::new(),
            version: 0,
            at: String::new(),
        };
        for (key, field) in value.split_whitespace().filter_map(|w| w.split_once('=')) {
            match key {
                "image" => hold.image_id = field.to_owned(),
                "version" => hold.version = field.parse().unwrap_or(0),
                "at" => hold.at = field.to_owned(),
                _ => {}
            }
        }
        hold
    }

    /// The hold on `template`, if it has one.
    pub fn of(template: &LaunchTemplate) -> Option<Hold> {
        template.tags.get(TAG).map(|value| Hold::parse(value))
    }

    /// What `kiln build` says when a hold stops its release; `release_command` is the
    /// `kiln release …` line to run.
    pub fn notice(&self, template: &str, release_command: &str) -> String {
        format!(
            "RELEASE HELD: launch template {template} is held at version {} ({}) since {} by `kiln rollback`; \
             this build did not release its image. Run `{release_command}` to release the newest image and clear the hold",
            self.version, self.image_id, self.at
        )
    }
}

/// Puts `hold` on the template (replacing any earlier one).
pub async fn place(cloud: &dyn Cloud, template_id: &str, hold: &Hold) -> Result<()> {
    let tags = vec![(TAG.to_owned(), hold.tag_value())];
    cloud.create_tags(&[template_id.to_owned()], &tags).await
}

/// Removes the template's hold, if any.
pub async fn clear(cloud: &dyn Cloud, template_id: &str) -> Result<()> {
    cloud
        .delete_tags(&[template_id.to_owned()], &[TAG.to_owned()])
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hold_reads_back_what_it_wrote_and_tolerates_a_hand_made_one() {
        let hold = Hold {
            image_id: "ami-1".into(),
            version: 4,
            at: "2026-11-28T03:40:00Z".into(),
        };
        assert_eq!(Hold::parse(&hold.tag_value()), hold);
        let by_hand = Hold::parse("do not release");
        assert_eq!((by_hand.image_id.as_str(), by_hand.version), ("", 0));
    }
}
