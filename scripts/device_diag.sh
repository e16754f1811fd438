#!/usr/bin/env bash
# Diagnostics on a lent H200 in one device call (≤ ~9 minutes): where the time of a decoding step and of a NAtS
# training step goes.
#   1. sweeps/latency_diag.toml three times: XLA's default, command buffers (CUDA graphs) for every kind XLA
#      supports, and command buffers off; full attention and NAtS, 1 and 8 layers, 1k and 32k prompts;
#   2. bench, paper shape: full / NAtS / full through the biased kernel / NAtS without the carrier gradient;
#   3. XLA's optimised HLO of one NAtS training step, and ncu kernel times of it when ncu works there.
#
#   build here:  scripts/device_pg19.sh pack            (xz'd runner/bench/model.test in .carry/dev)
#   device:      scripts/device_diag.sh .carry/dev      (carry .carry/dev)
# Leaves in $OUT: diag-<variant>.log and latency-diag.tar.gz (run folders, one -out root per variant), bench.log,
# train_step_gomlx.parquet, hlo.tar.gz, ncu.csv.gz; prints a short table last.
set -uo pipefail
dir=${1:-.carry/dev}
bin=/tmp/bin
mkdir -p $bin "$OUT" /tmp/diag
export GOMLX_NO_AUTO_INSTALL=1
for f in runner bench; do xz -dc "$dir/$f.xz" >$bin/$f && chmod +x $bin/$f; done
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

diag() { # variant XLA_FLAGS seconds
	XLA_FLAGS="$2" timeout -k 5 "$3" $bin/runner -sweep latency_diag.toml -out /tmp/diag/$1 -backend xla:cuda -no-report \
		>"$OUT/diag-$1.log" 2>&1
	echo "diag $1: exit $?"
}
diag default "" "${DIAG_S:-100}"
diag cmdbuf "--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,CUDNN,COLLECTIVES,CONDITIONAL,WHILE --xla_gpu_graph_min_graph_size=1" "${DIAG_S:-100}"
diag nocmdbuf "--xla_gpu_enable_command_buffer=" "${DIAG_S:-100}"
tar -C /tmp/diag --exclude=ckpt -czf "$OUT/latency-diag.tar.gz" .

timeout 150 $bin/bench -backend xla:cuda -configs paper -methods full,nats,full-bias,nats-nocarrier \
	-bf16 -steps 10 -warmup 2 -out "$OUT" 2>&1 | tee "$OUT/bench.log" | grep -E 'ms/step|rror'

XLA_FLAGS="--xla_dump_to=/tmp/hlo --xla_dump_hlo_as_text --xla_gpu_autotune_level=0" timeout 90 $bin/bench \
	-backend xla:cuda -configs paper -methods nats -bf16 -steps 1 -warmup 1 -out /tmp/prof >/dev/null 2>&1
(cd /tmp && tar -czf "$OUT/hlo.tar.gz" hlo/*after_optimizations.txt) || ls /tmp/hlo | head
ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
if [ -n "$ncu" ]; then
	GODEBUG=asyncpreemptoff=1 XLA_FLAGS=--xla_gpu_autotune_level=0 timeout 120 "$ncu" --clock-control none \
		--metrics gpu__time_duration.sum --csv --page raw $bin/bench -backend xla:cuda -configs paper -methods nats \
		-bf16 -steps 1 -warmup 1 -out /tmp/prof2 >/tmp/ncu.csv 2>/tmp/ncu.err
	echo "ncu exit $?: $(wc -l </tmp/ncu.csv) lines"; tail -3 /tmp/ncu.err
	gzip -c /tmp/ncu.csv >"$OUT/ncu.csv.gz"
fi

echo
echo "variant: prompt method → decode ms/token (device ms)"
for v in default cmdbuf nocmdbuf; do
	grep -h -E 'latency .* prompt|failed|rror' "$OUT/diag-$v.log" | sed "s/^ */$v /" | cut -c1-160
done
grep -h 'ms/step' "$OUT/bench.log"
