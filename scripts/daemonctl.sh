#!/usr/bin/env bash
# Run the training daemon in the background without systemd.
#
#   scripts/daemonctl.sh start  [BASE_DIR]   start it under nohup; returns once it holds the lock
#   scripts/daemonctl.sh stop   [BASE_DIR]   SIGTERM: checkpoint and stop (a second SIGTERM after STOP_WAIT s)
#   scripts/daemonctl.sh status [BASE_DIR]   is it running, and what is it doing
#
# Whether a daemon runs is asked of the daemon lock, BASE_DIR/status/daemon.lock (core/daemon/lock.py:
# the pid written in it, alive and holding the lock), so a daemon started any other way (by hand,
# by systemd) is seen too. BASE_DIR defaults to the repo root. Output goes to BASE_DIR/logs/daemon.log
# (rotated by the daemon) and BASE_DIR/logs/daemon.out (anything printed before logging starts).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
command="${1:-}"
base_dir="$(realpath -m "${2:-$repo}")"
python="$repo/.venv/bin/python"
trainctl="$repo/.venv/bin/trainctl"
lock_file="$base_dir/status/daemon.lock"
stop_wait="${STOP_WAIT:-120}"
start_wait="${START_WAIT:-120}"

holder() {  # the pid of the daemon holding the lock, or nothing
    (cd "$repo" && "$python" -m core.daemon.lock "$lock_file") 2>/dev/null || true
}

wait_released() {  # wait_released SECONDS: true once no daemon holds the lock
    local deadline=$((SECONDS + $1))
    while (( SECONDS < deadline )); do
        [[ -z "$(holder)" ]] && return 0
        sleep 1
    done
    [[ -z "$(holder)" ]]
}

exit_reason() {  # the meaning of a daemon exit code (core/daemon/service.py)
    case "$1" in
        0) echo "it stopped cleanly at once" ;;
        2) echo "config.json is missing or invalid" ;;
        3) echo "another daemon holds the base dir" ;;
        *) echo "it failed" ;;
    esac
}

case "$command" in
    start)
        if pid="$(holder)" && [[ -n "$pid" ]]; then
            echo "daemonctl: already running (pid $pid) on $base_dir"
            exit 0
        fi
        mkdir -p "$base_dir/logs"
        nohup "$trainctl" daemon --base-dir "$base_dir" >>"$base_dir/logs/daemon.out" 2>&1 </dev/null &
        pid=$!
        deadline=$((SECONDS + start_wait))
        while [[ "$(holder)" != "$pid" ]]; do
            if ! kill -0 "$pid" 2>/dev/null; then
                code=0
                wait "$pid" || code=$?
                echo "daemonctl: the daemon exited with code $code ($(exit_reason "$code")); see $base_dir/logs/daemon.out" >&2
                tail -n 5 "$base_dir/logs/daemon.out" >&2 || true
                exit 1
            fi
            if (( SECONDS >= deadline )); then
                echo "daemonctl: pid $pid has not taken $lock_file after ${start_wait}s; see $base_dir/logs/daemon.out" >&2
                exit 1
            fi
            sleep 0.2
        done
        echo "daemonctl: started pid $pid; logs in $base_dir/logs/daemon.log"
        ;;
    stop)
        pid="$(holder)"
        if [[ -z "$pid" ]]; then
            echo "daemonctl: not running on $base_dir"
            exit 0
        fi
        kill -TERM "$pid"  # the training child checkpoints, the file resumes on the next start
        echo "daemonctl: stopping pid $pid (waiting up to ${stop_wait}s for the checkpoint)"
        if ! wait_released "$stop_wait"; then
            echo "daemonctl: still running; sending a second SIGTERM (kills the training child now)" >&2
            kill -TERM "$pid" 2>/dev/null || true
            wait_released 15 || { echo "daemonctl: pid $pid did not exit; kill -9 it by hand" >&2; exit 1; }
        fi
        echo "daemonctl: stopped"
        ;;
    status)
        pid="$(holder)"
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
