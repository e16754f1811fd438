#!/usr/bin/env bash
# The Slurm launcher against a real single-node Slurm: runs testdata/slurm/slurmci.toml (4 runs, a `from`
# dependency) locally and through `runner -launcher slurm`, checks every run is done and the results are equal;
# then submits again, cancels the NAtS training task mid-run, resubmits, and checks the sweep completes with the
# same results (the run resumes from its checkpoint). Needs root and apt-get (skips with a message otherwise).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
	echo "SKIP slurm launcher test: needs root and apt-get to install Debian's slurm-wlm and munge"
	exit 0
fi
T=$(mktemp -d)
t0=$(date +%s)
sweep=testdata/slurm/slurmci.toml
go build -o "$T/runner" ./runner
rc=0
bash .ci/slurm-up.sh >"$T/slurm-up.log" 2>&1 || rc=$?
if [ $rc = 3 ]; then
	echo "SKIP slurm launcher test: apt-get could not install slurm-wlm/munge (no package mirror?)"
	exit 0
elif [ $rc != 0 ]; then
	cat "$T/slurm-up.log"
	exit 1
fi
trap 'bash .ci/slurm-down.sh' EXIT
echo "slurm cluster up in $(($(date +%s) - t0)) s"

drain() { # wait for the queue to empty (max 5 min)
	for _ in $(seq 1 600); do [ -z "$(squeue -h)" ] && return 0; sleep 0.5; done
	echo "FAIL: the Slurm queue did not drain"; squeue; exit 1
}
table() { # the summary table of a finished sweep, without the generation time
	"$T/runner" report -sweep $sweep -out "$1" >/dev/null 2>&1
	grep '^|' "$1/slurmci/summary.md"
}
metrics() { # every metric row, exact, except wall-clock ones (seconds, tokens/s, ms) that differ between any two runs
	"$T/runner" status -sweep $sweep -out "$1" -metrics | grep -v -E $'\t(eval_seconds|[a-z_]*per_second|[a-z_]*_ms[a-z_]*)\t'
}
alldone() {
	"$T/runner" -sweep $sweep -out "$1" -dry-run | tail -1 | grep -q '4 runs: 4 done' ||
		{ echo "FAIL: not every run is done in $1"; "$T/runner" status -sweep $sweep -out "$1"; exit 1; }
}

# 1. Local reference.
"$T/runner" -sweep $sweep -out "$T/local" -no-report 2>"$T/local.log" || { cat "$T/local.log"; exit 1; }
table "$T/local" >"$T/local.table"
metrics "$T/local" >"$T/local.metrics"

# 2. The same sweep through Slurm.
"$T/runner" -sweep $sweep -out "$T/slurm" -launcher slurm
drain
"$T/runner" status -sweep $sweep -out "$T/slurm"
alldone "$T/slurm"
table "$T/slurm" >"$T/slurm.table"
diff "$T/local.table" "$T/slurm.table" || { echo "FAIL: Slurm results differ from the local run"; exit 1; }
metrics "$T/slurm" >"$T/slurm.metrics"
diff "$T/local.metrics" "$T/slurm.metrics" || { echo "FAIL: Slurm metric rows differ from the local run's"; exit 1; }
echo "PASS slurm results equal the local run"

# 3. Kill the NAtS task mid-run (after its first checkpoint), resubmit, finish.
"$T/runner" -sweep $sweep -out "$T/kill" -launcher slurm
job=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["groups"][0]["job_id"])' "$T/kill/slurmci/slurm/jobs.json")
# The NAtS run's own directory (its config hash, from the dry-run listing): wait for *its* first checkpoint, not any
# run's (waiting on any run's step-10 checkpoint let a slow machine cancel NAtS before it had one). Any step-*.ckpt
# will do: the trainer keeps the newest two, so step 10's may already be gone on a fast machine.
nats=$("$T/runner" -sweep $sweep -out "$T/kill" -dry-run | awk '$2 == "nats,seed=0" {print $3}')
[ -n "$nats" ] || { echo "FAIL: no nats,seed=0 run in the dry-run listing"; exit 1; }
ck="$T/kill/slurmci/$nats/ckpt"
for _ in $(seq 1 1500); do
	compgen -G "$ck/step-*.ckpt" >/dev/null && break
	sleep 0.2
done
compgen -G "$ck/step-*.ckpt" >/dev/null || { echo "FAIL: the NAtS run wrote no checkpoint in $ck in 5 min"; ls -R "$T/kill/slurmci"; exit 1; }
grep -qs "run nats,seed=0" "$T/kill/slurmci/slurm/g0_${job}_1.log" ||
	{ echo "FAIL: task ${job}_1 is not the NAtS run:"; cat "$T/kill/slurmci/slurm/g0_${job}_1.log"; exit 1; }
scancel "${job}_1"
echo "cancelled task ${job}_1 (the NAtS run)"
drain
"$T/runner" status -sweep $sweep -out "$T/kill"
if "$T/runner" -sweep $sweep -out "$T/kill" -dry-run | tail -1 | grep -q '4 runs: 4 done'; then
	echo "FAIL: the cancelled run finished anyway (cancelled too late?)"; exit 1
fi
"$T/runner" -sweep $sweep -out "$T/kill" -launcher slurm
drain
alldone "$T/kill"
grep -h "resuming" "$T"/kill/slurmci/slurm/*.log || { echo "FAIL: the resubmitted run did not resume from its checkpoint"; exit 1; }
table "$T/kill" >"$T/kill.table"
diff "$T/local.table" "$T/kill.table" || { echo "FAIL: results after cancel + resubmit differ from the local run"; exit 1; }
metrics "$T/kill" >"$T/kill.metrics"
diff "$T/local.metrics" "$T/kill.metrics" || { echo "FAIL: metric rows after cancel + resubmit differ from the local run's"; exit 1; }
echo "PASS $(wc -l <"$T/local.metrics") metric rows (all but wall-clock ones) equal the local run's, exactly"
echo "PASS cancel + resubmit completes the sweep with the same results"
echo "slurm launcher test passed in $(($(date +%s) - t0)) s"
