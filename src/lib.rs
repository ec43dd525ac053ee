//! kiln bakes Amazon Machine Images from YAML recipes and rolls them out through EC2 launch
//! templates.
//!
//! The crate is a library with a thin binary: [`recipe`] turns YAML into a [`plan::Plan`] (pure,
//! no AWS), [`pipeline`] runs commands against AWS through [`aws`], recording what it creates in a
//! [`ledger::Ledger`] and reporting progress through a [`report::Reporter`]. [`cli`] maps the
//! command line onto those.

// kiln's errors carry their whole context (operation, resource, region, hint, step output) and
// travel only on the failure path, where their size costs nothing that matters.
#![allow(clippy::result_large_err)]

pub mod aws;
pub mod cli;
pub mod error;
pub mod iam;
pub mod ledger;
pub mod limits;
pub mod pipeline;
pub mod plan;
pub mod recipe;
pub mod report;
pub mod tags;

pub use error::{Error, Result};

/// What `kiln --version` prints after the name: the version, the git commit and the target the
/// binary was built from (stamped by build.rs).
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("KILN_GIT_COMMIT"),
    ", ",
    env!("KILN_TARGET"),
    ")"
);
