#!/usr/bin/env bash
# Data-parallel scaling on the lent 2-GPU H200 machine (device kind nvidia-h200-x2), in one device call:
#   1. train.test -test.run GPUDataParallel: 2-GPU data-parallel training (train.data_parallel = 2: SPMD, NCCL
#      all-reduce) against 1 GPU on the same global batch: rows, parameter updates, replicas, checkpoint round trip;
#   2. bench: the bf16 training step of the paper and GPT-2-small shapes (full, NAtS) on 1 and 2 GPUs at the
#      shape's global batch (16 resp. 8 sequences: strong scaling), then on 2 GPUs at twice that batch
#      (-scale-batch: the same batch per GPU as on one, weak scaling);
#   3. testdata/scaling/scaling.toml (4 short paper-model runs, none waiting for another) timed three ways:
#      -devices 0 (one run at a time on one GPU), -devices 0,1 (two runs at a time, one per GPU) and as the copy
#      scaling_dp2 with train.data_parallel = 2 (one run at a time on both GPUs).
#
#   build here:  scripts/device_scaling.sh pack                     (xz'd runner, bench, train.test in .carry/scaling)
#   device:      scripts/device_scaling.sh run .carry/scaling       (carry .carry/scaling; kind nvidia-h200-x2)
#   STAGES=test,bench,sweep (default: all three) picks stages, for a second call if one was cut; BUDGET (570 s)
#   bounds the whole call: each step gets the time left, so a slow stage is cut rather than the call.
#   STEPS (10) timed bench steps; METHODS (full,nats), CONFIGS (paper,gpt2s).
# Leaves in $OUT: gputest.log, bench.log, bench_strong/ and bench_weak/train_step_gomlx.parquet (rows with a
# devices column), sweep_<name>.log, sweeps.tsv (name, exit status, seconds), scaling-results.tar.gz (run folders
# without checkpoints), and prints the tables last. Copy the Parquet files to results/scaling/ here.
set -uo pipefail
cmd=${1:?usage: device_scaling.sh pack|run [DIR]}
dir=${2:-.carry/scaling}

if [ "$cmd" = pack ]; then
	set -e
	mkdir -p "$dir"
	CGO_ENABLED=1 go build -buildvcs=true -tags xla -ldflags "-s -w" -o "$dir/runner" ./runner
	CGO_ENABLED=1 go build -buildvcs=true -tags xla -ldflags "-s -w" -o "$dir/bench" ./bench
	CGO_ENABLED=1 go test -buildvcs=true -c -tags 'xla gpu' -ldflags "-s -w" -o "$dir/train.test" ./train
	xz -T2 -6 -f "$dir/runner" "$dir/bench" "$dir/train.test"
	ls -la "$dir"
	exit 0
fi
[ "$cmd" = run ] || { echo "usage: device_scaling.sh pack|run [DIR]"; exit 2; }

t0=$(date +%s)
budget=${BUDGET:-570}
stages=${STAGES:-test,bench,sweep}
bin=/tmp/bin
mkdir -p $bin "$OUT"
export GOMLX_NO_AUTO_INSTALL=1
# No NVLink multicast (NVLS) on these machines: NCCL, PyTorch's symmetric memory and NVSHMEM (KINDS.md).
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
for f in runner bench train.test; do xz -dc "$dir/$f.xz" >$bin/$f && chmod +x $bin/$f; done
nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
ngpu=$(nvidia-smi -L | wc -l)
[ "$ngpu" -ge 2 ] || echo "only $ngpu GPU(s): the 2-GPU cases will fail or skip"

# left SECONDS_RESERVED: the seconds of the budget left, minus a reserve for the rest of the script.
left() { echo $((budget - ($(date +%s) - t0) - ${1:-15})); }
has() { case ",$stages," in *",$1,"*) return 0 ;; esac; return 1; }

