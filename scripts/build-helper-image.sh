#!/usr/bin/env bash
# Builds Flotilla's helper image: the image that runs a job's non-user stages (git, cache,
# artifacts) in the job's builds volume.
#
#   flotilla-helper-base:bookworm  Debian bookworm (minbase) with git, git-lfs and ca-certificates,
#                                  made by mmdebstrap (or debootstrap) and `docker import`.
#   flotilla-helper:<version>      the base plus the flotilla binary at /usr/bin/flotilla.
#
# The binary is copied into a Debian root filesystem, so build it on bookworm (its glibc).
# Idempotent: the base is built once (its root filesystem tarball is cached under
# ${XDG_CACHE_HOME:-~/.cache}/flotilla), and the thin layer is skipped when the tag already holds
# the same binary. Parallel runs serialise on a lock file.
#
# Usage: scripts/build-helper-image.sh [--binary PATH] [--tag IMAGE] [--label K=V]... [--base-only]
#                                      [--force] [--save PATH]
#   --binary PATH  the flotilla binary (default: target/release/flotilla, else target/debug/flotilla
#                  under $CARGO_TARGET_DIR or ./target)
#   --tag IMAGE    the helper image's name (default: flotilla-helper:<the binary's version>)
#   --label K=V    an extra label on the helper image (tests mark theirs to prune them)
#   --base-only    build only flotilla-helper-base:bookworm
#   --force        rebuild the base from a fresh root filesystem, and the thin layer
#   --save PATH    also write the helper image to PATH as a `docker save` tarball (for hosts
#                  that load it instead of pulling it: `docker load -i PATH`)
# Environment: HELPER_MIRROR  a Debian mirror (URL, one-line "deb …" entry or a .list/.sources
#                             file) for mmdebstrap; default: its own default mirrors for bookworm.
set -euo pipefail

readonly SUITE="bookworm"
readonly BASE_IMAGE="flotilla-helper-base:$SUITE"
readonly PACKAGES="git,git-lfs,ca-certificates"
readonly LOCK_FILE="${TMPDIR:-/tmp}/flotilla-build-helper-image.lock"
readonly CACHE_DIR="${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/flotilla"
readonly ROOTFS_TAR="$CACHE_DIR/helper-base-$SUITE.tar"
readonly BINARY_LABEL="com.flotilla.helper-binary-sha256"

binary=""
tag=""
labels=()
base_only=false
force=false
save=""
while [ "$#" -gt 0 ]; do
    case "$1" in
        --binary)
            binary="${2:?--binary needs a path}"
            shift
            ;;
        --tag)
            tag="${2:?--tag needs an image name}"
            shift
            ;;
        --label)
            labels+=("${2:?--label needs KEY=VALUE}")
            shift
            ;;
        --base-only) base_only=true ;;
        --force) force=true ;;
        --save)
            save="${2:?--save needs a path}"
            shift
            ;;
        -h | --help)
            sed -n '2,25p' "$0"
            exit 0
            ;;
        *)
            echo "build-helper-image: unknown argument: $1" >&2
            exit 64
            ;;
    esac
    shift
done

log() {
    echo "build-helper-image: $*" >&2
}

image_exists() {
    docker image inspect "$1" >/dev/null 2>&1
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    else
        sudo "$@"
    fi
}

apt_install() {
    if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2; then
        as_root apt-get update -qq >&2
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
    fi
}

# mmdebstrap's options that make the root filesystem small: no manuals, docs or translations, no
# apt lists; git-lfs's filters configured system-wide.
mmdebstrap_rootfs() {
    local out="$1"
    # shellcheck disable=SC2016 # the hooks' "$1" is for mmdebstrap's shell, not this one
    local -a args=(
        --variant=minbase
        --format=tar
        --include="$PACKAGES"
        --components=main
        --dpkgopt='path-exclude=/usr/share/man/*'
        --dpkgopt='path-exclude=/usr/share/doc/*'
        --dpkgopt='path-include=/usr/share/doc/*/copyright'
        --dpkgopt='path-exclude=/usr/share/locale/*'
        --dpkgopt='path-exclude=/usr/share/info/*'
        --customize-hook='chroot "$1" git lfs install --system --skip-repo'
        --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*'
    )
    # Follow the host's apt policy on Release files past their Valid-Until (mirrors serving a
    # snapshot of the archive need it off).
    if apt-config dump Acquire::Check-Valid-Until 2>/dev/null | grep -q '"false"'; then
        args+=(--aptopt='Acquire::Check-Valid-Until "false"')
    fi
    args+=("$SUITE" "$out")
    if [ -n "${HELPER_MIRROR:-}" ]; then
        args+=("$HELPER_MIRROR")
    fi
    as_root mmdebstrap "${args[@]}" >&2
}

