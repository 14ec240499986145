#!/usr/bin/env bash
# Prepares this machine for Flotilla's tests and demo; scripts/test.sh, scripts/demo.sh and
# .ci/run all call it, so the list of what the tests need lives here only:
#   1. the tools the tests run, from Debian (apt-get, as root or through sudo), installed when
#      missing: git, shellcheck, chromium (the status page in a browser), prometheus + promtool,
#      docker-registry + htpasswd (a private registry), busybox-static and mmdebstrap (the test
#      and helper images), ruby with rspec, erubis and tomlrb (the Chef cookbook's tests),
#      systemd-analyze and adduser (the .deb check; cargo-deb itself is scripts/test-deb.sh's);
#   2. a Docker engine that answers (`docker info`): checked, with a clear message when none
#      does; with --start-docker (CI) a `dockerd` is started in the background instead;
#   3. the test images (scripts/build-test-images.sh): flotilla-test/busybox and the helper
#      image's base.
# Idempotent and quick when everything is there (no apt-get call at all).
#
# Usage: scripts/prepare.sh [--demo] [--start-docker] [--no-images]
#   --demo          only what the demo needs (no shellcheck, chromium, prometheus, registry)
#   --start-docker  start dockerd when no engine answers (CI), instead of failing
#   --no-images     skip the test images
set -euo pipefail
cd "$(dirname "$0")/.."

# What the demo runs or builds its images with (a command on PATH: its Debian package).
readonly DEMO_TOOLS=(
    git:git
    mmdebstrap:mmdebstrap
    readelf:binutils
    flock:util-linux
)
# What the tests run besides.
readonly TEST_TOOLS=(
    shellcheck:shellcheck
    chromium:chromium
    prometheus:prometheus
    promtool:prometheus
    docker-registry:docker-registry
    htpasswd:apache2-utils
    ruby:ruby
    rspec:ruby-rspec
    systemd-analyze:systemd
    adduser:adduser
)
# Ruby libraries the Chef cookbook's tests load (`require` name: Debian package).
readonly TEST_RUBY_LIBS=(
    erubis:ruby-erubis
    tomlrb:ruby-tomlrb
)

start_docker=false
images=true
tools=("${DEMO_TOOLS[@]}" "${TEST_TOOLS[@]}")
demo_only=false
for arg in "$@"; do
    case "$arg" in
        --demo)
            tools=("${DEMO_TOOLS[@]}")
            demo_only=true
            ;;
        --start-docker) start_docker=true ;;
        --no-images) images=false ;;
        -h | --help)
            sed -n '2,19p' "$0"
            exit 0
            ;;
        *)
            echo "prepare: unknown argument: $arg" >&2
            exit 64
            ;;
    esac
done

log() {
    echo "prepare: $*" >&2
}

die() {
    log "error: $*"
    exit 1
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "'$*' needs root: run as root or install sudo"
    fi
}

# The Debian packages of missing tools, one per line, without repeats.
missing_packages() {
    local entry tool
    for entry in "${tools[@]}"; do
        tool="${entry%%:*}"
        command -v "$tool" >/dev/null 2>&1 || echo "${entry#*:}"
    done
    if [ "$demo_only" = false ]; then
        for entry in "${TEST_RUBY_LIBS[@]}"; do
            ruby -e "require '${entry%%:*}'" >/dev/null 2>&1 || echo "${entry#*:}"
        done
    fi
    # The test image needs the static busybox, not just any busybox on PATH.
    dpkg -s busybox-static >/dev/null 2>&1 || echo busybox-static
}

install_packages() {
    local -a pkgs
    mapfile -t pkgs < <(missing_packages | sort -u)
    if [ "${#pkgs[@]}" -eq 0 ]; then
        log "Debian packages: all present"
        return
    fi
    command -v apt-get >/dev/null 2>&1 ||
        die "missing ${pkgs[*]} and no apt-get here: install them with your package manager"
    log "installing ${pkgs[*]}"
    local -a apt=(env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 -y -qq)
    # A stale package list cannot find new versions: update once, then install.
    as_root "${apt[@]}" update >&2 || die "apt-get update failed"
    as_root "${apt[@]}" install --no-install-recommends "${pkgs[@]}" >&2 ||
        die "apt-get install ${pkgs[*]} failed"
    local -a still
    mapfile -t still < <(missing_packages | sort -u)
    [ "${#still[@]}" -eq 0 ] || die "still missing after apt-get install: ${still[*]}"
}

check_docker() {
    if docker info >/dev/null 2>&1; then
        log "Docker engine: answers ($(docker version --format '{{.Server.Version}}' 2>/dev/null))"
        return
    fi
    command -v docker >/dev/null 2>&1 ||
        die "no docker command: install Docker (Debian: apt-get install docker.io); the tests and the demo run containers"
    if [ "$start_docker" = true ]; then
        command -v dockerd >/dev/null 2>&1 || die "no Docker engine answers and there is no dockerd to start"
        log "no Docker engine answers: starting dockerd (log: /tmp/dockerd.log)"
        (as_root dockerd >/tmp/dockerd.log 2>&1 &)
        local _
        for _ in $(seq 1 60); do
            docker info >/dev/null 2>&1 && return
            sleep 1
        done
        die "dockerd did not answer within 60 s; see /tmp/dockerd.log"
    fi
    die "no Docker engine answers at ${DOCKER_HOST:-unix:///var/run/docker.sock} ($(docker info 2>&1 | grep -m1 -iE 'error|cannot' || echo 'docker info failed')).
  The tests and the demo run containers on it: start it (\`sudo systemctl start docker\`, or
  \`sudo dockerd &\`), or point DOCKER_HOST at one, then run this again."
}

main() {
    command -v cargo >/dev/null 2>&1 || die "no cargo: install a Rust toolchain (https://rustup.rs)"
    install_packages
    check_docker
    if [ "$images" = true ]; then
        scripts/build-test-images.sh
    fi
    log "ready"
}

main
