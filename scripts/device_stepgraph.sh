#!/usr/bin/env bash
# Where a decoding step's time goes on the 8B-shaped attention at batch 32, on one H200, in one call (~6 minutes):
#   1. base:      engine.TestGPUStepGraph, the step graph alone at full attention's and NAtS's 32k capacities;
#   2. overhead:  engine.TestGPUExecOverhead, the cost of a graph call by number of inputs and outputs, with the
#                 inputs the same every call or the previous call's outputs;
#   3. engine:    engine.TestGPUEngineVsGraph at a 4,096-token prompt, the engine's step beside its graph called
#                 alone, with uploads, and chained as decoding chains it;
#   4. cmdbuf:    3 with XLA's command buffers on for fusions and cuBLAS calls (a subset of XLA's own default list;
#                 natsbench turns them off, model.XLAFlags; session 11 measured a chained call 0.6–0.9 ms slower
#                 with XLA's default);
#   5. autotune0: 1 with XLA's autotuning off (session 11: 2.3–3.8× slower steps).
# Nsight Compute (ncu) segfaulted attaching to the test process on 2026-11-29, so no kernel-level profile.
#   build here:  CGO_ENABLED=1 go test -c -tags 'xla gpu' -o .carry/dev/engine.test ./engine && xz -T2 -f .carry/dev/engine.test
#   device:      scripts/device_stepgraph.sh .carry/dev   (carry .carry/dev/engine.test.xz)
# Leaves in $OUT: <step>.log. Prints a short summary last.
set -uo pipefail
dir=${1:-.carry/dev}
bin=/tmp/bin
mkdir -p $bin "$OUT"
export GOMLX_NO_AUTO_INSTALL=1
xz -dc "$dir/engine.test.xz" >$bin/engine.test && chmod +x $bin/engine.test
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
until=${UNTIL:-565}

# one NAME TEST [VAR=VALUE...]: one test process, its output in $OUT/NAME.log.
one() {
	local name=$1 test=$2
	shift 2
	local left=$((until - SECONDS))
	if [ $left -lt 50 ]; then
		echo "$name: skipped ($left s left)"
		return
	fi
	env "$@" timeout -k 5 $left $bin/engine.test -test.run "^$test\$" -test.v >"$OUT/$name.log" 2>&1
	echo "$name: exit $? (124 = cut) after $SECONDS s"
}

one base TestGPUStepGraph
one overhead TestGPUExecOverhead
one engine TestGPUEngineVsGraph NATSBENCH_ENGINE_PROMPT=4096
one cmdbuf TestGPUEngineVsGraph NATSBENCH_ENGINE_PROMPT=4096 XLA_FLAGS="--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL"
one autotune0 TestGPUStepGraph XLA_FLAGS="--xla_gpu_autotune_level=0"

echo
for f in base overhead engine cmdbuf autotune0; do
	[ -f "$OUT/$f.log" ] && grep -h -E 'step-graph|engine |  (full|nats) |exec with|FAIL|rror' "$OUT/$f.log" | sed "s/^/$f: /" | cut -c1-200
done
exit 0
