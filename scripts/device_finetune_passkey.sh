#!/usr/bin/env bash
# NAtS fine-tuning of a small Llama that can retrieve passkeys, on a lent H200 in one device call (~8 minutes):
#   1. runner passkeygen: PK_N passkey samples (512 tokens, 2 passkeys of 2 NATO words, PG-19 haystacks,
#      the bundled 512-token llama2.c tokenizer), from the finetune kind's own sampler at disjoint indices;
#   2. scripts/train_passkey_llama.py: a 4-layer Llama (d 256, 8 heads, 4 KV heads) pretrained from scratch on them
#      for PRETRAIN_S seconds (PyTorch + transformers on the device), saved to data/passkey-llama;
#   3. sweeps/finetune_passkey.toml: NAtS scorers trained by self-distillation on the frozen model (λ = 1e-3, 1e-2,
#      1e-1), then held-out passkeys scored under full attention, NAtS and StreamingLLM at NAtS's budget.
#
#   build here:  scripts/device_pg19.sh pack         (xz'd runner, pg19-subset in .carry/dev)
#   device:      scripts/device_finetune_passkey.sh .carry/dev   (carry .carry/dev, or only its runner.xz to
#                stay under the 64 MiB a call carries: the haystacks are then testdata/pg19)
# Leaves in $OUT: passkeygen.log, pretrain.log, train_log.json (the base model's training and held-out accuracy),
# passkey-llama.tar.gz (the base model folder),
# finetune.log, summary.md, finetune-passkey-results.tar.gz (run folders without ckpt/). Unpack here with
#   mkdir -p results/finetune_passkey && tar -xzf finetune-passkey-results.tar.gz -C results/finetune_passkey
set -uo pipefail
dir=${1:-.carry/dev}
bin=/tmp/bin
res=/tmp/ftp
pk=/tmp/passkey
mkdir -p $bin $res data "$OUT"
export GOMLX_NO_AUTO_INSTALL=1
for f in runner; do xz -dc "$dir/$f.xz" >$bin/$f && chmod +x $bin/$f; done
# Haystacks: pg19-subset when carried (DIR/pg19-subset.tar.xz), else the bundled testdata/pg19 sample (both are
# read through data/pg19-subset, the path sweeps/finetune_passkey.toml names).
if [ ! -d data/pg19-subset/train ]; then
	rm -rf data/pg19-subset
	if [ -f "$dir/pg19-subset.tar.xz" ]; then tar -xJf "$dir/pg19-subset.tar.xz" -C data; else ln -s "$(pwd)/testdata/pg19" data/pg19-subset; fi
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$bin/runner passkeygen -tokenizer llama/testdata/tok512.bin -haystack data/pg19-subset -seq-len 512 -words 300 \
	-num-keys 2 -key-words 2 -n "${PK_N:-60000}" -out $pk 2>&1 | tee "$OUT/passkeygen.log"
PYTHONUNBUFFERED=1 timeout $((${PRETRAIN_S:-150} + 120)) python3 scripts/train_passkey_llama.py --data $pk \
	--out data/passkey-llama --seconds "${PRETRAIN_S:-150}" 2>&1 | tee "$OUT/pretrain.log" | grep -E 'model:|heldout|trained|rror'
cp data/passkey-llama/train_log.json "$OUT/" 2>/dev/null
# The base model itself (3.2M parameters, ~13 MB in float32), so that later runs can reuse it without pretraining.
tar -C data -czf "$OUT/passkey-llama.tar.gz" passkey-llama 2>/dev/null
timeout -k 10 "${FT_S:-240}" $bin/runner -sweep finetune_passkey.toml -out $res -backend xla:cuda >>"$OUT/finetune.log" 2>&1
echo "sweep finetune_passkey.toml: exit $? (124 = cut at ${FT_S:-240} s)" | tee -a "$OUT/finetune.log"
timeout 60 $bin/runner report -sweep finetune_passkey.toml -out $res >"$OUT/report.log" 2>&1
cp $res/finetune_passkey/summary.md "$OUT/summary.md" 2>/dev/null
tar -C $res/finetune_passkey --exclude=ckpt -czf "$OUT/finetune-passkey-results.tar.gz" . 2>/dev/null
grep -h -E 'passkey:|done|failed' "$OUT/finetune.log" | tail -12
tail -n 20 "$OUT/summary.md" 2>/dev/null
