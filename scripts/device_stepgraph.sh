#!/usr/bin/env bash
# Where a decoding step's device time goes on the 8B-shaped attention at batch 32 (engine.TestGPUStepGraph: the
# step graph alone at full attention's and NAtS's 32k capacities), on one H200, in one call (~6 minutes):
#   1. base:     the step graph's time per call, full and NAtS;
#   2. ncu:      the same under Nsight Compute, 3 steps each bracketed with cuProfilerStart/Stop, every kernel's
#                duration (ncu.csv), with XLA's optimised HLO of the graphs (hlo.tar.xz) to name the fusions;
#   3. overhead: the cost of a graph call by number of inputs and outputs (TestGPUExecOverhead);
#   4. nocmdbuf: XLA's command buffers (CUDA graphs) off; 5. autotune0: XLA's autotuning off.
#   build here:  CGO_ENABLED=1 go test -c -tags 'xla gpu' -o .carry/dev/engine.test ./engine && xz -T2 -f .carry/dev/engine.test
#   device:      scripts/device_stepgraph.sh .carry/dev   (carry .carry/dev/engine.test.xz)
# Leaves in $OUT: <step>.log, ncu.csv, ncu.ncu-rep, hlo.tar.xz. Prints a short summary last.
set -uo pipefail
dir=${1:-.carry/dev}
bin=/tmp/bin
mkdir -p $bin "$OUT"
export GOMLX_NO_AUTO_INSTALL=1
xz -dc "$dir/engine.test.xz" >$bin/engine.test && chmod +x $bin/engine.test
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv,noheader
ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
until=${UNTIL:-565}

# one NAME TEST [VAR=VALUE...] [-- PREFIX...]: one test process, its output in $OUT/NAME.log.
one() {
	local name=$1 test=$2
	shift 2
	local envs=() pre=()
	while [ $# -gt 0 ] && [ "$1" != -- ]; do envs+=("$1"); shift; done
	[ "${1:-}" = -- ] && shift && pre=("$@")
	local left=$((until - SECONDS))
	if [ $left -lt 50 ]; then
		echo "$name: skipped ($left s left)"
		return
	fi
	env "${envs[@]}" timeout -k 5 $left "${pre[@]}" $bin/engine.test -test.run "^$test\$" -test.v >"$OUT/$name.log" 2>&1
	echo "$name: exit $? (124 = cut) after $SECONDS s"
}

one base TestGPUStepGraph
if [ -n "$ncu" ]; then
	one ncu TestGPUStepGraph NATSBENCH_PROFILE_STEPS=3 NATSBENCH_STEP_N=5 \
		XLA_FLAGS="${XLA_FLAGS:-} --xla_dump_to=/tmp/xd --xla_dump_hlo_as_text" -- \
		"$ncu" --profile-from-start off --metrics gpu__time_duration.sum --clock-control none --cache-control none \
		-o "$OUT/ncu" -f
	[ -f "$OUT/ncu.ncu-rep" ] && "$ncu" -i "$OUT/ncu.ncu-rep" --csv --page raw --print-units base >"$OUT/ncu.csv" 2>&1
	(cd /tmp/xd 2>/dev/null && ls *after_optimizations.txt >/dev/null 2>&1 &&
		tar -cf - *after_optimizations.txt | xz -T0 -6 >"$OUT/hlo.tar.xz")
else
	echo "ncu: not found"
fi
one overhead TestGPUExecOverhead
one nocmdbuf TestGPUStepGraph XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_enable_command_buffer="
one autotune0 TestGPUStepGraph XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_autotune_level=0"

echo
ls -la "$OUT" | tail -n +2
echo
for f in base ncu overhead nocmdbuf autotune0; do
	[ -f "$OUT/$f.log" ] && grep -h -E 'step-graph|compile|exec with|FAIL|rror' "$OUT/$f.log" | sed "s/^/$f: /" | cut -c1-200
done
[ -f "$OUT/ncu.csv" ] && echo "ncu.csv: $(wc -l <"$OUT/ncu.csv") lines"
exit 0
