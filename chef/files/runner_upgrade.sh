#!/usr/bin/env bash
# runner_upgrade.sh — stop, upgrade or restart a Flotilla manager without losing a job, in the
# manner of GitLab.com's runner_upgrade.sh for its runner managers.
#
# Usage: runner_upgrade.sh [options] COMMAND
#
# Commands
#   stop               suspend the config-management agent (so a periodic run cannot restart the
#                      service mid-drain), send SIGQUIT (drain: no new jobs, running jobs finish,
#                      VMs deleted), wait until the manager exited, showing progress.
#   update             stop, run the config-management command (default `chef-client`; it installs
#                      the new package and config), start the manager, resume the agent.
#   stop_and_poweroff  stop, then power the host off.
#   stop_and_reboot    stop, then reboot the host.
#
# Two ways to find the manager
#   systemd (default)  unit FLOTILLA_SERVICE (flotilla). Drains with `systemctl kill -s SIGQUIT`
#                      and waits by itself, so the unit's TimeoutStopSec never cuts a drain short.
#   pid file           FLOTILLA_PID_FILE (or --pid-file) names a file with the manager's pid;
#                      `update` starts FLOTILLA_START_COMMAND in the background (output appended
#                      to FLOTILLA_LOG_FILE) and writes the new pid there.
#
# Options (each also an environment variable)
#   --service NAME            FLOTILLA_SERVICE            systemd unit (default: flotilla)
#   --pid-file PATH           FLOTILLA_PID_FILE           pid-file mode
#   --start-command CMD       FLOTILLA_START_COMMAND      pid-file mode: how to start the manager
#   --log-file PATH           FLOTILLA_LOG_FILE           pid-file mode: its log (default:
#                                                         /var/log/flotilla.log)
#   --timeout-minutes N       FLOTILLA_STOP_TIMEOUT_MINUTES  longest drain wait (default: 7200)
#                             FLOTILLA_STOP_TIMEOUT_SECONDS  the same in seconds (wins if set)
#   --progress-seconds N      FLOTILLA_PROGRESS_SECONDS   progress line interval (default: 60)
#   --cm-command CMD          FLOTILLA_CM_COMMAND         config-management run (default: chef-client)
#   --cm-suspend CMD          FLOTILLA_CM_SUSPEND         suspend the agent (default: stop the
#                                                         chef-client timer and service that exist)
#   --cm-resume CMD           FLOTILLA_CM_RESUME          resume it (default: start what was stopped)
#                             FLOTILLA_POWEROFF_COMMAND   default: systemctl poweroff
#                             FLOTILLA_REBOOT_COMMAND     default: systemctl reboot
#
# Exit codes
#   0   done (for stop: the manager exited, or was not running)
#   64  usage error (unknown command or option, missing value)
#   65  the manager could not be signalled (no such unit, stale or unreadable pid file)
#   66  the config-management agent could not be suspended (nothing was stopped)
#   67  the drain did not end within the timeout (the manager still runs and drains; send
#       SIGTERM to abort it: its jobs are then failed and reported, its VMs deleted)
#   68  the config-management command failed (the manager is stopped, the agent suspended)
#   69  the manager could not be started
#   70  power-off or reboot failed
set -euo pipefail

readonly EX_USAGE=64 EX_SIGNAL=65 EX_SUSPEND=66 EX_TIMEOUT=67 EX_CM=68 EX_START=69 EX_POWER=70

service="${FLOTILLA_SERVICE:-flotilla}"
pid_file="${FLOTILLA_PID_FILE:-}"
start_command="${FLOTILLA_START_COMMAND:-}"
log_file="${FLOTILLA_LOG_FILE:-/var/log/flotilla.log}"
timeout_minutes="${FLOTILLA_STOP_TIMEOUT_MINUTES:-7200}"
timeout_seconds="${FLOTILLA_STOP_TIMEOUT_SECONDS:-}"
progress_seconds="${FLOTILLA_PROGRESS_SECONDS:-60}"
cm_command="${FLOTILLA_CM_COMMAND:-chef-client}"
cm_suspend="${FLOTILLA_CM_SUSPEND:-}"
cm_resume="${FLOTILLA_CM_RESUME:-}"
poweroff_command="${FLOTILLA_POWEROFF_COMMAND:-systemctl poweroff}"
reboot_command="${FLOTILLA_REBOOT_COMMAND:-systemctl reboot}"
# Where the default suspend remembers which chef-client units it stopped.
suspended_units_file="${FLOTILLA_CM_STATE_FILE:-/run/flotilla-upgrade.suspended}"