if has test; then
	(cd train && timeout $(left) $bin/train.test -test.run GPUDataParallel -test.v 2>&1) | tee "$OUT/gputest.log" |
		grep -E '^(---|ok|FAIL|PASS)|largest|Error|error' | head -30
fi

if has bench; then
	: >"$OUT/bench.log"
	cb=${CONFIGS:-paper,gpt2s}
	mb=${METHODS:-full,nats}
	timeout $(left 100) $bin/bench -backend xla:cuda -configs "$cb" -methods "$mb" -bf16 -steps "${STEPS:-10}" -warmup 2 \
		-data-parallel 1,2 -out "$OUT/bench_strong" 2>&1 | tee -a "$OUT/bench.log" | grep -E 'ms/step|rror'
	timeout $(left 60) $bin/bench -backend xla:cuda -configs "$cb" -methods "$mb" -bf16 -steps "${STEPS:-10}" -warmup 2 \
		-data-parallel 2 -scale-batch -out "$OUT/bench_weak" 2>&1 | tee -a "$OUT/bench.log" | grep -E 'ms/step|rror'
fi

if has sweep; then
	: >"$OUT/sweeps.tsv"
	mkdir -p /tmp/sw
	sed -e 's/^name   = "scaling"/name   = "scaling_dp2"/' -e 's/^data_parallel = 1/data_parallel = 2/' \
		testdata/scaling/scaling.toml >/tmp/sw/scaling_dp2.toml
	grep -q '^data_parallel = 2' /tmp/sw/scaling_dp2.toml || echo "scaling_dp2.toml: data_parallel not set"
	timed() { # label, then the runner's arguments
		local label=$1
		shift
		local s=$(date +%s%N)
		timeout $(left) $bin/runner -backend xla:cuda -no-report -out /tmp/res_$label "$@" >"$OUT/sweep_$label.log" 2>&1
		local rc=$?
		local e=$(date +%s%N)
		printf '%s\t%s\t%s\n' "$label" "$rc" "$(((e - s) / 1000000))" >>"$OUT/sweeps.tsv"
		grep -E '^sweep |FAILED' "$OUT/sweep_$label.log" | tail -3
	}
	timed 1gpu -sweep testdata/scaling/scaling.toml -devices 0
	timed 2gpu_runs -sweep testdata/scaling/scaling.toml -devices 0,1
	timed 2gpu_dp -sweep /tmp/sw/scaling_dp2.toml
	(cd /tmp && tar --exclude=ckpt --exclude=_data -czf "$OUT/scaling-results.tar.gz" res_*) 2>/dev/null
fi

echo
echo "== training step, bf16 (tokens/s of the global batch; speed-up against 1 GPU of the same shape and method)"
awk '/ms\/step/ && $5 == "dev" {
	k = $1 " " $2; tok = $10; if ($4 == 1) base[k] = tok
	rows[++n] = sprintf("%-6s %-6s %s GPU batch %3d  %8.1f ms  %9.0f tok/s", $1, $2, $4, $7, $8, tok)
	key[n] = k; t[n] = tok
} END {
	for (i = 1; i <= n; i++) printf "%s  %s\n", rows[i], (key[i] in base) ? sprintf("%.2fx", t[i] / base[key[i]]) : "-"
}' "$OUT/bench.log" 2>/dev/null
if [ -s "$OUT/sweeps.tsv" ]; then
	echo "== scaling sweep (4 runs): wall seconds (exit status)"
	awk -F'\t' '{ s[$1] = $3 / 1000; printf "%-10s %7.1f s (exit %s)", $1, $3 / 1000, $2; if (NR > 1 && s["1gpu"] > 0) printf "  %.2fx", s["1gpu"] / ($3 / 1000); print "" }' "$OUT/sweeps.tsv"
fi
grep -E '^--- (PASS|FAIL|SKIP): TestGPUDataParallel' "$OUT/gputest.log" 2>/dev/null
echo "call took $(($(date +%s) - t0)) s"
