#!/usr/bin/env bash
# The measurements still open after 2026-11-29, in two device calls on one H200 (each under the 10-minute limit):
#   PART=1 (≤ ~6 min):
#     1. fine-tuning memory: one scorer-only training step of a random-weight Llama-3-8B at 16k tokens (bf16 compute
#        and weights, per-layer checkpointing): does it fit one H200, and what peak does nvidia-smi see (memest -probe);
#     2. where a decoding step's time goes: scripts/device_diag.sh (decode-step HLO, Triton GEMM fusions off).
#   PART=2 (≤ ~9.5 min):
#     3. latency32k's batch-8 runs of the pg19 shape (the cache's share of a step with 8 sequences);
#     4. latency32k's nats_8b_g4: the 8B-shaped NAtS cache with the finer growth buckets (nats_8b, 157 s on the H200,
#        was measured with powers of two), the role rates the scorers reach at 32k, and the fullest row.
#
#   build here:  scripts/device_pg19.sh pack                     (xz'd runner/bench/model.test/memest in .carry/dev)
#   device:      PART=1 scripts/device_pending.sh .carry/dev     (carry .carry/dev/runner.xz and .carry/dev/memest.xz)
#                PART=2 scripts/device_pending.sh .carry/dev     (carry .carry/dev/runner.xz)
# Leaves in $OUT: PART=1 probe.log and the files of device_diag.sh; PART=2 latency32k.log and latency32k.tar.gz
# (unpack the run folders into results/latency32k/). Prints a short summary last.
set -uo pipefail
dir=${1:-.carry/dev}
part=${PART:-1}
bin=/tmp/bin
mkdir -p $bin "$OUT"
export GOMLX_NO_AUTO_INSTALL=1
for f in runner memest; do [ -f "$dir/$f.xz" ] && xz -dc "$dir/$f.xz" >$bin/$f && chmod +x $bin/$f; done
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

case $part in
1)
	timeout -k 5 "${PROBE_S:-140}" $bin/memest -probe -backend xla:cuda -seq "${PROBE_SEQ:-16384}" -steps 2 >"$OUT/probe.log" 2>&1
	echo "memest -probe: exit $? (3 = out of memory, 124 = cut)"
	DIAG_S=${DIAG_S:-100} bash scripts/device_diag.sh "$dir" >"$OUT/diag.out" 2>&1
	echo "device_diag.sh: exit $?"
	echo
	grep -h -E 'peak|fits|estimate|rror' "$OUT/probe.log" | cut -c1-160 | tail -8
	tail -12 "$OUT/diag.out"
	;;
2)
	# nats_8b_g4 first (the run that has waited longest), then the batch-8 runs; one process, one timeout.
	timeout -k 5 "${LAT_S:-540}" $bin/runner -sweep latency32k.toml -only 'nats_8b_g4' -out /tmp/l32 -backend xla:cuda \
		-no-report >"$OUT/latency32k.log" 2>&1
	echo "latency32k nats_8b_g4: exit $? (124 = cut)"
	left=$((${LAT_S:-540} - SECONDS + 5))
	[ $left -gt 60 ] && timeout -k 5 $left $bin/runner -sweep latency32k.toml -only '*_b8' -out /tmp/l32 -backend xla:cuda \
		-no-report >>"$OUT/latency32k.log" 2>&1
	echo "latency32k batch 8: exit $? (124 = cut; $left s were left)"
	tar -C /tmp/l32 -czf "$OUT/latency32k.tar.gz" . 2>/dev/null
	echo
	grep -h -E 'latency .*prompt|failed|rror' "$OUT/latency32k.log" | cut -c1-220
	;;
*)
	echo "PART=$part: want 1 or 2" >&2
	exit 2
	;;
esac
exit 0
