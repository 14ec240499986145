#!/usr/bin/env bash
# The Chef cookbook's tests (chef/test, a ChefSpec-like harness on Debian's ruby and
# ruby-rspec): every .rb passes `ruby -c`, the rendered config.toml passes `flotilla config
# check` (FLOTILLA_BIN, default target/debug/flotilla, built when missing) and means what the
# attributes say, the unit and the resources are checked. Installs its Debian packages when
# missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v ruby >/dev/null 2>&1 || need+=(ruby)
command -v rspec >/dev/null 2>&1 || need+=(ruby-rspec)
ruby -e 'require "erubis"' >/dev/null 2>&1 || need+=(ruby-erubis)
ruby -e 'require "tomlrb"' >/dev/null 2>&1 || need+=(ruby-tomlrb)
if [ "${#need[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}"
fi

export FLOTILLA_BIN="${FLOTILLA_BIN:-$PWD/target/debug/flotilla}"
[ -x "$FLOTILLA_BIN" ] || cargo build --locked --bin flotilla
rspec chef/test
