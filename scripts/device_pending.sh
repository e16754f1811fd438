#!/usr/bin/env bash
# The measurements still open after 2026-11-29, in one device call of at most ~9.6 minutes (140 + 2 × 100 + 155 + 75 s of timeouts) (one H200):
#   1. fine-tuning memory: one scorer-only training step of a random-weight Llama-3-8B at 16k tokens (bf16 compute and
#      weights, per-layer checkpointing): does it fit one H200, and what peak does nvidia-smi see (memest -probe);
#   2. where a decoding step's time goes: scripts/device_diag.sh (decode-step HLO, Triton GEMM fusions off);
#   3. latency32k's batch-8 runs of the pg19 shape (the cache's share of a step with 8 sequences);
#   4. latency32k's nats_8b again: the cache with finer growth buckets (engine.Options.GrowthSteps, default 4 since
#      the first measurement's powers of two), the role rates the scorers reached at 32k, and the fullest row.
#
#   build here:  scripts/device_pg19.sh pack            (xz'd runner/bench/model.test/memest in .carry/dev)
#   device:      scripts/device_pending.sh .carry/dev   (carry .carry/dev/runner.xz and .carry/dev/memest.xz)
# Leaves in $OUT: probe.log, the files of device_diag.sh, latency32k-b8.log, latency32k-nats8b.log and their .tar.gz
# (unpack the run folders into results/latency32k/); prints a short summary last.
set -uo pipefail
dir=${1:-.carry/dev}
bin=/tmp/bin
mkdir -p $bin "$OUT"
export GOMLX_NO_AUTO_INSTALL=1
for f in runner memest; do xz -dc "$dir/$f.xz" >$bin/$f && chmod +x $bin/$f; done
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

timeout -k 5 "${PROBE_S:-140}" $bin/memest -probe -backend xla:cuda -seq "${PROBE_SEQ:-16384}" -steps 2 >"$OUT/probe.log" 2>&1
echo "memest -probe: exit $? (3 = out of memory, 124 = cut)"

DIAG_S=${DIAG_S:-100} bash scripts/device_diag.sh "$dir" >"$OUT/diag.out" 2>&1
echo "device_diag.sh: exit $?"

timeout -k 5 "${B8_S:-155}" $bin/runner -sweep latency32k.toml -only '*_b8' -out /tmp/l8 -backend xla:cuda -no-report \
	>"$OUT/latency32k-b8.log" 2>&1
echo "latency32k batch 8: exit $? (124 = cut)"
tar -C /tmp/l8 -czf "$OUT/latency32k-b8.tar.gz" . 2>/dev/null

timeout -k 5 "${N8B_S:-75}" $bin/runner -sweep latency32k.toml -only nats_8b -out /tmp/n8 -backend xla:cuda -no-report \
	>"$OUT/latency32k-nats8b.log" 2>&1
echo "latency32k nats_8b again: exit $? (124 = cut)"
tar -C /tmp/n8 -czf "$OUT/latency32k-nats8b.tar.gz" . 2>/dev/null

echo
grep -h -E 'peak|fits|estimate|rror' "$OUT/probe.log" | cut -c1-160 | tail -8
tail -12 "$OUT/diag.out"
grep -h -E 'latency .*prompt|failed|rror' "$OUT/latency32k-b8.log" "$OUT/latency32k-nats8b.log" | cut -c1-200
exit 0
