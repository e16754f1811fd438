#!/usr/bin/env bash
# Diagnostics on a lent H200 in one device call (≤ ~9 minutes): where the time of a decoding step and of a NAtS
# training step goes.
#   1. sweeps/latency_diag.toml (full attention and NAtS, 1 and 8 layers, 1k and 32k prompts) under natsbench's
#      default flags (XLA's, with command buffers off since session 11, model.XLAFlags; dumping the optimised HLO of
#      the decoding step), with Triton GEMM fusions off, and (CMDBUF=1) with command buffers for every kind;
#   2. BENCH=1: bench, paper shape: full / NAtS / full through the biased kernel / NAtS without the carrier gradient
#      (measured 2026-11-29: 19.6 / 37.6 / 22.2 / 25.1 ms).
#
#   build here:  scripts/device_pg19.sh pack            (xz'd runner/bench/model.test in .carry/dev)
#   device:      scripts/device_diag.sh .carry/dev      (carry .carry/dev)
# Leaves in $OUT: diag-<variant>.log, latency-diag.tar.gz (run folders, one -out root per variant), hlo-diag.tar.gz,
# and with BENCH=1 bench.log and train_step_gomlx.parquet; prints a short table last.
set -uo pipefail
dir=${1:-.carry/dev}
bin=/tmp/bin
mkdir -p $bin "$OUT" /tmp/diag
export GOMLX_NO_AUTO_INSTALL=1
for f in runner $([ "${BENCH:-0}" = 1 ] && echo bench); do xz -dc "$dir/$f.xz" >$bin/$f && chmod +x $bin/$f; done
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

diag() { # variant XLA_FLAGS seconds
	XLA_FLAGS="$2" timeout -k 5 "$3" $bin/runner -sweep latency_diag.toml -out /tmp/diag/$1 -backend xla:cuda -no-report \
		>"$OUT/diag-$1.log" 2>&1
	echo "diag $1: exit $?"
}
# Variants: natsbench's default (with the optimised HLO of every graph dumped, to count a decoding step's kernels per
# layer), Triton GEMM fusions off (cuBLAS for every matmul: a batch-1 step is all matrix-vector products), and
# command buffers for every kind (measured 2026-11-29 when XLA's default had them on for some kinds: no gain, kept
# for comparison).
diag default "--xla_dump_to=/tmp/hlo_diag --xla_dump_hlo_as_text" "${DIAG_S:-100}"
steps=$(cd /tmp && ls hlo_diag/*after_optimizations.txt 2>/dev/null | grep -i step)
if [ -n "$steps" ]; then (cd /tmp && tar -czf "$OUT/hlo-diag.tar.gz" $steps); else ls /tmp/hlo_diag | head -20; fi
diag notriton "--xla_gpu_enable_triton_gemm=false" "${DIAG_S:-100}"
[ "${CMDBUF:-0}" = 1 ] && diag cmdbuf "--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,CUDNN,COLLECTIVES,CONDITIONAL,WHILE --xla_gpu_graph_min_graph_size=1" "${DIAG_S:-100}"
tar -C /tmp/diag --exclude=ckpt -czf "$OUT/latency-diag.tar.gz" .

if [ "${BENCH:-0}" = 1 ]; then
	timeout 150 $bin/bench -backend xla:cuda -configs paper -methods full,nats,full-bias,nats-nocarrier \
		-bf16 -steps 10 -warmup 2 -out "$OUT" 2>&1 | tee "$OUT/bench.log" | grep -E 'ms/step|rror'
fi

echo
echo "variant: prompt method → decode ms/token (device ms)"
for v in default notriton cmdbuf; do
	[ -f "$OUT/diag-$v.log" ] || continue
	grep -h -E 'latency .* prompt|failed|rror' "$OUT/diag-$v.log" | sed "s/^ */$v /" | cut -c1-160
done
[ -f "$OUT/bench.log" ] && grep -h 'ms/step' "$OUT/bench.log"
exit 0
