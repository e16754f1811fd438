#!/usr/bin/env bash
# Stop the daemons slurm-up.sh started, by PID, newest first.
SLURM_CI_DIR=${SLURM_CI_DIR:-/tmp/slurm-ci}
[ -f "$SLURM_CI_DIR/pids" ] || exit 0
alive() { case "$(ps -o stat= -p "$1" 2>/dev/null)" in "" | Z*) return 1 ;; esac }
for pid in $(tac "$SLURM_CI_DIR/pids"); do
	kill -TERM "$pid" 2>/dev/null || continue
	for _ in $(seq 1 150); do alive "$pid" || break; sleep 0.1; done
	alive "$pid" && kill -KILL "$pid"
done
rm -f "$SLURM_CI_DIR/pids"
