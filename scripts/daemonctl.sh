#!/usr/bin/env bash
# Run the training daemon in the background without systemd.
#
#   scripts/daemonctl.sh start  [BASE_DIR]   start it under nohup (pid in BASE_DIR/status/daemon.pid)
#   scripts/daemonctl.sh stop   [BASE_DIR]   SIGTERM: checkpoint and stop (a second SIGTERM after STOP_WAIT s)
#   scripts/daemonctl.sh status [BASE_DIR]   is it running, and what is it doing
#
# BASE_DIR defaults to the repo root. Output goes to BASE_DIR/logs/daemon.log (rotated by the
# daemon) and BASE_DIR/logs/daemon.out (anything printed before logging starts).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
command="${1:-}"
base_dir="$(realpath -m "${2:-$repo}")"
trainctl="$repo/.venv/bin/trainctl"
pid_file="$base_dir/status/daemon.pid"
stop_wait="${STOP_WAIT:-120}"

# The pid from the pid file, if that process is alive and still a trainctl daemon (pids get reused).
running_pid() {
    local pid
    pid="$(cat "$pid_file" 2>/dev/null || true)"
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null \
        && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "trainctl daemon"; then
        echo "$pid"
    fi
}

wait_exit() {  # wait_exit PID SECONDS: true once PID is gone
    for _ in $(seq "$2"); do
        kill -0 "$1" 2>/dev/null || return 0
        sleep 1
    done
    return 1
}

case "$command" in
    start)
        if pid="$(running_pid)" && [[ -n "$pid" ]]; then
            echo "daemonctl: already running (pid $pid) on $base_dir"
            exit 0
        fi
        mkdir -p "$base_dir/logs" "$base_dir/status"
        nohup "$trainctl" daemon --base-dir "$base_dir" >>"$base_dir/logs/daemon.out" 2>&1 </dev/null &
        echo $! >"$pid_file"
        sleep 2
        if [[ -z "$(running_pid)" ]]; then
            echo "daemonctl: the daemon exited at once; see $base_dir/logs/daemon.out" >&2
            tail -n 5 "$base_dir/logs/daemon.out" >&2 || true
            exit 1
        fi
        echo "daemonctl: started pid $(cat "$pid_file"); logs in $base_dir/logs/daemon.log"
        ;;
    stop)
        pid="$(running_pid)"
        if [[ -z "$pid" ]]; then
            echo "daemonctl: not running on $base_dir"
            exit 0
        fi
        kill -TERM "$pid"  # the training child checkpoints, the file resumes on the next start
        echo "daemonctl: stopping pid $pid (waiting up to ${stop_wait}s for the checkpoint)"
        if ! wait_exit "$pid" "$stop_wait"; then
            echo "daemonctl: still running; sending a second SIGTERM (kills the training child now)" >&2
            kill -TERM "$pid" 2>/dev/null || true
            wait_exit "$pid" 15 || { echo "daemonctl: pid $pid did not exit; kill -9 it by hand" >&2; exit 1; }
        fi
        rm -f "$pid_file"
        echo "daemonctl: stopped"
        ;;
    status)
        pid="$(running_pid)"
        if [[ -n "$pid" ]]; then
            echo "daemonctl: running (pid $pid) on $base_dir"
        else
            echo "daemonctl: not running on $base_dir"
        fi
        "$trainctl" status --base-dir "$base_dir" || true
        [[ -n "$pid" ]]
        ;;
    *)
        echo "usage: $0 start|stop|status [BASE_DIR]" >&2
        exit 2
        ;;
esac
