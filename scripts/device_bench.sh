#!/usr/bin/env bash
# The training-step benchmark (issue "training core": README "Performance") on a lent H200 in one device call:
#   1. model.test -test.run GPU: the fused NAtS attention against the materialised one in bf16 on cuDNN;
#   2. bench: natsbench's step for the paper and GPT-2-small shapes, full / NAtS (fused) / NAtS (materialised);
#   3. bench/torch_bench.py: the same models in PyTorch (eager SDPA, SDPA + torch.compile), in the same call;
#   4. optional (PROFILE=1): one NAtS paper-shape step under Nsight Compute (kernel times; NCU=0 skips it) and XLA's
#      optimised HLO (PROFILE_METHODS: the bench methods dumped, default nats).
#
#   build here:  scripts/device_pg19.sh pack     (xz'd runner/bench/model.test in .carry/dev)
#   device:      scripts/device_bench.sh .carry/dev        (carry .carry)
# Leaves in $OUT: gputest.log, gomlx.log, torch.log, train_step_gomlx.parquet, train_step_torch.csv (convert here
# with `go run ./bench -torch-csv F -out results/bench`), and with PROFILE=1 ncu.csv.gz, hlo.tar.gz.
set -uo pipefail
dir=${1:-.carry/dev}
bin=/tmp/bin
mkdir -p $bin "$OUT"
export GOMLX_NO_AUTO_INSTALL=1
for f in bench model.test; do xz -dc "$dir/$f.xz" >$bin/$f && chmod +x $bin/$f; done
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
(cd model && timeout 120 $bin/model.test -test.run GPU -test.v 2>&1) | tee "$OUT/gputest.log" | grep -E '^(---|ok|FAIL)'
timeout "${BENCH_S:-300}" $bin/bench -backend xla:cuda -configs "${CONFIGS:-paper,gpt2s}" -methods "${METHODS:-full,nats,nats-materialized,full-bias,nats-nocarrier}" \
	-bf16 -steps "${STEPS:-10}" -warmup 2 -out "$OUT" 2>&1 | tee "$OUT/gomlx.log" | grep -E 'ms/step|rror'
PYTHONUNBUFFERED=1 timeout 240 python3 bench/torch_bench.py --configs "${CONFIGS:-paper,gpt2s}" --steps "${STEPS:-10}" \
	2>&1 | tee "$OUT/torch.log" | grep -E 'ms/step|rror'
if [ "${PROFILE:-0}" = 1 ]; then
	# One NAtS step of the paper shape: XLA's optimised HLO (fusions) and each kernel's time under ncu (autotuning
	# off, so that the kernels are the step's; two steps are profiled, the warm-up and the timed one).
	XLA_FLAGS="--xla_dump_to=/tmp/hlo --xla_dump_hlo_as_text --xla_gpu_autotune_level=0" timeout 120 $bin/bench \
		-backend xla:cuda -configs paper -methods "${PROFILE_METHODS:-nats}" -bf16 -steps 1 -warmup 1 -out /tmp/prof >/dev/null 2>&1
	(cd /tmp && tar -czf "$OUT/hlo.tar.gz" hlo/*after_optimizations.txt) || ls /tmp/hlo | head
	ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
	[ "${NCU:-1}" = 0 ] && ncu= # ncu segfaulted on the Go binary twice (exit 139): NCU=0 skips it
	if [ -n "$ncu" ]; then
		# GODEBUG: Go's asynchronous preemption signals and ncu's injection did not mix (ncu exit 139 once).
		GODEBUG=asyncpreemptoff=1 XLA_FLAGS=--xla_gpu_autotune_level=0 timeout 200 "$ncu" --clock-control none --metrics gpu__time_duration.sum \
			--csv --page raw $bin/bench -backend xla:cuda -configs paper -methods nats -bf16 -steps 1 -warmup 1 \
			-out /tmp/prof2 >/tmp/ncu.csv 2>/tmp/ncu.err
		echo "ncu exit $?: $(wc -l </tmp/ncu.csv) lines"; tail -3 /tmp/ncu.err
		gzip -c /tmp/ncu.csv >"$OUT/ncu.csv.gz"
	fi
fi
echo; grep -h 'ms/step' "$OUT/gomlx.log" "$OUT/torch.log"