say() { printf '%s runner_upgrade: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*"; }
die() {
  local code="$1"
  shift
  say "error: $*" >&2
  exit "$code"
}

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
}

need_value() {
  if [ "$#" -lt 2 ] || [ -z "$2" ]; then
    die "$EX_USAGE" "option $1 needs a value"
  fi
}

command_name=""
while [ "$#" -gt 0 ]; do
  case "$1" in
    --service) need_value "$@"; service="$2"; shift 2 ;;
    --pid-file) need_value "$@"; pid_file="$2"; shift 2 ;;
    --start-command) need_value "$@"; start_command="$2"; shift 2 ;;
    --log-file) need_value "$@"; log_file="$2"; shift 2 ;;
    --timeout-minutes) need_value "$@"; timeout_minutes="$2"; timeout_seconds=""; shift 2 ;;
    --progress-seconds) need_value "$@"; progress_seconds="$2"; shift 2 ;;
    --cm-command) need_value "$@"; cm_command="$2"; shift 2 ;;
    --cm-suspend) need_value "$@"; cm_suspend="$2"; shift 2 ;;
    --cm-resume) need_value "$@"; cm_resume="$2"; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    -*) die "$EX_USAGE" "unknown option $1 (see --help)" ;;
    *)
      [ -z "$command_name" ] || die "$EX_USAGE" "one command only (got $command_name and $1)"
      command_name="$1"
      shift
      ;;
  esac
done

is_number() { [[ "$1" =~ ^[0-9]+$ ]]; }
if [ -z "$timeout_seconds" ]; then
  is_number "$timeout_minutes" || die "$EX_USAGE" "timeout minutes must be a whole number: $timeout_minutes"
  timeout_seconds=$((timeout_minutes * 60))
fi
is_number "$timeout_seconds" || die "$EX_USAGE" "timeout seconds must be a whole number: $timeout_seconds"
if ! is_number "$progress_seconds" || [ "$progress_seconds" -eq 0 ]; then
  die "$EX_USAGE" "progress seconds must be a whole number above 0: $progress_seconds"
fi

# ---- config-management agent -------------------------------------------------------------

suspend_agent() {
  if [ -n "$cm_suspend" ]; then
    say "suspending the config-management agent: $cm_suspend"
    bash -c "$cm_suspend" || die "$EX_SUSPEND" "suspending the config-management agent failed"
    return
  fi
  # Default: chef-client runs as a systemd timer or as a daemon service; stop whichever is active.
  : >"$suspended_units_file" || die "$EX_SUSPEND" "cannot write $suspended_units_file"
  local unit
  for unit in chef-client.timer chef-client.service; do
    if systemctl is-active --quiet "$unit" 2>/dev/null; then
      say "suspending $unit"
      systemctl stop "$unit" || die "$EX_SUSPEND" "cannot stop $unit"
      echo "$unit" >>"$suspended_units_file"
    fi
  done
}

resume_agent() {
  if [ -n "$cm_resume" ]; then
    say "resuming the config-management agent: $cm_resume"
    bash -c "$cm_resume" || say "warning: resuming the config-management agent failed"
    return
  fi
  [ -f "$suspended_units_file" ] || return 0
  local unit
  while read -r unit; do
    [ -n "$unit" ] || continue
    say "resuming $unit"
    systemctl start "$unit" || say "warning: cannot start $unit"
  done <"$suspended_units_file"
  rm -f "$suspended_units_file"
}

# ---- the manager ----------------------------------------------------------------------------

