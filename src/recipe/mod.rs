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
mod var_file;
mod yaml;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

pub use diagnostic::Diagnostic;

use crate::plan::Plan;

pub use crate::plan::RECIPE_FORMAT_VERSION;

/// Inputs of a load that do not come from the recipe files.
///
/// A variable's value is, from the strongest to the weakest: `vars` (`--var`), `var_files`
/// (a later file wins), `env` (`KILN_VAR_<name>`), its `from:` source (read by a build, given
/// in [`SecretValues::Read`]), its `value:`.
#[derive(Clone)]
pub struct LoadOptions {
    /// `--var K=V` pairs, in command-line order (a later pair wins).
    pub vars: Vec<(String, String)>,
    /// `--var-file FILE`s, in command-line order (a later file wins).
    pub var_files: Vec<PathBuf>,
    /// Values from the environment: `KILN_VAR_<name>`, keyed by `<name>`.
    pub env: BTreeMap<String, String>,
    /// Whether the command needs the values of secret variables.
    pub secrets: SecretValues,
    /// The build time, for `{{ timestamp }}`.
    pub now: SystemTime,
    /// The build id, for `{{ build_id }}`.
    pub build_id: String,
}

/// What a load does with secret variables' values.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretValues {
    /// The command sends no steps (`validate`, `history`, `release`, …): an empty secret is
    /// fine and `from:` sources are not read.
    NotNeeded,
    /// A build, before its `from:` sources are read: an empty secret without a `from:` that
    /// applies is refused.
    Build,
    /// A build, with the values read from the `from:` sources that apply, by variable name:
    /// every secret must have a value.
    Read(BTreeMap<String, String>),
}

/// The `{{ build_id }}` of a load with no build (`kiln validate`, `kiln iam-policy`): the shape of a
/// real build id (digits where it has digits, the same letters and dashes, the same length), so a
/// field that renders it passes exactly the checks a build's value passes.
pub const PLACEHOLDER_BUILD_ID: &str = "00000000t000000000z-000000";

impl LoadOptions {
    /// The options of a load that starts no build: build-time values are placeholders of the
    /// same shape as a build's (`now` for `{{ timestamp }}`, [`PLACEHOLDER_BUILD_ID`]).
    /// No var file, no environment, secret values not needed.
    pub fn without_build(vars: Vec<(String, String)>) -> Self {
        LoadOptions {
            vars,
            var_files: Vec::new(),
            env: BTreeMap::new(),
            secrets: SecretValues::NotNeeded,
            now: SystemTime::now(),
            build_id: PLACEHOLDER_BUILD_ID.to_owned(),
        }
    }

    /// The `KILN_VAR_<name>` values among `vars` (the process environment, say), by `<name>`.
    pub fn env_values(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> BTreeMap<String, String> {
        vars.into_iter()
            .filter_map(|(key, value)| Some((key.strip_prefix(ENV_PREFIX)?.to_owned(), value)))
            .filter(|(name, _)| !name.is_empty())
            .collect()
    }
}

/// The prefix of environment variables that set recipe variables: `KILN_VAR_api_key`.
pub const ENV_PREFIX: &str = "KILN_VAR_";

impl fmt::Debug for LoadOptions {
    /// Shows variable names only: values are often secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let var_names: Vec<&str> = self.vars.iter().map(|(name, _)| name.as_str()).collect();
        let env_names: Vec<&String> = self.env.keys().collect();
        let secrets = match &self.secrets {
            SecretValues::NotNeeded => "not needed".to_owned(),
            SecretValues::Build => "build".to_owned(),
            SecretValues::Read(read) => format!("read: {:?}", read.keys().collect::<Vec<_>>()),
        };
        f.debug_struct("LoadOptions")
            .field("vars", &var_names)
            .field("var_files", &self.var_files)
            .field("env", &env_names)
            .field("secrets", &secrets)
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
