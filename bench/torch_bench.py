"""PyTorch reference for natsbench's training-step benchmark (bench/main.go).

The same model as natsbench's GoMLX LM (model/forward.go): GPT-style pre-norm blocks, LayerNorm without bias,
GELU MLP 4x (no biases), RoPE (rotate_half) with theta 500000 and llama3 scaling, untied LM head, vocab 50304;
AdamW (betas 0.9/0.95, weight decay 0.1 on matrices), global-norm clip 0.1, bf16 autocast. Full causal attention
through SDPA (eager, and with torch.compile). Prints one CSV row per case and writes $OUT/train_step_torch.csv.

    python3 bench/torch_bench.py --configs paper,gpt2s --steps 10
"""
import argparse, csv, math, os, time
import torch
import torch.nn as nn
import torch.nn.functional as F


def rope_inv_freq(hd, theta=500000.0, factor=8.0, low=1.0, high=4.0, orig=8192.0):
    inv = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    low_w, high_w = orig / low, orig / high
    out = []
    for f in inv.tolist():
        wave = 2 * math.pi / f
        if wave < high_w:
            out.append(f)
        elif wave > low_w:
            out.append(f / factor)
        else:
            s = (orig / wave - low) / (high - low)
            out.append((1 - s) * f / factor + s * f)
    return torch.tensor(out, dtype=torch.float64)


class Block(nn.Module):
    def __init__(self, d, h):
        super().__init__()
        self.h = h
        self.ln1 = nn.LayerNorm(d, bias=False)
        self.wq = nn.Linear(d, d, bias=False)
        self.wk = nn.Linear(d, d, bias=False)
        self.wv = nn.Linear(d, d, bias=False)
        self.wo = nn.Linear(d, d, bias=False)
        self.ln2 = nn.LayerNorm(d, bias=False)
        self.fc = nn.Linear(d, 4 * d, bias=False)
        self.proj = nn.Linear(4 * d, d, bias=False)

    def forward(self, x, cos, sin):
        b, s, d = x.shape
        hd = d // self.h
        xn = self.ln1(x)
        q = self.wq(xn).view(b, s, self.h, hd).transpose(1, 2)
        k = self.wk(xn).view(b, s, self.h, hd).transpose(1, 2)
        v = self.wv(xn).view(b, s, self.h, hd).transpose(1, 2)

        def rot(t):
            t1, t2 = t[..., : hd // 2], t[..., hd // 2:]
            return torch.cat([t1 * cos - t2 * sin, t2 * cos + t1 * sin], dim=-1)

        q, k = rot(q), rot(k)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.wo(a.transpose(1, 2).reshape(b, s, d))
        return x + self.proj(F.gelu(self.fc(self.ln2(x))))


class GPT(nn.Module):
    def __init__(self, vocab, d, layers, heads, seq):
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.blocks = nn.ModuleList([Block(d, heads) for _ in range(layers)])
        self.lnf = nn.LayerNorm(d, bias=False)
        self.head = nn.Linear(d, vocab, bias=False)
        inv = rope_inv_freq(d // heads)
        ang = torch.arange(seq, dtype=torch.float64)[:, None] * inv[None, :]
        self.register_buffer("cos", ang.cos().float(), persistent=False)
        self.register_buffer("sin", ang.sin().float(), persistent=False)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)

    def forward(self, idx, tgt):
        x = self.wte(idx)
        for blk in self.blocks:
            x = blk(x, self.cos, self.sin)
        logits = self.head(self.lnf(x))
        return F.cross_entropy(logits.float().view(-1, logits.size(-1)), tgt.view(-1))


SHAPES = {"tiny": (64, 2, 4, 4, 128), "paper": (256, 8, 8, 16, 1024), "gpt2s": (768, 12, 12, 8, 1024)}


def run(name, compile_, steps, warmup, dtype):
    d, L, H, B, S = SHAPES[name]
    torch.manual_seed(0)
    m = GPT(50304, d, L, H, S).cuda()
    decay = [p for p in m.parameters() if p.dim() >= 2]
    nodecay = [p for p in m.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": nodecay, "weight_decay": 0.0}],
                            lr=6e-4, betas=(0.9, 0.95), fused=True)
    fwd = torch.compile(m) if compile_ else m
    x = torch.randint(0, 50257, (B, S), device="cuda")
    y = torch.randint(0, 50257, (B, S), device="cuda")

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
            loss = fwd(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 0.1)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    t0 = time.time()
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    comp = time.time() - t0
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(steps):
        step()
    end.record()
    torch.cuda.synchronize()
    ms = start.elapsed_time(end) / steps
    return dict(impl="pytorch-compile" if compile_ else "pytorch-eager-sdpa", config=name, method="full", dtype=dtype,
                backend="cuda", batch=B, seq_len=S, params=sum(p.numel() for p in m.parameters()),
                ms_per_step=ms, tokens_per_second=B * S / ms * 1000, compile_seconds=comp, steps=steps)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--configs", default="paper,gpt2s")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--no-compile", action="store_true")
    a = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = True
    rows = []
    for name in a.configs.split(","):
        for comp in ([False] if a.no_compile else [False, True]):
            r = run(name, comp, a.steps, a.warmup, a.dtype)
            print(f"{r['config']:6s} {r['impl']:20s} {r['ms_per_step']:9.2f} ms/step {r['tokens_per_second']:10.0f} tok/s", flush=True)
            rows.append(r)
    out = os.path.join(os.environ.get("OUT", "."), "train_step_torch.csv")
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(rows)


if __name__ == "__main__":
    main()