# The manager's pid, or nothing when it does not run.
manager_pid() {
  if [ -n "$pid_file" ]; then
    [ -f "$pid_file" ] || return 0
    local pid
    pid="$(tr -d '[:space:]' <"$pid_file")" || die "$EX_SIGNAL" "cannot read $pid_file"
    is_number "$pid" || die "$EX_SIGNAL" "$pid_file does not hold a pid: $pid"
    if kill -0 "$pid" 2>/dev/null; then
      echo "$pid"
    fi
  else
    local pid
    pid="$(systemctl show --property MainPID --value "$service" 2>/dev/null)" ||
      die "$EX_SIGNAL" "cannot ask systemd about $service"
    if [ -n "$pid" ] && [ "$pid" != 0 ]; then
      echo "$pid"
    fi
  fi
}

# The manager's last drain progress line (jobs and VMs left), if its log can be read.
last_progress() {
  if [ -n "$pid_file" ]; then
    if [ -r "$log_file" ]; then
      grep -E 'draining|graceful shutdown' "$log_file" | tail -n 1 || true
    fi
  else
    journalctl --unit "$service" --lines 200 --no-pager --output cat 2>/dev/null |
      grep -E 'draining|graceful shutdown' | tail -n 1 || true
  fi
}

drain() {
  local pid
  pid="$(manager_pid)"
  if [ -z "$pid" ]; then
    say "flotilla is not running"
    return 0
  fi
  say "draining flotilla (pid $pid): no new jobs; running jobs finish; VMs are deleted"
  if [ -n "$pid_file" ]; then
    kill -QUIT "$pid" || die "$EX_SIGNAL" "cannot signal pid $pid"
  else
    systemctl kill --signal SIGQUIT "$service" || die "$EX_SIGNAL" "cannot signal $service"
  fi
  local started now next_progress
  started="$(date +%s)"
  next_progress=$((started + progress_seconds))
  while kill -0 "$pid" 2>/dev/null; do
    now="$(date +%s)"
    if [ $((now - started)) -ge "$timeout_seconds" ]; then
      die "$EX_TIMEOUT" "flotilla (pid $pid) still drains after ${timeout_seconds}s; it keeps draining (SIGTERM aborts it: jobs failed and reported, VMs deleted)"
    fi
    if [ "$now" -ge "$next_progress" ]; then
      say "waiting for flotilla (pid $pid) to drain: $(((now - started) / 60))m$(((now - started) % 60))s so far; $(last_progress)"
      next_progress=$((now + progress_seconds))
    fi
    sleep 1
  done
  say "flotilla exited after $(($(date +%s) - started))s"
  if [ -n "$pid_file" ]; then
    rm -f "$pid_file"
  fi
}

start_manager() {
  if [ -n "$pid_file" ]; then
    [ -n "$start_command" ] || die "$EX_START" "pid-file mode needs FLOTILLA_START_COMMAND to start the manager"
    say "starting flotilla: $start_command"
    # `exec` makes the recorded pid the manager's own; setsid keeps it out of this session.
    setsid bash -c "exec $start_command" </dev/null >>"$log_file" 2>&1 &
    local pid=$!
    echo "$pid" >"$pid_file" || die "$EX_START" "cannot write $pid_file"
    sleep 1
    kill -0 "$pid" 2>/dev/null || die "$EX_START" "flotilla exited at once; see $log_file"
    say "flotilla started (pid $pid)"
  else
    say "starting $service"
    systemctl start "$service" || die "$EX_START" "systemctl start $service failed"
  fi
}

stop() {
  suspend_agent
  drain
}

case "$command_name" in
  stop)
    stop
    say "stopped; the config-management agent stays suspended until \`$0 update\`"
    ;;
  update)
    stop
    say "running the config-management command: $cm_command"
    bash -c "$cm_command" || die "$EX_CM" "the config-management command failed; flotilla is stopped and the agent suspended"
    if [ -z "$(manager_pid)" ]; then
      start_manager
    else
      say "flotilla already runs again (started by the config-management run)"
    fi
    resume_agent
    say "update done"
    ;;
  stop_and_poweroff)
    stop
    say "powering off"
    bash -c "$poweroff_command" || die "$EX_POWER" "power-off failed"
    ;;
  stop_and_reboot)
    stop
    say "rebooting"
    bash -c "$reboot_command" || die "$EX_POWER" "reboot failed"
    ;;
  "") usage >&2; exit "$EX_USAGE" ;;
  *) die "$EX_USAGE" "unknown command $command_name (stop, update, stop_and_poweroff, stop_and_reboot)" ;;
esac
