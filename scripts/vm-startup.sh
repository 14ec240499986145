#!/usr/bin/env bash
# Flotilla's VM startup script (instance metadata `startup-script`): runs as root on every boot
# and is idempotent. It makes the VM's dockerd serve the manager over mutual TLS, with job
# containers kept away from the metadata server before dockerd serves anything:
#   1. reads the TLS material the manager put in instance metadata (flotilla-docker-ca, -cert,
#      -key; port from flotilla-docker-port, default 2376; the readiness marker's name from
#      flotilla-ready-volume) from the metadata server and writes it to
#      /etc/docker/flotilla/{ca,cert,key}.pem (the key 0600);
#   2. blocks the metadata server for job containers FIRST: a DROP rule at the top of the
#      DOCKER-USER chain (made here when dockerd has not made it yet; dockerd keeps that chain's
#      rules). A failing iptables stops the script here: Docker is neither installed nor
#      (re)started, and no marker is set;
#   3. installs Docker where the image lacks it (Debian: docker.io), uses it as is on
#      Container-Optimized OS;
#   4. configures dockerd through /etc/docker/daemon.json (hosts: the local socket and
#      tcp://0.0.0.0:<port>, tlsverify with the files above) plus a systemd drop-in whose
#      ExecStart is the distribution's without its -H flags (they would conflict with `hosts`);
#   5. opens the host firewall for the port on COS (which accepts only SSH by default);
#   6. restarts dockerd and waits for it to answer;
#   7. LAST, sets the readiness marker: the Docker volume named in flotilla-ready-volume. The
#      manager checks it over the Docker API before it gives the VM a job, so no job starts on a
#      VM whose isolation is not in place.
# Note: /etc/docker/daemon.json is replaced, not merged.
#
# For tests: FLOTILLA_METADATA_URL overrides the attributes URL, FLOTILLA_ROOT prefixes every path
# written or inspected (a scratch root), and FLOTILLA_DRY_RUN=1 appends system-changing commands
# (apt-get, systemctl, iptables, docker) to FLOTILLA_DRY_RUN_LOG (default <root>/var/log/
# flotilla-startup-dry-run.log) instead of running them; in that mode an iptables rule counts as
# present when an earlier run logged adding it.
set -euo pipefail

readonly METADATA_URL="${FLOTILLA_METADATA_URL:-http://metadata.google.internal/computeMetadata/v1/instance/attributes}"
readonly ROOT="${FLOTILLA_ROOT:-}"
readonly DRY_RUN="${FLOTILLA_DRY_RUN:-0}"
readonly DRY_RUN_LOG="${FLOTILLA_DRY_RUN_LOG:-${ROOT}/var/log/flotilla-startup-dry-run.log}"
# Paths as dockerd sees them (written under $ROOT).
readonly TLS_DIR=/etc/docker/flotilla
readonly DAEMON_JSON=/etc/docker/daemon.json
readonly DROP_IN=/etc/systemd/system/docker.service.d/flotilla.conf
readonly DEFAULT_PORT=2376
readonly METADATA_IP=169.254.169.254

log() { printf 'flotilla-startup: %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}
dry_run() { [[ "$DRY_RUN" == 1 ]]; }

# Runs a system-changing command, or records it in dry-run mode.
sys() {
  if dry_run; then
    mkdir -p "$(dirname "$DRY_RUN_LOG")"
    printf '%s\n' "$*" >>"$DRY_RUN_LOG"
  else
    "$@"
  fi
}

# Fetches metadata attribute $1 into file $2 (created with mode 0600); prints the HTTP status.
fetch() {
  local key=$1 dest=$2
  (umask 077 && : >"$dest")
  curl -sS --retry 10 --retry-delay 1 --retry-connrefused --max-time 10 \
    -H 'Metadata-Flavor: Google' -o "$dest" -w '%{http_code}' "$METADATA_URL/$key" ||
    die "the metadata server did not answer for $key"
}

# Writes metadata attribute $1 (required, non-empty) to $2 (under $ROOT) with mode $3, atomically.
install_attribute() {
  local key=$1 dest=${ROOT}$2 mode=$3 tmp code
  tmp="$(dirname "$dest")/.$(basename "$dest").tmp"
  code=$(fetch "$key" "$tmp")
  if [[ "$code" != 200 || ! -s "$tmp" ]]; then
    rm -f "$tmp"
    die "metadata attribute $key: HTTP $code or empty"
  fi
  chmod "$mode" "$tmp"
  mv -f "$tmp" "$dest"
  log "wrote $2 (from $key)"
}

# The Docker port: metadata flotilla-docker-port, else the default.
docker_port() {
  local tmp code port
  tmp=$(mktemp)
  code=$(fetch flotilla-docker-port "$tmp")
  case "$code" in
    200) port=$(tr -d '[:space:]' <"$tmp") ;;
    404) port=$DEFAULT_PORT ;;
    *)
      rm -f "$tmp"
      die "metadata attribute flotilla-docker-port: HTTP $code"
      ;;
  esac
  rm -f "$tmp"
  if ! [[ "$port" =~ ^[0-9]{1,5}$ ]] || ((port < 1 || port > 65535)); then
    die "flotilla-docker-port is not a port: '$port'"
  fi
  printf '%s\n' "$port"
}

