//! The tags kiln writes, and what they are built from. Tag names are part of the contract:
//! `kiln gc`, `history`, `prune` and the skip-if-unchanged lookup all find resources by them.

pub const BUILD_ID: &str = "kiln:build-id";
pub const RECIPE: &str = "kiln:recipe";
/// The recipe identity ([`crate::plan::Plan::identity`]): skip, history, prune, release and
/// rollback only consider images of the same identity.
pub const IDENTITY: &str = "kiln:identity";
pub const VERSION: &str = "kiln:version";
pub const FINGERPRINT: &str = "kiln:fingerprint";
pub const SOURCE_IMAGE: &str = "kiln:source-image";
pub const CREATED_BY: &str = "kiln:created-by";
pub const ROLE: &str = "kiln:role";
pub const ROLE_BUILDER: &str = "builder";
/// On a builder left running on purpose after a failure (`--on-error=abort`): `on-error`.
pub const KEPT: &str = "kiln:kept";
pub const KEPT_ON_ERROR: &str = "on-error";
/// On an image made by `kiln build --resume`: the build it continued.
pub const RESUMED_FROM: &str = "kiln:resumed-from";
/// On an image: when kiln last made it a launch template's default (RFC 3339). `kiln rollback`
/// goes back only to images that were released before.
pub const RELEASED: &str = "kiln:released";
/// The instance the test phase launches from a new image.
pub const ROLE_TESTER: &str = "tester";
/// On an image whose test phase failed (`failed`): kept to inspect, never reused or released.
pub const TEST: &str = "kiln:test";
pub const TEST_FAILED: &str = "failed";

/// kiln's own version, written into `kiln:created-by`.
pub const KILN_VERSION: &str = concat!("kiln/", env!("CARGO_PKG_VERSION"));

/// The identity of one build, as written into tags.
#[derive(Debug, Clone)]
pub struct BuildTags {
    pub build_id: String,
    pub recipe: String,
    pub identity: String,
    pub version: String,
    pub fingerprint: String,
    pub source_image: String,
}

impl BuildTags {
    /// The tags every resource of the build carries.
    pub fn common(&self) -> Vec<(String, String)> {
        vec![
            (BUILD_ID.into(), self.build_id.clone()),
            (RECIPE.into(), self.recipe.clone()),
            (IDENTITY.into(), self.identity.clone()),
            (VERSION.into(), self.version.clone()),
            (FINGERPRINT.into(), self.fingerprint.clone()),
            (SOURCE_IMAGE.into(), self.source_image.clone()),
            (CREATED_BY.into(), KILN_VERSION.into()),
        ]
    }

    /// The builder instance's tags: the common ones, its role and a readable Name.
    pub fn builder(&self) -> Vec<(String, String)> {
        let mut tags = self.common();
        tags.push((ROLE.into(), ROLE_BUILDER.into()));
        tags.push((
            "Name".into(),
            format!("kiln builder {} {}", self.recipe, self.build_id),
        ));
        tags
    }

    /// The tester instance's tags: the common ones, its role and a readable Name.
    pub fn tester(&self) -> Vec<(String, String)> {
        let mut tags = self.common();
        tags.push((ROLE.into(), ROLE_TESTER.into()));
        tags.push((
            "Name".into(),
            format!("kiln tester {} {}", self.recipe, self.build_id),
        ));
        tags
    }

    /// The image's and its snapshots' tags: the recipe's own tags, then kiln's (which win).
    pub fn image(
        &self,
        recipe_tags: &std::collections::BTreeMap<String, String>,
        image_name: &str,
    ) -> Vec<(String, String)> {
        let mut tags: Vec<(String, String)> = recipe_tags
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !recipe_tags.contains_key("Name") {
            tags.push(("Name".into(), image_name.to_owned()));
        }
        tags.extend(self.common());
        tags
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_tags_carry_the_build_identity_and_role() {
        let tags = BuildTags {
            build_id: "b1".into(),
            recipe: "r".into(),
            identity: "r@lt".into(),
            version: "1".into(),
            fingerprint: "sha256:00".into(),
            source_image: "ami-1".into(),
        };
        let builder = tags.builder();
        assert!(builder.contains(&(ROLE.into(), ROLE_BUILDER.into())));
        assert!(builder.contains(&(BUILD_ID.into(), "b1".into())));
        assert!(builder.contains(&(IDENTITY.into(), "r@lt".into())));
        let mut recipe_tags = std::collections::BTreeMap::new();
        recipe_tags.insert("app".to_owned(), "rudder".to_owned());
        let image = tags.image(&recipe_tags, "r-1");
        assert!(image.contains(&("app".into(), "rudder".into())));
        assert!(image.contains(&("Name".into(), "r-1".into())));
        assert!(!image.iter().any(|(k, _)| k == ROLE));
    }
}
