#!/usr/bin/env bash
# The demo: a fake GitLab with a few sample jobs (one clones a sample repository the fake serves
# over git; `build` uploads artifacts that `test` downloads), `flotilla run` on the local docker
# executor, each job's trace and final state printed; exits 0 when every job reached its
# expected state.
# Needs a running Docker engine and a Rust toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/build-test-images.sh
cargo build --release --quiet -p flotilla -p testkit --bins
# The helper image the demo's config uses by default: flotilla-helper:<version>.
scripts/build-helper-image.sh --binary target/release/flotilla >/dev/null
exec target/release/testkit demo --flotilla target/release/flotilla "$@"
