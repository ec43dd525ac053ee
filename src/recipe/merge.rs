//! Merging the fragments of a recipe tree into one recipe.
//!
//! Owns the merge rules of the contract. Fragments arrive in merge order (each file's includes,
//! depth first, before the file; the root last), so "the including file wins, else the last
//! included one that has it" is simply "the last fragment that has it wins":
//! - steps, and test steps, are concatenated in that order;
//! - `vars` and `image.tags` are merged per key, later fragments winning;
//! - `source`, `builder`, `image` (other than tags), `release` and `timeouts` are taken whole
//!   from the last fragment that has them; a fragment "has" `image` when it sets any field of it
//!   other than `tags` (so a file that only adds tags keeps the image name of its includes);
//! - `name` and `version` come from the root only.
//!
//! It must not report problems or render anything: a merge cannot fail.

use std::collections::{BTreeMap, BTreeSet};

use super::fragment::{Fragment, ImageDecl, TagDecl, VarDecl};
use super::source::{At, FileId};
use super::step::StepDecl;
use crate::plan::{BuilderSpec, ReleaseSpec, SourceSpec, TesterSpec, Timeouts};

/// A recipe with its includes merged in; still unrendered.
#[derive(Debug)]
pub(crate) struct MergedRecipe {
    pub root_file: FileId,
    /// The top-level fields some fragment sets.
    pub declared: BTreeSet<String>,
    pub name: Option<At<String>>,
    pub id: Option<At<String>>,
    pub version: Option<At<String>>,
    pub vars: BTreeMap<String, VarDecl>,
    pub source: Option<SourceSpec>,
    pub builder: Option<BuilderSpec>,
    pub steps: Vec<StepDecl>,
    pub test: Vec<StepDecl>,
    pub tester: Option<TesterSpec>,
    pub image: Option<ImageDecl>,
    pub tags: BTreeMap<String, TagDecl>,
    pub release: Option<ReleaseSpec>,
    pub timeouts: Option<Timeouts>,
}

/// Merges fragments given in merge order (root last). `None` when there are none.
pub(crate) fn merge(fragments: Vec<Fragment>) -> Option<MergedRecipe> {
    let root = fragments.last()?;
    let mut merged = MergedRecipe {
        root_file: root.file,
        declared: BTreeSet::new(),
        name: root.name.clone(),
        id: root.id.clone(),
        version: root.version.clone(),
        vars: BTreeMap::new(),
        source: None,
        builder: None,
        steps: Vec::new(),
        test: Vec::new(),
        tester: None,
        image: None,
        tags: BTreeMap::new(),
        release: None,
        timeouts: None,
    };
    for fragment in fragments {
        merge_fragment(&mut merged, fragment);
    }
    Some(merged)
}

fn merge_fragment(merged: &mut MergedRecipe, fragment: Fragment) {
    merged.declared.extend(fragment.declared);
    for var in fragment.vars {
        merged.vars.insert(var.name.value.clone(), var);
    }
    for tag in fragment.tags {
        merged.tags.insert(tag.key.value.clone(), tag);
    }
    merged.steps.extend(fragment.steps);
    merged.test.extend(fragment.test);
    replace_if_some(&mut merged.source, fragment.source);
    replace_if_some(&mut merged.builder, fragment.builder);
    replace_if_some(&mut merged.tester, fragment.tester);
    replace_if_some(&mut merged.image, fragment.image);
    replace_if_some(&mut merged.release, fragment.release);
    replace_if_some(&mut merged.timeouts, fragment.timeouts);
}

fn replace_if_some<T>(slot: &mut Option<T>, value: Option<T>) {
    if value.is_some() {
        *slot = value;
    }
}
