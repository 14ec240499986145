#!/usr/bin/env bash
# The demo (the README's first command). By default, what Flotilla is for: `flotilla run` with
# `executor = "docker+machine"` against the test kit's fake Compute Engine (VMs that serve the
# local Docker engine over mutual TLS, booting in a few seconds) and fake GitLab — a warm pool in
# two zones, a burst of jobs larger than the pool, one zone out of capacity part-way — with one
# live progress line, the /status and /metrics URLs printed at the start, and at the end each
# job's final state with its VM and zone, a summary table and a check that nothing is left.
# Exits 0 only when every job ended as expected and nothing was left behind.
#
#   scripts/demo.sh            the docker+machine demo
#   scripts/demo.sh --traces   the same, then every job's trace
#   scripts/demo.sh --local    the local docker executor (no VMs), each job's trace as it ends
#
# Needs a running Docker engine and a Rust toolchain; scripts/prepare.sh installs the rest.
# Built with the dev profile, which `scripts/test.sh` shares.
set -euo pipefail
cd "$(dirname "$0")/.."

for arg in "$@"; do
  case "$arg" in
    --local | --traces) ;;
    -h | --help)
      sed -n '2,15p' "$0"
      exit 0
      ;;
    *)
      echo "demo: unknown argument: $arg (--local, --traces)" >&2
      exit 64
      ;;
  esac
done

scripts/prepare.sh --demo
cargo build --quiet --locked -p flotilla -p testkit --bins
# The helper image the demo's config uses by default: flotilla-helper:<version>.
scripts/build-helper-image.sh --binary target/debug/flotilla >/dev/null
exec target/debug/testkit demo --flotilla target/debug/flotilla "$@"
