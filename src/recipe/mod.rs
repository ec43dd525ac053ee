//! Recipes: reading YAML recipe files into a [`Plan`](crate::plan::Plan).
//!
//! This module is pure apart from reading the recipe files and file-step sources it is pointed
//! at: it never talks to AWS, runs commands, or writes anything. The schema it implements is the
//! recipe contract (v1, [`RECIPE_FORMAT_VERSION`]).
//!
//! [`load_plan`] runs the stages below and reports *every* problem it finds, each with the file
//! and (where there is one) the 1-based line and column:
//! 1. [`include`] reads the root recipe and its includes (size, UTF-8, cycles, containment),
//!    [`yaml`] parses each file and [`fragment`] reads it against the schema ([`step`] reads
//!    its steps);
//! 2. [`merge`] merges the fragments;
//! 3. [`resolve`] applies `--var`s, renders templates ([`template`]), resolves the steps
//!    ([`step`]: defaults, file sources) and assembles the plan and its digest.
//!
//! Everything about a step kind in this layer is in [`step`]; [`checks`] holds the value
//! checks, [`source`] the files read and the problems found, [`diagnostic`] how problems are
//! shown.
//!
//! A syntax error stops only the file it is in. Checks that need the whole recipe (unknown
//! variables, missing sections) are skipped when some file could not be read, to avoid
//! reporting consequences of the first problem as problems of their own.

mod checks;
mod diagnostic;
mod fragment;
mod include;
mod merge;
mod resolve;
pub mod schema;
mod source;
pub use schema::{recipe_schema, SchemaKind};
pub mod starter;
mod step;
mod template;
mod yaml;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::Path;
use std::time::SystemTime;

pub use diagnostic::Diagnostic;

use crate::plan::Plan;

pub use crate::plan::RECIPE_FORMAT_VERSION;

/// Inputs of a load that do not come from the recipe files.
#[derive(Clone)]
pub struct LoadOptions {
    /// `--var K=V` pairs, in command-line order (a later pair wins).
    pub vars: Vec<(String, String)>,
    /// The build time, for `{{ timestamp }}`.
    pub now: SystemTime,
    /// The build id, for `{{ build_id }}`.
    pub build_id: String,
}

/// The `{{ build_id }}` of a load with no build (`kiln validate`, `kiln iam-policy`): the shape of a
/// real build id (digits where it has digits, the same letters and dashes, the same length), so a
/// field that renders it passes exactly the checks a build's value passes.
pub const PLACEHOLDER_BUILD_ID: &str = "00000000t000000000z-000000";

impl LoadOptions {
    /// The options of a load that starts no build: build-time values are placeholders of the
    /// same shape as a build's (`now` for `{{ timestamp }}`, [`PLACEHOLDER_BUILD_ID`]).
    pub fn without_build(vars: Vec<(String, String)>) -> Self {
        LoadOptions {
            vars,
            now: SystemTime::now(),
            build_id: PLACEHOLDER_BUILD_ID.to_owned(),
        }
    }
}

impl fmt::Debug for LoadOptions {
    /// Shows variable names only: `--var` values are often secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let var_names: Vec<&str> = self.vars.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("LoadOptions")
            .field("vars", &var_names)
            .field("now", &self.now)
            .field("build_id", &self.build_id)
            .finish()
    }
}

/// Loads the recipe at `path` (and everything it includes) into a plan, or returns every
/// problem found, in the order found.
pub fn load_plan(path: &Path, opts: &LoadOptions) -> Result<Plan, Vec<Diagnostic>> {
    let mut session = source::Session::default();
    let plan = include::load_tree(&mut session, path).and_then(|mut tree| {
        let fragments = std::mem::take(&mut tree.fragments);
        let merged = merge::merge(fragments)?;
        resolve::resolve(&mut session, &tree, merged, path.to_path_buf(), opts)
    });
    if session.problems.is_empty() {
        session.problems = std::mem::take(&mut session.deferred);
    }
    match plan {
        Some(plan) if session.problems.is_empty() => Ok(plan),
        _ if session.problems.is_empty() => Err(vec![Diagnostic::in_file(
            path,
            "recipe could not be loaded (no specific problem was recorded; this is a bug in kiln)",
        )]),
        _ => Err(session.problems),
    }
}
