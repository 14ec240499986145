#!/usr/bin/env bash
# Builds the small Docker images Flotilla's tests run jobs in. No registry is reachable from the
# test machines, so images are made with `docker import` from a root filesystem assembled here.
#
#   flotilla-test/busybox:latest   Debian's static busybox with every applet linked, /tmp, and an
#                                  /etc/passwd with root: enough for `sh -c` job scripts.
#   flotilla-helper-base:bookworm  the helper image's base (scripts/build-helper-image.sh): the
#                                  tests put their own flotilla binary on top of it.
#
# Idempotent and quick: an image that already exists is kept unless --force is given. Concurrent
# runs (parallel test processes) serialise on a lock file and the later ones find the image made.
#
# Usage: scripts/build-test-images.sh [--force]
set -euo pipefail

readonly BUSYBOX_IMAGE="flotilla-test/busybox:latest"
readonly LOCK_FILE="${TMPDIR:-/tmp}/flotilla-build-test-images.lock"

force=false
for arg in "$@"; do
    case "$arg" in
        --force) force=true ;;
        -h | --help)
            sed -n '2,13p' "$0"
            exit 0
            ;;
        *)
            echo "build-test-images: unknown argument: $arg" >&2
            exit 64
            ;;
    esac
done

log() {
    echo "build-test-images: $*" >&2
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

# Prints the path of a statically linked busybox, installing Debian's busybox-static if needed.
static_busybox() {
    if ! dpkg -s busybox-static >/dev/null 2>&1; then
        log "installing busybox-static"
        if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y busybox-static >&2; then
            as_root apt-get update >&2
            as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y busybox-static >&2
        fi
    fi
    local path
    for path in /bin/busybox /usr/bin/busybox; do
        if [ -x "$path" ] && file_is_static "$path"; then
            echo "$path"
            return 0
        fi
    done
    log "no static busybox found after installing busybox-static"
    return 1
}

# True when the ELF file has no program interpreter (statically linked).
file_is_static() {
    ! LC_ALL=C readelf -l "$1" 2>/dev/null | grep -q 'Requesting program interpreter'
}

build_busybox_image() {
    local busybox rootfs
    busybox="$(static_busybox)"
    rootfs="$(mktemp -d)"
    # shellcheck disable=SC2064 # expand now: the trap must remove this very directory
    trap "rm -rf '$rootfs'" RETURN

    mkdir -p "$rootfs"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,root,proc,sys,dev,builds}
    chmod 1777 "$rootfs/tmp"
    cp "$busybox" "$rootfs/bin/busybox"
    # Link every applet where busybox would install it (sh, ls, cat, sleep, …).
    local applet
    while IFS= read -r applet; do
        [ -e "$rootfs/$applet" ] || ln -s /bin/busybox "$rootfs/$applet"
    done < <("$busybox" --list-full)
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' \
        >"$rootfs/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$rootfs/etc/group"

    log "importing $BUSYBOX_IMAGE"
    tar -C "$rootfs" -c . | docker import \
        --change 'CMD ["/bin/sh"]' \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        - "$BUSYBOX_IMAGE" >/dev/null
}

main() {
    exec 9>"$LOCK_FILE"
    flock 9
    if [ "$force" = false ] && image_exists "$BUSYBOX_IMAGE"; then
        log "$BUSYBOX_IMAGE exists (use --force to rebuild)"
    else
        build_busybox_image
        image_exists "$BUSYBOX_IMAGE"
        log "built $BUSYBOX_IMAGE"
    fi
    local -a helper_args=(--base-only)
    if [ "$force" = true ]; then
        helper_args+=(--force)
    fi
    "$(dirname "$0")/build-helper-image.sh" "${helper_args[@]}"
}

main
