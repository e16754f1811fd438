// Package llama loads existing Llama-family language models (Llama 2, Llama 3/3.1, Mistral, and llama2.c
// checkpoints) into natsbench's functional GoMLX style, so that NAtS scorers can be fine-tuned on them
// (NATS-SPEC.md §3).
//
// # Model
//
// Parameters are a *model.Params with Hugging Face names and layouts (Specs): "model.embed_tokens.weight"
// `[vocab, hidden]`, "model.layers.N.self_attn.{q,k,v,o}_proj.weight" and "model.layers.N.mlp.{gate,up,down}_proj.weight"
// `[out, in]`, "model.layers.N.{input,post_attention}_layernorm.weight", "model.norm.weight" and "lm_head.weight"
// (absent when tie_word_embeddings). Forward builds the graph: RMSNorm in float32 with the config's eps, grouped-query
// attention with a causal mask (and Mistral's sliding window: query i sees key j when 0 ≤ i−j < sliding_window),
// RoPE with optional llama3 frequency scaling, SwiGLU MLP, tied or untied LM head. Options.Mask lets a caller
// multiply a learned mask into the attention; Options.MaskOut takes a model.Masker's mask (NAtS) in structured form.
// Attention is materialised (float32 scores and probabilities `[b, kv, rep, s, s]`) in float32 and fused in bf16
// (AttentionPath, fused.go): attention.Core (cuDNN flash attention on CUDA) for full attention, and
// model.FusedMaskedAttention (the same kernel with the hard mask as a bias, plus the carrier's custom VJP) for a
// structured mask, with the sliding window folded into the bias, the hard mask and the carrier regions. DecodeStep is one cached decoding step. Runner executes on a
// backend: Forward (logits), Generate (greedy, prefill + KV cache) and GenerateNoCache (repeated full forwards).
// Parameters stay float32 on the host; Config.DType "bfloat16" casts them in the graph (scores, softmax and
// RMSNorm stay float32), unless the caller holds them in bf16 (HoldWeights: rounded once on the host, so the device
// holds no float32 copy; NewRandomOnDevice generates random ones on the device for memory probes). Options.Checkpoint
// turns on per-layer gradient checkpointing (GoMLX's Node.Checkpoint: a layer is recomputed from its kept input in
// the backward pass).
//
// # Formats
//
//   - Hugging Face folders (Load): config.json (LoadConfig; LlamaForCausalLM or MistralForCausalLM, rope_scaling
//     "llama3" or none, transformers-5 "rope_parameters" too) and safetensors, one model.safetensors or shards listed
//     by model.safetensors.index.json. The safetensors reader is this package's own (OpenSafetensors,
//     OpenCheckpoint): it checks every header entry against the file, and reads tensor by tensor with ReadAt,
//     converting F32, F16 and BF16 to float32 in 1 MiB chunks, so a file is never held in memory whole (but
//     the model is: 4 bytes per parameter, 32 GB for an 8B model). WriteSafetensors and Model.Save write them.
//   - llama2.c legacy checkpoints (LoadLlama2C: 7 int32 header, float32 weights in run.c order) and llama2.c
//     tokenizers (tok512.bin).
//   - Tokenizers (LoadTokenizer, LoadTokenizerFor, interface Tokenizer): Llama-3 byte-level BPE from tokenizer.json
//     (ByteLevelBPE), SentencePiece BPE from tokenizer.model / tokenizer.model.v3 (SentencePieceTokenizer: Llama 2,
//     Mistral), llama2.c (Llama2CTokenizer). All three are written here rather than taken from a library: they share
//     one O(n log n) BPE merge loop, need no new dependency, and their ids equal HF tokenizers 0.23.2's on the
//     reference texts of testdata/tokenizer_refs.json (Llama 3 and Mistral v0.3, including special tokens written in
//     the text, leading spaces, CRLF, digits, CJK, emoji and byte fallback). The SentencePiece tokenizer follows HF's
//     converted tokenizer.json, not the sentencepiece library: "[INST]" in the text is one token, and a leading
//     space is merged into the dummy prefix (" Hello" → "▁Hello"; sentencepiece gives "▁", "▁Hello").
//
// # RoPE layout per source
//
// HF checkpoints use RopeHalf (rotate_half: dimension i pairs with i+head_dim/2). llama2.c checkpoints use
// RopeInterleaved (pairs (2i, 2i+1), theta 10000), as run.c does; their q/k rows are not permuted at load.
// Model.ToHalfLayout permutes them (as HF's conversion script does) to give an equivalent RopeHalf model, e.g. to
// Save it as a HF folder. Angles are float32 products position·inv_freq, as in HF and run.c.
//
// # Tests and references
//
//   - testdata/aidreams260K.bin + tok512.bin (a real pretrained llama2.c model): greedy decoding by Runner.Generate,
//     GenerateNoCache and a plain-Go run.c-style reference (ref_test.go, reading the file itself) agree token for
//     token, logits within 6e-6, and the text is English.
//   - Random Llama (llama3 scaling, GQA, untied) and Mistral (sliding window, tied, head_dim ≠ hidden/heads) models
//     written as F32, BF16 (3 shards + index) and F16 (2 shards) safetensors load back and match the reference
//     (≤ 4e-7), and Generate matches its greedy decoding. Options.Mask: all ones changes nothing, the diagonal
//     equals sliding_window 1. The fused path's hidden states equal the materialised path's (float32: ≤ 2.4e-7; bf16:
//     one bf16 step) with and without a hard mask, Llama and Mistral (fused_test.go); finetune's tests compare its
//     gradients. With Options.Checkpoint the loss and the gradients of every weight and of a mask input are
//     bit-identical to those without, on the materialised and the fused path (checkpoint_test.go); bf16-held weights
//     give bit-identical logits to float32 weights cast in the graph (held_test.go).
//   - HF transformers' own logits: testdata/hf-tiny (tiny random Llama with llama3 scaling, GQA, untied; f32 and a
//     bf16 sharded copy; made by scripts/make_hf_tiny.py) and testdata/hf-tiny-mistral (sliding_window 5, tied,
//     made by testdata/gen/make_refs.py), both saved by transformers 5.17.0 on the GPU machine: max |Δlogit| 3e-8 to
//     6e-8 in f32, ≤ 7e-4 with bf16 weights or bf16 compute (logits are ≤ 0.2 in size). TestHFReferenceLogits
//     runs for each such folder present (config.json, weights, reference_logits.json {"tokens": [...],
//     "logits": [[...]]}) and skips when none is. A check against a real released 8B checkpoint has not been run
//     (no weights here).
//   - Tokenizers: the Llama-3 and Mistral files are read from shared/data/tokenizers (NATSBENCH_SHARED_DATA, else
//     /work/shared/data; the tests skip without them) and compared with testdata/tokenizer_refs.json; round trips
//     on a Project Gutenberg excerpt. go test ./llama takes about 5 s on 2 cores.
//
// # Known limits
//
//   - Only the architectures above: no biases (Qwen), no other rope scalings (linear, dynamic, yarn, longrope), no
//     sliding-window KV cache eviction (Generate's cache holds every position), no batched generation.
//   - Generate compiles per capacity (prompt+n rounded up to 64); each step rewrites the whole K/V cache (a one-hot
//     update, since the pure-Go backend has no DynamicUpdateSlice). It is meant for checks and small models, not
//     fast serving.
//   - Decode returns invalid UTF-8 bytes as they are (HF writes U+FFFD). Only HF tokenizer.json files of the Llama-3
//     byte-level kind are read; for SentencePiece models load tokenizer.model. SentencePiece models with a
//     precompiled normalizer (nmt_nfkc) or of the unigram kind are refused.
//   - Pure-Go backend speed (2 shared cores): aidreams260K greedy decoding 150–500 tokens/s with the KV cache
//     (per-step overhead dominates at this size), about 45 tokens/s by GenerateNoCache.
package llama
