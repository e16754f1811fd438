"""Reference outputs for natsbench's llama package, made with Hugging Face tokenizers/transformers on a machine that
has them (the GPU machine). Writes into OUTDIR:

  tokenizer_refs.json  ids of a set of texts under the Llama-3 tokenizer.json and the Mistral-7B-v0.3 tokenizer.json
                       (tokenizers library, add_special_tokens=False), and under tokenizer.model.v3 with the
                       sentencepiece library when it is installed.
  hf-tiny-mistral/     a tiny random MistralForCausalLM (sliding_window 5, tied embeddings, head_dim != hidden/heads,
                       GQA) saved by transformers, with reference_logits.json {"tokens", "logits"}.

Usage: python3 make_refs.py TOKDIR OUTDIR   (TOKDIR holds llama3-hf/ and mistral-7b-v0.3/ as in shared/data/tokenizers)
"""
import json, os, sys

tokdir, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
here = os.path.dirname(os.path.abspath(__file__))
excerpt = open(os.path.join(here, "pg19_12215_excerpt.txt"), encoding="utf-8").read()
texts = [
    "Hello world",
    " Hello world",
    "Hello  world",
    "  leading spaces",
    "trailing spaces   ",
    "line\nbreaks\n\n\nand\ttabs\t\tx",
    "I'm sure we can't, they'RE here and we'LL go; she'd've",
    "12345 + 3.14159 = 1,000,000 and 2024-05-06",
    "naïve café Ünïcödé façade",
    "日本語のテキストと中文",
    "emoji 😀👍🏽 test ✓",
    "Crème brûlée costs €5.50 — “quoted” ‘text’…",
    "'ſ and ſ",
    "<|begin_of_text|>Hello<|eot_id|> there",
    "[INST] What is 2+2? [/INST] 4</s>",
    "a\r\nb\r\n\r\n  c",
    "   \n  x  \n",
    "def f(x):\n    return x**2  # square\n",
    "",
    excerpt,
]
res = {"texts": texts}
from tokenizers import Tokenizer
for name, path in [("llama3", "llama3-hf/tokenizer.json"), ("mistral", "mistral-7b-v0.3/tokenizer.json")]:
    tk = Tokenizer.from_file(os.path.join(tokdir, path))
    ids = [tk.encode(t, add_special_tokens=False).ids for t in texts]
    res[name] = ids
    res[name + "_decoded"] = [tk.decode(i, skip_special_tokens=False) for i in ids]
try:
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=os.path.join(tokdir, "mistral-7b-v0.3/tokenizer.model.v3"))
    res["mistral_sp"] = [sp.encode(t) for t in texts]
except Exception as e:  # not installed
    res["mistral_sp_error"] = repr(e)
import tokenizers
res["tokenizers_version"] = tokenizers.__version__
json.dump(res, open(os.path.join(out, "tokenizer_refs.json"), "w", encoding="utf-8"), ensure_ascii=False)

import torch, transformers
from transformers import MistralConfig, MistralForCausalLM
d = os.path.join(out, "hf-tiny-mistral")
torch.manual_seed(1)
cfg = MistralConfig(vocab_size=384, hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, head_dim=16, max_position_embeddings=128, rms_norm_eps=1e-6,
                    rope_theta=1000000.0, sliding_window=5, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2)
m = MistralForCausalLM(cfg).eval()
for p in m.parameters():
    torch.nn.init.normal_(p, std=0.08)
m.save_pretrained(d, safe_serialization=True)
m2 = MistralForCausalLM.from_pretrained(d).eval()
tokens = [1, 5, 300, 42, 7, 383, 256, 3, 99, 100, 101, 5, 60, 61, 62, 63, 10, 11, 12, 13]
with torch.no_grad():
    logits = m2(torch.tensor([tokens])).logits[0].float()
    cfg_full = MistralConfig(**{**cfg.to_dict(), "sliding_window": None})
    mf = MistralForCausalLM(cfg_full).eval()
    mf.load_state_dict(m2.state_dict())
    logits_full = mf(torch.tensor([tokens])).logits[0].float()
json.dump({"tokens": tokens, "logits": logits.tolist(), "logits_without_window": logits_full.tolist(),
           "attn_implementation": m2.config._attn_implementation,
           "transformers": transformers.__version__, "torch": torch.__version__},
          open(os.path.join(d, "reference_logits.json"), "w"))
print("wrote", out, "attn", m2.config._attn_implementation)
