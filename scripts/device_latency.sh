#!/usr/bin/env bash
# The latency sweeps (NAtS paper, Figure 4) on a lent H200 in one device call of at most ~9 minutes:
#   1. the pg19 model shape, 1k…64k, every method: sweep latency.toml with the trained pg19 models when their run
#      folders (with ckpt/) are given as PG19_DIR, else sweep latency_random.toml (random weights, NAtS roles
#      calibrated to the rates of pg19 λ=5e-7);
#   2. sweep latency8b.toml: a Llama-3-8B-shaped attention (d 4096, 32 heads, 8 KV heads, bf16, 8 layers), random
#      weights, full / StreamingLLM / NAtS at 1k…64k, where a decoding step reads gigabytes of cache and weights.
#
#   build here:  CGO_ENABLED=1 go build -tags xla -o .carry/runner ./runner
#   device:      scripts/device_latency.sh .carry/runner [small|big|all] [PG19_DIR]     (carry .carry)
#
# Leaves in $OUT: gpu.txt, latency-results.tar.gz (the run folders: metrics.parquet, manifest.json, summary.md,
# figures; no checkpoints), small.log, big.log; prints a short table last (prompt, method, prefill, decode,
# KV fraction per line, from the runner's logs). Unpack here with: tar -xzf latency-results.tar.gz -C results
# Each sweep has its own time limit (SMALL_S, BIG_S seconds; default 270 each); a sweep cut short keeps its
# finished runs (DONE markers), and rerunning the script on the same warm machine finishes the rest.
set -uo pipefail
bin=${1:?usage: device_latency.sh RUNNER [small|big|all] [PG19_DIR]}
which=${2:-all}
pg19=${3:-}
res=/tmp/latres
mkdir -p "$res" "$OUT"
export GOMLX_NO_AUTO_INSTALL=1
nvidia-smi --query-gpu=name,memory.total,memory.free,driver_version --format=csv,noheader >"$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"

small=latency_random.toml
if [ -n "$pg19" ]; then
	# latency.toml reads its weights from out/pg19/<run-id>/ckpt (runs "pg19:full" and "pg19:nats,…").
	[ -e "$res/pg19" ] || ln -s "$(cd "$pg19" && pwd)" "$res/pg19"
	small=latency.toml
fi
run() { # sweep log seconds
	timeout -k 10 "$3" "$bin" -sweep "$1" -out "$res" -backend xla:cuda >>"$OUT/$2" 2>&1
	echo "sweep $1: exit $? (124 = cut at $3 s)" | tee -a "$OUT/$2"
}
case $which in small | all) run "$small" small.log "${SMALL_S:-270}" ;; esac
case $which in big | all) run latency8b.toml big.log "${BIG_S:-270}" ;; esac

tar -C "$res" --exclude=ckpt --exclude=pg19 -czf "$OUT/latency-results.tar.gz" . 2>/dev/null
echo
echo "prompt lengths, methods: prefill ms, decode ms/token, KV fraction (small = pg19 shape, big = 8B-shaped)"
for f in small big; do
	[ -f "$OUT/$f.log" ] || continue
	grep -h -E 'K/V memory limit|calibrated|latency .* prompt|failed|rror' "$OUT/$f.log" | sed "s/^ */$f /" | cut -c1-150
done