debootstrap_rootfs() {
    local out="$1" dir
    dir="$(mktemp -d)"
    # shellcheck disable=SC2064 # expand now: the trap must remove this very directory
    trap "as_root rm -rf '$dir'" RETURN
    local -a args=(--variant=minbase --include="$PACKAGES" "$SUITE" "$dir")
    if [ -n "${HELPER_MIRROR:-}" ]; then
        args+=("$HELPER_MIRROR")
    fi
    as_root debootstrap "${args[@]}" >&2
    as_root chroot "$dir" git lfs install --system --skip-repo >&2
    as_root rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/* "$dir"/usr/share/man \
        "$dir"/usr/share/locale "$dir"/usr/share/info
    as_root tar -C "$dir" --numeric-owner -cf "$out" .
}

# Writes the base root filesystem tarball to $ROOTFS_TAR (atomically).
build_rootfs() {
    mkdir -p "$CACHE_DIR"
    local partial="${ROOTFS_TAR%.tar}.partial.tar"
    rm -rf "$partial"
    if ! command -v mmdebstrap >/dev/null 2>&1 && ! command -v debootstrap >/dev/null 2>&1; then
        log "installing mmdebstrap"
        apt_install mmdebstrap
    fi
    log "assembling the $SUITE root filesystem with $PACKAGES"
    if command -v mmdebstrap >/dev/null 2>&1; then
        mmdebstrap_rootfs "$partial"
    else
        debootstrap_rootfs "$partial"
    fi
    mv "$partial" "$ROOTFS_TAR"
}

build_base() {
    if [ "$force" = false ] && image_exists "$BASE_IMAGE"; then
        log "$BASE_IMAGE exists (use --force to rebuild)"
        return 0
    fi
    if [ "$force" = true ] || [ ! -s "$ROOTFS_TAR" ]; then
        build_rootfs
    else
        log "using the cached root filesystem $ROOTFS_TAR"
    fi
    log "importing $BASE_IMAGE"
    docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["/bin/bash"]' \
        "$ROOTFS_TAR" "$BASE_IMAGE" >/dev/null
    image_exists "$BASE_IMAGE"
    log "built $BASE_IMAGE"
}

default_binary() {
    local target="${CARGO_TARGET_DIR:-target}" candidate
    for candidate in "$target/release/flotilla" "$target/debug/flotilla"; do
        if [ -x "$candidate" ]; then
            echo "$candidate"
            return 0
        fi
    done
    log "no flotilla binary under $target (build it, or give --binary PATH)"
    return 1
}

build_helper() {
    [ -n "$binary" ] || binary="$(default_binary)"
    if [ ! -x "$binary" ]; then
        log "not an executable file: $binary"
        return 66
    fi
    local version sum
    version="$("$binary" helper version | awk '{print $2}')"
    if [ -z "$version" ]; then
        log "$binary does not answer \`helper version\`: not a Flotilla binary with the helper"
        return 65
    fi
    [ -n "$tag" ] || tag="flotilla-helper:$version"
    sum="$(sha256sum "$binary" | awk '{print $1}')"
    if [ "$force" = false ] && image_exists "$tag" &&
        [ "$(docker image inspect --format "{{ index .Config.Labels \"$BINARY_LABEL\" }}" "$tag")" = "$sum" ]; then
        log "$tag exists with this binary"
        echo "$tag"
        return 0
    fi
    local context
    context="$(mktemp -d)"
    # shellcheck disable=SC2064 # expand now: the trap must remove this very directory
    trap "rm -rf '$context'" RETURN
    ln "$binary" "$context/flotilla" 2>/dev/null || cp "$binary" "$context/flotilla"
    {
        echo "FROM $BASE_IMAGE"
        echo "COPY flotilla /usr/bin/flotilla"
        echo "LABEL $BINARY_LABEL=$sum"
        local label
        for label in "${labels[@]}"; do
            echo "LABEL $label"
        done
    } >"$context/Dockerfile"
    # The classic builder needs no buildx plugin; use BuildKit only where the plugin exists.
    if ! docker buildx version >/dev/null 2>&1; then
        export DOCKER_BUILDKIT=0
    fi
    log "building $tag from $binary"
    # Quiet on success (the classic builder warns that it is deprecated); everything on failure.
    if ! docker build -q -t "$tag" "$context" >"$context/build.log" 2>&1; then
        cat "$context/build.log" >&2
        return 1
    fi
    image_exists "$tag"
    log "built $tag"
    echo "$tag"
}

main() {
    exec 9>"$LOCK_FILE"
    flock 9
    build_base
    if [ "$base_only" = false ]; then
        local built
        built="$(build_helper)"
        echo "$built"
        if [ -n "$save" ]; then
            docker save -o "$save" "$built"
            log "saved $built to $save"
        fi
    fi
}

main
