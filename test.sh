#!/usr/bin/env bash
# Runs every test of sluice. Idempotent: installs what the tests need when it is missing,
# and fails (never skips) when a component cannot be had.
set -euo pipefail
cd "$(dirname "$0")"

cargo fmt --check
cargo build --all-targets --locked
cargo test --locked --all-targets -- --test-threads 2
