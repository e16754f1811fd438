package model

import (
	"fmt"
	"strings"
)

// Config is the architecture of the causal LM. Field names are the TOML keys of a sweep's [model] table.
// The defaults (DefaultConfig) are the reference defaults of the paper's code (NATS-SPEC.md §2.2).
type Config struct {
	VocabSize     int     `toml:"vocab_size"`     // tokens; default 50304 (GPT-2's 50257 padded)
	DModel        int     `toml:"d_model"`        // width; default 256
	NLayers       int     `toml:"n_layers"`       // blocks; default 8
	NHeads        int     `toml:"n_heads"`        // query heads; default 8
	NKVHeads      int     `toml:"n_kv_heads"`     // key/value heads (GQA); 0 means NHeads
	FFNMult       int     `toml:"ffn_mult"`       // MLP hidden = FFNMult·DModel; default 4
	MaxSeqLen     int     `toml:"max_seq_len"`    // longest position the model is used at; default 2048
	RopeTheta     float64 `toml:"rope_theta"`     // RoPE base; default 500000
	RopeScaling   string  `toml:"rope_scaling"`   // "llama3" (factor 8, low 1, high 4, original 8192) or "none"
	TieEmbeddings bool    `toml:"tie_embeddings"` // share the token embedding with the LM head; default false
	DType         string  `toml:"dtype"`          // compute dtype: "float32" (default) or "bfloat16" (GPU)
}

// DefaultConfig returns the reference model of the paper's code: d_model 256, 8 layers, 8 heads, GELU MLP 4×,
// RoPE θ=500000 with llama3 scaling, vocabulary 50304.
func DefaultConfig() Config {
	return Config{VocabSize: 50304, DModel: 256, NLayers: 8, NHeads: 8, FFNMult: 4, MaxSeqLen: 2048,
		RopeTheta: 500000, RopeScaling: "llama3", DType: "float32"}
}

// KVHeads returns the number of key/value heads (NKVHeads, or NHeads when unset).
func (c Config) KVHeads() int {
	if c.NKVHeads <= 0 {
		return c.NHeads
	}
	return c.NKVHeads
}

// HeadDim returns DModel / NHeads.
func (c Config) HeadDim() int { return c.DModel / c.NHeads }

// Validate checks the configuration and names the offending field (TOML name) in its error.
func (c Config) Validate() error {
	pos := func(name string, v int) error {
		if v <= 0 {
			return fmt.Errorf("model.%s = %d: must be positive", name, v)
		}
		return nil
	}
	for _, f := range []struct {
		n string
		v int
	}{{"vocab_size", c.VocabSize}, {"d_model", c.DModel}, {"n_layers", c.NLayers}, {"n_heads", c.NHeads},
		{"ffn_mult", c.FFNMult}, {"max_seq_len", c.MaxSeqLen}} {
		if err := pos(f.n, f.v); err != nil {
			return err
		}
	}
	if c.DModel%c.NHeads != 0 {
		return fmt.Errorf("model.n_heads = %d does not divide model.d_model = %d", c.NHeads, c.DModel)
	}
	if c.HeadDim()%2 != 0 {
		return fmt.Errorf("model.d_model / model.n_heads = %d: RoPE needs an even head dimension", c.HeadDim())
	}
	if c.NKVHeads < 0 || c.NHeads%c.KVHeads() != 0 {
		return fmt.Errorf("model.n_kv_heads = %d must divide model.n_heads = %d", c.NKVHeads, c.NHeads)
	}
	if c.RopeTheta <= 0 {
		return fmt.Errorf("model.rope_theta = %g: must be positive", c.RopeTheta)
	}
	switch c.RopeScaling {
	case "llama3", "none", "":
	default:
		return fmt.Errorf("model.rope_scaling = %q: want \"llama3\" or \"none\"", c.RopeScaling)
	}
	switch strings.ToLower(c.DType) {
	case "float32", "f32", "bfloat16", "bf16", "":
	default:
		return fmt.Errorf("model.dtype = %q: want \"float32\" or \"bfloat16\"", c.DType)
	}
	return nil
}

// IsBF16 reports whether the compute dtype is bfloat16.
func (c Config) IsBF16() bool {
	d := strings.ToLower(c.DType)
	return d == "bfloat16" || d == "bf16"
}
