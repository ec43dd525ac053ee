//! All integration tests, linked into one binary (one link step on 2 cores).
//!
//! - `pipeline`: the library on the in-memory fake cloud (virtual time, no emulator).
//! - `conformance`: one suite of cloud behaviours over the fake, the emulator and (with
//!   `KILN_TEST_AWS=1`) a real account.
//! - `build`, `builders`, `lifecycle`, `release`, `examples`, `faults`, `input`, `limits`, `logs`,
//!   `paging`, `settings`, `iam`, `iam_resources`, `secrets`: the compiled `kiln` driven as a user would, each test against its own
//!   emulator process, AWS state checked through the SDK.
//! - `schema`: the recipe schemas and `kiln validate` agree, with check-jsonschema (pinned, in
//!   .tools/venv).
//! - `docs`: the README and the book: links, recipe snippets, `kiln` command lines.
//! - `dist`: shipping: scripts/dist's static binary, the action's install script, `cargo package`.
//! - `drain`: the rudder recipe's drain on termination: its pending-jobs query against a real
//!   PostgreSQL (initdb, pg_ctl), its script and unit through shellcheck and systemd-analyze.

mod support;

mod build;
mod builders;
mod conformance;
mod dist;
mod docs;
mod drain;
mod examples;
mod faults;
mod iam;
mod iam_resources;
mod input;
mod lifecycle;
mod limits;
mod logs;
mod paging;
mod pipeline;
mod release;
mod schema;
mod secrets;
mod settings;
