#!/usr/bin/env bash
# The whole test suite: test images, then every test of the workspace (unit and integration),
# then the Chef cookbook's tests and the .deb, then lint of the shell scripts. Needs a running Docker engine.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/build-test-images.sh
cargo test --workspace --locked
scripts/test-chef.sh   # the Chef cookbook's harness (chef/README.md)
scripts/test-deb.sh    # the .deb: built from the debug binary above, installed, unit checked
if command -v shellcheck >/dev/null 2>&1; then
  shellcheck scripts/*.sh .ci/run
fi
