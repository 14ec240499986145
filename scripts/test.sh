#!/usr/bin/env bash
# The whole test suite (the README's second command): prepares the machine (scripts/prepare.sh:
# Debian packages, the Docker engine check, test images), runs every test of the workspace
# (unit and integration), then the Chef cookbook's tests and the .deb, then lints the shell
# scripts with shellcheck. Arguments go to `cargo test`, e.g. `scripts/test.sh -- shellcheck`
# runs only the workspace tests whose names match.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/prepare.sh
cargo test --workspace --locked "$@"
scripts/test-chef.sh   # the Chef cookbook's harness (chef/README.md)
scripts/test-deb.sh    # the .deb: built from the debug binary above, installed, unit checked
shellcheck scripts/*.sh .ci/run
