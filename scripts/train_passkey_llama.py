"""Pretrains a small Llama (Hugging Face LlamaForCausalLM, random init) on natsbench's passkey-retrieval samples, so
that NAtS fine-tuning (sweeps/finetune_passkey.toml) has a base model whose full-attention passkey accuracy is worth
keeping: the only pretrained model available offline (aidreams260K) cannot retrieve passkeys at all.

    go run ./runner passkeygen -tokenizer llama/testdata/tok512.bin -haystack data/pg19-subset \\
        -seq-len 512 -words 300 -num-keys 2 -n 60000 -out /tmp/passkey
    python3 scripts/train_passkey_llama.py --data /tmp/passkey --out data/passkey-llama --seconds 150

Runs on a CUDA GPU with torch and transformers (the device machine has both). Loss: next-token cross-entropy over
each row's real tokens plus the same over its answer tokens (weight --answer-weight). The last --eval rows are held
out; their teacher-forced exact-match passkey accuracy (every answer token the argmax) is printed as it trains and
stored in OUT/train_log.json. Writes OUT/config.json and OUT/model.safetensors (float32) via save_pretrained.
"""
import argparse
import json
import math
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, help="folder written by `runner passkeygen`")
    ap.add_argument("--out", required=True, help="model folder to write (Hugging Face layout)")
    ap.add_argument("--seconds", type=float, default=150, help="training time budget")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--intermediate", type=int, default=704)
    ap.add_argument("--answer-weight", type=float, default=1.0)
    ap.add_argument("--eval", type=int, default=512, help="held-out rows (the last ones)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    meta = json.load(open(os.path.join(args.data, "meta.json")))
    toks = np.load(os.path.join(args.data, "tokens.npy"))
    labels = np.load(os.path.join(args.data, "labels.npy"))
    lens = np.load(os.path.join(args.data, "lens.npy"))
    n, s = toks.shape
    if not (0 < args.eval < n):
        raise SystemExit(f"--eval {args.eval}: want 1..{n - 1} held-out rows of {n}")
    ntrain = n - args.eval
    dev = "cuda"
    T = torch.from_numpy(toks.astype(np.int64)).to(dev)
    A = torch.from_numpy(labels.astype(np.bool_)).to(dev)
    real = torch.arange(s, device=dev)[None, :] < torch.from_numpy(lens.astype(np.int64)).to(dev)[:, None]

    torch.manual_seed(args.seed)
    cfg = LlamaConfig(vocab_size=meta["vocab_size"], hidden_size=args.hidden, intermediate_size=args.intermediate,
                      num_hidden_layers=args.layers, num_attention_heads=args.heads,
                      num_key_value_heads=args.kv_heads, max_position_embeddings=s, rms_norm_eps=1e-5,
                      rope_theta=10000.0, tie_word_embeddings=False, bos_token_id=max(meta["bos"], 0),
                      eos_token_id=max(meta["eos"], 0))
    model = LlamaForCausalLM(cfg).to(dev)
    nparams = sum(p.numel() for p in model.parameters())
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": other, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95))
    print(f"model: {nparams / 1e6:.2f}M parameters, {args.layers} layers, d {args.hidden}, "
          f"{args.heads}/{args.kv_heads} heads; data: {ntrain} train + {args.eval} held-out rows of {s} tokens",
          flush=True)

    def step_loss(idx):
        x = T[idx]
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(input_ids=x).logits
        ce = F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1),
                             reduction="none").view(x.shape[0], s - 1)
        m = real[idx][:, 1:].float()
        a = A[idx][:, 1:].float()
        lm = (ce * m).sum() / m.sum()
        ans = (ce * a).sum() / a.sum().clamp(min=1)
        return lm + args.answer_weight * ans, lm, ans

    @torch.no_grad()
    def accuracy():
        model.eval()
        hits = 0
        for i in range(ntrain, n, 128):
            x = T[i:min(i + 128, n)]
            with torch.autocast("cuda", dtype=torch.bfloat16):
                pred = model(input_ids=x).logits.argmax(-1)
            ok = (pred[:, :-1] == x[:, 1:]) | ~A[i:i + x.shape[0], 1:]  # answer token p is predicted at p−1
            hits += ok.all(dim=1).sum().item()
        model.train()
        return hits / args.eval

    g = torch.Generator(device="cpu").manual_seed(args.seed)
    log, step, t0 = [], 0, time.time()
    model.train()
    while True:
        el = time.time() - t0
        if el >= args.seconds:
            break
        lr = args.lr * min(1.0, (step + 1) / args.warmup) * (0.1 + 0.45 * (1 + math.cos(math.pi * el / args.seconds)))
        for grp in opt.param_groups:
            grp["lr"] = lr
        idx = torch.randint(0, ntrain, (args.batch,), generator=g).to(dev)
        loss, lm, ans = step_loss(idx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 200 == 0:
            row = {"step": step, "seconds": round(time.time() - t0, 1), "lr": lr, "lm_loss": lm.item(),
                   "answer_loss": ans.item()}
            if step % 1000 == 0:
                row["heldout_accuracy"] = accuracy()
            log.append(row)
            print(json.dumps(row), flush=True)
    acc = accuracy()
    summary = {"steps": step, "seconds": round(time.time() - t0, 1), "tokens": step * args.batch * s,
               "parameters": nparams, "heldout_rows": args.eval, "heldout_accuracy": acc, "data": meta,
               "args": vars(args), "torch": torch.__version__,
               "transformers": __import__("transformers").__version__, "log": log}
    os.makedirs(args.out, exist_ok=True)
    model.float().save_pretrained(args.out, safe_serialization=True)
    json.dump(summary, open(os.path.join(args.out, "train_log.json"), "w"), indent=1)
    print(f"trained {step} steps in {summary['seconds']} s; held-out passkey accuracy {acc:.3f}; wrote {args.out}",
          flush=True)


if __name__ == "__main__":
    main()
