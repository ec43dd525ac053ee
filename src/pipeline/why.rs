//! Why a build rebuilt: each image carries compact digests of the parts of its recipe
//! ([`part_tags`]: the steps, the variables, the builder and source settings, the image
//! settings), and a build that
//! does not find its fingerprint compares its own parts with those of the recipe's newest image
//! ([`explain`]). This works from what AWS holds, not from a local folder: CI runners are thrown
//! away.
//!
//! Tag values hold 256 characters: a list that does not fit goes on over `…-2`, `…-3` tags.
//! Secret variables appear by name only.

use std::collections::BTreeMap;

use crate::aws::{Image, Tags};
use crate::plan::Plan;
use crate::tags;

/// Hex digits kept of each digest: enough to tell versions of one recipe apart.
const SHORT: usize = 6;
/// Characters of a tag value.
const TAG_VALUE_MAX: usize = 256;
const STEPS: &str = "kiln:parts-steps";
const VARS: &str = "kiln:parts-vars";
const BUILDER: &str = "kiln:parts-builder";
const IMAGE: &str = "kiln:parts-image";

/// The part tags of an image built from `plan`.
pub fn part_tags(plan: &Plan) -> Tags {
    let steps: Vec<String> = plan.step_digests.iter().map(|d| short(d)).collect();
    let vars: Vec<String> = plan
        .var_digests
        .iter()
        .map(|(name, digest)| format!("{name}:{}", short(digest)))
        .collect();
    let mut tags = split(STEPS, &steps);
    tags.extend(split(VARS, &vars));
    tags.push((BUILDER.to_owned(), short(&plan.builder_digest)));
    tags.push((IMAGE.to_owned(), short(&plan.image_digest)));
    tags
}

fn short(digest: &str) -> String {
    digest.chars().take(SHORT).collect()
}

/// `items` joined by spaces over `key`, `key-2`, … so that no value exceeds 256 characters.
fn split(key: &str, items: &[String]) -> Tags {
    let mut values = vec![String::new()];
    for item in items {
        let current = values.last_mut().expect("never empty");
        if !current.is_empty() && current.len() + 1 + item.len() > TAG_VALUE_MAX {
            values.push(item.clone());
        } else {
            if !current.is_empty() {
                current.push(' ');
            }
            current.push_str(item);
        }
    }
    values
        .into_iter()
        .enumerate()
        .map(|(i, value)| {
            let key = if i == 0 {
                key.to_owned()
            } else {
                format!("{key}-{}", i + 1)
            };
            (key, value)
        })
        .collect()
}

/// The items of a split list, read back from an image's tags; `None` when it has none.
fn joined(image_tags: &BTreeMap<String, String>, key: &str) -> Option<Vec<String>> {
    let first = image_tags.get(key)?;
    let mut items: Vec<String> = first.split_whitespace().map(str::to_owned).collect();
    for n in 2.. {
        let Some(more) = image_tags.get(&format!("{key}-{n}")) else {
            break;
        };
        items.extend(more.split_whitespace().map(str::to_owned));
    }
    Some(items)
}

/// What differs between `plan` (from source image `source`) and the recipe's newest image:
/// one line per kind of change. Empty when the image has no part tags (made by an older kiln).
pub fn explain(plan: &Plan, source: &str, newest: &Image) -> Vec<String> {
    let mut reasons = Vec::new();
    let old_version = newest.tags.get(tags::VERSION);
    if old_version.is_some_and(|old| *old != plan.version) {
        let old = old_version.map_or("?", String::as_str);
        reasons.push(format!("the version: {old} → {}", plan.version));
    }
    let old_source = newest.tags.get(tags::SOURCE_IMAGE).map(String::as_str);
    if old_source.is_some_and(|old| old != source) {
        reasons.push(format!(
            "the source image: {} → {source}",
            old_source.unwrap_or("?")
        ));
    }
    if let Some(old_steps) = joined(&newest.tags, STEPS) {
        reasons.extend(step_changes(plan, &old_steps));
    }
    if let Some(old_vars) = joined(&newest.tags, VARS) {
        reasons.extend(var_changes(plan, &old_vars));
    }
    if newest
        .tags
        .get(BUILDER)
        .is_some_and(|old| *old != short(&plan.builder_digest))
    {
        reasons.push("the `builder` or `source` settings".to_owned());
    }
    if newest
        .tags
        .get(IMAGE)
        .is_some_and(|old| *old != short(&plan.image_digest))
    {
        reasons.push(
            "the `image` settings (name, description, tags, regions and their keys, share_with, \
             require_imdsv2)"
                .to_owned(),
        );
    }
    reasons
}

fn step_changes(plan: &Plan, old: &[String]) -> Vec<String> {
    let mut changed = Vec::new();
    for (index, step) in plan.steps.iter().enumerate() {
        match old.get(index) {
            Some(digest) if *digest == short(&plan.step_digests[index]) => {}
            Some(_) => changed.push(format!("{} `{}`", index + 1, step.name)),
            None => changed.push(format!("{} `{}` (new)", index + 1, step.name)),
        }
    }
    let mut reasons = Vec::new();
    if !changed.is_empty() {
        reasons.push(format!(
            "steps (their script, file or check): {}",
            changed.join(", ")
        ));
    }
    if old.len() > plan.steps.len() {
        reasons.push(format!(
            "{} step(s) removed at the end",
            old.len() - plan.steps.len()
        ));
    }
    reasons
}

fn var_changes(plan: &Plan, old: &[String]) -> Vec<String> {
    let old: BTreeMap<&str, &str> = old.iter().filter_map(|item| item.split_once(':')).collect();
    let mut changed: Vec<String> = plan
        .var_digests
        .iter()
        .filter(|(name, digest)| old.get(name.as_str()) != Some(&short(digest).as_str()))
        .map(|(name, _)| name.clone())
        .collect();
    changed.extend(
        old.keys()
            .filter(|name| !plan.var_digests.contains_key(**name))
            .map(|name| format!("{name} (removed)")),
    );
    if changed.is_empty() {
        Vec::new()
    } else {
        vec![format!("vars: {}", changed.join(", "))]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lists_go_on_over_numbered_tags_and_read_back_whole() {
        let items: Vec<String> = (0..100).map(|i| format!("{i:06}")).collect();
        let tags = split(STEPS, &items);
        assert!(tags.len() >= 3, "{tags:?}");
        assert!(tags.iter().all(|(_, value)| value.len() <= TAG_VALUE_MAX));
        assert_eq!(tags[1].0, "kiln:parts-steps-2");
        let map: BTreeMap<String, String> = tags.into_iter().collect();
        assert_eq!(joined(&map, STEPS), Some(items));
    }
}
