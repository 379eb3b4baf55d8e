#!/usr/bin/env bash
# Runs every test of sluice. Idempotent: installs what the tests need when it is missing,
# and fails (never skips) when a component cannot be had.
set -euo pipefail
cd "$(dirname "$0")"

# Python tools the tests drive: an S3-compatible server (moto), clients (boto3, pyarrow,
# psycopg, ADBC's Flight SQL driver), an independent Delta Lake reader and writer
# (deltalake, polars), a pseudo terminal for the interactive shell (pexpect) and a JSON
# Schema validator for OpenLineage events (jsonschema), in a venv of their own.
venv_ok() {
  [ -x .venv/bin/moto_server ] && [ -s .venv/junit-10.xsd ] &&
    .venv/bin/python -c 'import boto3, pyarrow, psycopg, xmlschema, junitparser, pexpect, deltalake, polars, adbc_driver_flightsql, adbc_driver_manager, jsonschema, referencing' 2>/dev/null
}
if ! venv_ok; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check \
    'moto[server]==5.*' 'boto3==1.*' 'pyarrow>=15' 'psycopg[binary]==3.*' \
    'xmlschema==3.*' 'junitparser==3.*' 'pexpect==4.*' 'deltalake==1.*' 'polars==1.*' \
    'adbc-driver-flightsql==1.13.*' 'adbc-driver-manager==1.13.*' 'jsonschema==4.*'
  # JUnit's schema (Jenkins' junit-10.xsd) as pytest's source distribution ships it.
  sdist=$(mktemp -d)
  .venv/bin/pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
    'pytest==8.3.5' -d "$sdist"
  tar -xzf "$sdist"/pytest-8.3.5.tar.gz -C "$sdist" pytest-8.3.5/testing/example_scripts/junit-10.xsd
  cp "$sdist"/pytest-8.3.5/testing/example_scripts/junit-10.xsd .venv/junit-10.xsd
  rm -rf "$sdist"
  venv_ok || { echo "test.sh: could not install the Python test tools into .venv" >&2; exit 1; }
fi

# psql and pgbench (Debian's postgresql-client) for the server tests, a PostgreSQL 15 server
# (initdb, pg_ctl; tests/postgres.rs starts its own on loopback), headless Chromium for the
# docs site test.
missing=()
command -v psql >/dev/null && command -v pgbench >/dev/null || missing+=(postgresql-client)
[ -x /usr/lib/postgresql/15/bin/initdb ] && [ -x /usr/lib/postgresql/15/bin/pg_ctl ] ||
  missing+=(postgresql-15)
command -v chromium >/dev/null || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}"
fi
[ -x /usr/lib/postgresql/15/bin/initdb ] || {
  echo "test.sh: PostgreSQL 15's server (postgresql-15) could not be installed" >&2
  exit 1
}

cargo fmt --check
cargo build --workspace --all-targets --locked
# Benches are built above and run by their scripts (criterion takes no test-harness flags).
cargo test --workspace --locked --lib --bins --tests -- --test-threads 2
