#!/usr/bin/env bash
# The finetune sweep (NAtS §3: scorer-only self-distillation on a frozen pretrained model, passkey data, then
# passkey retrieval under full attention, the NAtS mask and StreamingLLM at the NAtS budget) on a lent H200 in one
# device call of at most ~4 minutes. The model is the only real pretrained one available offline, the bundled
# llama2.c aidreams260K (llama/testdata); haystacks are PG-19 books.
#
#   build here:  CGO_ENABLED=1 go build -tags xla -o .carry/runner ./runner
#   device:      scripts/device_finetune.sh .carry/runner [HAYSTACK_DIR]      (carry .carry, and data/pg19-subset
#                if it is a real folder here; without it the bundled testdata/pg19 books are the haystacks)
#
# Leaves in $OUT: gpu.txt, finetune.log, report.log, summary.md, finetune-results.tar.gz (run folders:
# metrics.parquet, manifest.json, adapter.safetensors; no ckpt/). Unpack here with
#   tar -xzf finetune-results.tar.gz -C results/finetune
# The sweep is cut at FT_S seconds (default 200); finished runs keep their DONE markers and cut runs their
# resumable state, so rerunning on the same warm machine finishes the rest.
set -uo pipefail
bin=${1:?usage: device_finetune.sh RUNNER [HAYSTACK_DIR]}
hay=${2:-}
res=/tmp/ftres
mkdir -p "$res" "$OUT" data
export GOMLX_NO_AUTO_INSTALL=1
nvidia-smi --query-gpu=name,memory.total,memory.free,driver_version --format=csv,noheader >"$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"
# sweeps/finetune.toml reads finetune.haystack = "data/pg19-subset".
if [ -n "$hay" ]; then
	rm -f data/pg19-subset && ln -s "$(cd "$hay" && pwd)" data/pg19-subset
elif [ ! -e data/pg19-subset/train ]; then
	rm -f data/pg19-subset && ln -s "$(pwd)/testdata/pg19" data/pg19-subset
	echo "haystacks: testdata/pg19 (no data/pg19-subset here)" | tee -a "$OUT/finetune.log"
fi
timeout -k 10 "${FT_S:-200}" "$bin" -sweep finetune.toml -out "$res" -backend xla:cuda >>"$OUT/finetune.log" 2>&1
echo "sweep finetune.toml: exit $? (124 = cut at ${FT_S:-200} s)" | tee -a "$OUT/finetune.log"
timeout 60 "$bin" report -sweep finetune.toml -out "$res" >"$OUT/report.log" 2>&1
cp "$res/finetune/summary.md" "$OUT/summary.md" 2>/dev/null
tar -C "$res/finetune" --exclude=ckpt -czf "$OUT/finetune-results.tar.gz" . 2>/dev/null
tail -n 30 "$OUT/summary.md" 2>/dev/null || tail -n 30 "$OUT/finetune.log"