# The OS id from os-release (debian, cos, ...), empty when unknown.
os_id() {
  local f=${ROOT}/etc/os-release
  [[ -r "$f" ]] || return 0
  sed -n 's/^ID=//p' "$f" | tr -d '"' | head -n 1
}

# Where dockerd lives, as seen by the VM (empty when absent).
dockerd_path() {
  local p
  for p in /usr/bin/dockerd /usr/sbin/dockerd; do
    if [[ -x "${ROOT}${p}" ]]; then
      printf '%s\n' "$p"
      return
    fi
  done
}

install_docker() {
  if [[ -n "$(dockerd_path)" ]]; then
    log "docker is installed"
    return
  fi
  case "$(os_id)" in
    cos) die "Container-Optimized OS without dockerd" ;;
    debian | ubuntu)
      log "installing docker.io"
      sys apt-get -o DPkg::Lock::Timeout=300 update
      sys env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y docker.io
      ;;
    *) die "no dockerd and no known way to install it on '$(os_id)'" ;;
  esac
}

# The distribution's dockerd command line without -H/--host flags (daemon.json sets the hosts).
exec_start() {
  local unit line=""
  for unit in /etc/systemd/system/docker.service /usr/lib/systemd/system/docker.service \
    /lib/systemd/system/docker.service; do
    if [[ -f "${ROOT}${unit}" ]]; then
      # Join continuation lines, keep the last non-empty ExecStart.
      line=$(sed -e ':a' -e '/\\$/{N;s/\\\n/ /;ba' -e '}' "${ROOT}${unit}" |
        sed -n 's/^ExecStart=//p' | sed '/^[[:space:]]*$/d' | tail -n 1)
      [[ -n "$line" ]] && break
    fi
  done
  if [[ -z "$line" ]]; then
    line=$(dockerd_path)
    line=${line:-/usr/bin/dockerd}
  fi
  printf '%s\n' "$line" |
    sed -E 's/(^|[[:space:]])(-H|--host)(=|[[:space:]]+)[^[:space:]]+//g; s/[[:space:]]+/ /g; s/ $//'
}

# Writes $2 to $1 (under $ROOT) atomically with mode 0644.
write_file() {
  local dest=${ROOT}$1 tmp
  mkdir -p "$(dirname "$dest")"
  tmp="$(dirname "$dest")/.$(basename "$dest").tmp"
  printf '%s\n' "$2" >"$tmp"
  chmod 0644 "$tmp"
  mv -f "$tmp" "$dest"
  log "wrote $1"
}

configure_docker() {
  local port=$1
  write_file "$DAEMON_JSON" "{
  \"hosts\": [\"unix:///var/run/docker.sock\", \"tcp://0.0.0.0:${port}\"],
  \"tls\": true,
  \"tlsverify\": true,
  \"tlscacert\": \"${TLS_DIR}/ca.pem\",
  \"tlscert\": \"${TLS_DIR}/cert.pem\",
  \"tlskey\": \"${TLS_DIR}/key.pem\"
}"
  write_file "$DROP_IN" "# Written by Flotilla's startup script: hosts come from ${DAEMON_JSON}.
