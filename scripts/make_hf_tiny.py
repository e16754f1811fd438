"""Writes a tiny random Llama saved by Hugging Face transformers, with reference logits, for natsbench's llama
loader test (llama/testdata/hf-tiny). Run on a machine with torch and transformers:

    python3 scripts/make_hf_tiny.py OUTDIR
"""
import json, os, sys
import torch
from transformers import LlamaConfig, LlamaForCausalLM

out = sys.argv[1] if len(sys.argv) > 1 else "hf-tiny"
os.makedirs(out, exist_ok=True)
torch.manual_seed(0)
cfg = LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-5, rope_theta=500000.0,
                  rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                "original_max_position_embeddings": 64},
                  tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
m = LlamaForCausalLM(cfg).eval()
for p in m.parameters():
    torch.nn.init.normal_(p, std=0.05)
m.save_pretrained(out, safe_serialization=True)
mb = LlamaForCausalLM.from_pretrained(out, torch_dtype=torch.bfloat16)
mb.save_pretrained(os.path.join(out, "bf16"), safe_serialization=True, max_shard_size="100KB")
tokens = [1, 17, 300, 42, 7, 511, 256, 3, 99, 100, 101, 5, 60, 61, 62, 63]
with torch.no_grad():
    logits = m(torch.tensor([tokens])).logits[0].float()
json.dump({"tokens": tokens, "logits": logits.tolist(), "transformers": __import__("transformers").__version__,
           "torch": torch.__version__}, open(os.path.join(out, "reference_logits.json"), "w"))
print("wrote", out)