[Service]
ExecStart=
ExecStart=$(exec_start)"
}

# Whether iptables chain $1 exists (dry run: whether a run logged making it).
chain_exists() {
  if dry_run; then
    [[ -f "$DRY_RUN_LOG" ]] && grep -qxF -e "iptables -w -N $1" "$DRY_RUN_LOG"
  else
    iptables -w -n -L "$1" >/dev/null 2>&1
  fi
}

# Whether iptables rule "$chain $*" exists (dry run: whether a run logged adding it).
rule_exists() {
  local chain=$1
  shift
  if dry_run; then
    [[ -f "$DRY_RUN_LOG" ]] &&
      grep -qxF -e "iptables -w -A $chain $*" -e "iptables -w -I $chain $*" "$DRY_RUN_LOG"
  else
    iptables -w -C "$chain" "$@" 2>/dev/null
  fi
}

# Adds an iptables rule ($1: -A or -I, $2: chain, rest: rule) unless it exists.
ensure_rule() {
  local op=$1 chain=$2
  shift 2
  if rule_exists "$chain" "$@"; then
    log "iptables: rule in $chain already present: $*"
  else
    sys iptables -w "$op" "$chain" "$@" || die "iptables -w $op $chain $* failed"
  fi
}

# Keeps job containers away from the metadata server: a DROP rule at the top of DOCKER-USER,
# the chain dockerd sends forwarded container traffic through and never flushes. Made before
# dockerd (re)starts; any failure ends the script.
block_metadata_server() {
  if ! chain_exists DOCKER-USER; then
    sys iptables -w -N DOCKER-USER || die "iptables cannot make the DOCKER-USER chain"
  fi
  ensure_rule -I DOCKER-USER -d "$METADATA_IP" -j DROP
  log "job containers cannot reach the metadata server"
}

# The readiness marker's name: metadata flotilla-ready-volume, else flotilla-ready-<hostname>.
ready_volume() {
  local tmp code name
  tmp=$(mktemp)
  code=$(fetch flotilla-ready-volume "$tmp")
  case "$code" in
    200) name=$(tr -d '[:space:]' <"$tmp") ;;
    404) name="flotilla-ready-$(hostname -s)" ;;
    *)
      rm -f "$tmp"
      die "metadata attribute flotilla-ready-volume: HTTP $code"
      ;;
  esac
  rm -f "$tmp"
  if ! [[ "$name" =~ ^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$ ]]; then
    die "flotilla-ready-volume is not a volume name: '$name'"
  fi
  printf '%s\n' "$name"
}

# Waits (up to 2 minutes) until dockerd answers on its local socket.
wait_for_dockerd() {
  dry_run && return 0
  local i
  for ((i = 0; i < 120; i++)); do
    docker info >/dev/null 2>&1 && return 0
    sleep 1
  done
  die "dockerd does not answer after its restart"
}

main() {
  log "starting (root '${ROOT:-/}', dry run ${DRY_RUN})"
  mkdir -p "${ROOT}${TLS_DIR}"
  chmod 0700 "${ROOT}${TLS_DIR}"
  install_attribute flotilla-docker-ca "${TLS_DIR}/ca.pem" 0644
  install_attribute flotilla-docker-cert "${TLS_DIR}/cert.pem" 0644
  install_attribute flotilla-docker-key "${TLS_DIR}/key.pem" 0600
  local port os marker
  port=$(docker_port)
  marker=$(ready_volume)
  os=$(os_id)
  # Isolation first: nothing below runs without it.
  block_metadata_server
  install_docker
  configure_docker "$port"
  if [[ "$os" == cos ]]; then
    ensure_rule -A INPUT -p tcp --dport "$port" -j ACCEPT
  fi
  sys systemctl daemon-reload
  sys systemctl enable docker.service
  sys systemctl restart docker.service
  wait_for_dockerd
  log "dockerd serves mutual TLS on port ${port}"
  # The very last step: the marker the manager waits for.
  sys docker volume create --label com.flotilla.ready=true "$marker" >/dev/null ||
    die "cannot set the readiness marker $marker"
  log "ready (marker volume ${marker})"
}

main "$@"
