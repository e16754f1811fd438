package llama

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"strings"

	"github.com/gomlx/compute/dtypes"
)

// RopeLayout says which pairs of a head's dimensions RoPE rotates together.
type RopeLayout int

const (
	// RopeHalf is Hugging Face's rotate_half layout: dimension i pairs with i+head_dim/2. Used for every model
	// loaded from config.json + safetensors.
	RopeHalf RopeLayout = iota
	// RopeInterleaved is the GPT-J / Meta-original / llama2.c layout: dimensions (2i, 2i+1) form a pair. Used for
	// llama2.c checkpoints (LoadLlama2C), whose wq/wk rows are not permuted the way HF's conversion script does.
	RopeInterleaved
)

// String returns "half" or "interleaved".
func (l RopeLayout) String() string {
	if l == RopeInterleaved {
		return "interleaved"
	}
	return "half"
}

// RopeScaling is the llama3 frequency scaling of RoPE (HF `_compute_llama3_parameters`).
type RopeScaling struct {
	Type                 string  // "llama3" (the only type supported)
	Factor               float64 // e.g. 8
	LowFreqFactor        float64 // e.g. 1
	HighFreqFactor       float64 // e.g. 4
	OriginalMaxPositions int     // original_max_position_embeddings, e.g. 8192
}

// Config is the architecture of a Llama-family causal LM (Llama 2/3/3.1, Mistral), as read from a Hugging Face
// config.json or a llama2.c checkpoint header.
type Config struct {
	Architecture     string       // "LlamaForCausalLM", "MistralForCausalLM" or "llama2.c"
	HiddenSize       int          // hidden_size (d_model)
	IntermediateSize int          // intermediate_size (SwiGLU hidden width)
	NumLayers        int          // num_hidden_layers
	NumHeads         int          // num_attention_heads (query heads)
	NumKVHeads       int          // num_key_value_heads (grouped-query attention)
	HeadDim          int          // head_dim (hidden_size/num_attention_heads when absent from config.json)
	RMSNormEps       float64      // rms_norm_eps
	RopeTheta        float64      // rope_theta
	RopeScaling      *RopeScaling // nil: plain RoPE
	RopeLayout       RopeLayout   // RopeHalf for HF checkpoints, RopeInterleaved for llama2.c
	MaxPositions     int          // max_position_embeddings (llama2.c: seq_len)
	VocabSize        int          // vocab_size
	TieEmbeddings    bool         // tie_word_embeddings: the LM head is the token embedding
	SlidingWindow    int          // Mistral sliding_window: a query at i sees keys j with i-j < SlidingWindow; 0 = off
	BOS              int          // bos_token_id (-1 when absent)
	EOS              []int        // eos_token_id (one or several)
	TorchDType       string       // torch_dtype / dtype of the checkpoint ("bfloat16", "float32", ...), informational
	// DType is the compute dtype of the GoMLX graph: "float32" (default; use it on CPU) or "bfloat16". Parameters
	// are held as float32 (Model.Params) and cast in the graph, unless the caller holds them in the compute dtype
	// (HoldWeights); RMSNorm, attention scores and softmax stay in float32.
	DType string
}

// Supported architectures of config.json.
var supportedArchitectures = map[string]bool{"LlamaForCausalLM": true, "MistralForCausalLM": true}

// hfConfig is the subset of config.json that is read. Fields that can be null, an int or a list are raw.
type hfConfig struct {
	Architectures         []string        `json:"architectures"`
	ModelType             string          `json:"model_type"`
	HiddenSize            int             `json:"hidden_size"`
	IntermediateSize      int             `json:"intermediate_size"`
	NumHiddenLayers       int             `json:"num_hidden_layers"`
	NumAttentionHeads     int             `json:"num_attention_heads"`
	NumKeyValueHeads      *int            `json:"num_key_value_heads"`
	HeadDim               *int            `json:"head_dim"`
	RMSNormEps            float64         `json:"rms_norm_eps"`
	RopeTheta             *float64        `json:"rope_theta"`
	RopeScaling           json.RawMessage `json:"rope_scaling"`
	RopeParameters        json.RawMessage `json:"rope_parameters"` // transformers ≥ 5: rope_theta and scaling together
	MaxPositionEmbeddings int             `json:"max_position_embeddings"`
	VocabSize             int             `json:"vocab_size"`
	TieWordEmbeddings     *bool           `json:"tie_word_embeddings"`
	SlidingWindow         *int            `json:"sliding_window"`
	BOSTokenID            json.RawMessage `json:"bos_token_id"`
	EOSTokenID            json.RawMessage `json:"eos_token_id"`
	TorchDType            string          `json:"torch_dtype"`
	DType                 string          `json:"dtype"`
	HiddenAct             string          `json:"hidden_act"`
	AttentionBias         bool            `json:"attention_bias"`
	MLPBias               bool            `json:"mlp_bias"`
}

type hfRope struct {
	RopeType                      string   `json:"rope_type"`
	Type                          string   `json:"type"` // older configs
	RopeTheta                     *float64 `json:"rope_theta"`
	Factor                        float64  `json:"factor"`
	LowFreqFactor                 float64  `json:"low_freq_factor"`
	HighFreqFactor                float64  `json:"high_freq_factor"`
	OriginalMaxPositionEmbeddings int      `json:"original_max_position_embeddings"`
}

// LoadConfig reads a Hugging Face config.json. An architecture other than LlamaForCausalLM or MistralForCausalLM,
// an unsupported rope scaling, attention/MLP biases or an activation other than SiLU are errors naming the file.
// The result is validated.
func LoadConfig(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("llama config: %w", err)
	}
	cfg, err := ParseConfig(data)
	if err != nil {
		return Config{}, fmt.Errorf("llama config %s: %w", path, err)
	}
	return cfg, nil
}

// ParseConfig parses the contents of a Hugging Face config.json (see LoadConfig).
func ParseConfig(data []byte) (Config, error) {
	var h hfConfig
	if err := json.Unmarshal(data, &h); err != nil {
		return Config{}, fmt.Errorf("not valid JSON: %w", err)
	}
	if len(h.Architectures) != 1 || !supportedArchitectures[h.Architectures[0]] {
		return Config{}, fmt.Errorf("architectures = %q: not supported (want [\"LlamaForCausalLM\"] or [\"MistralForCausalLM\"])", h.Architectures)
	}
	if h.HiddenAct != "" && h.HiddenAct != "silu" {
		return Config{}, fmt.Errorf("hidden_act = %q: not supported (want \"silu\")", h.HiddenAct)
	}
	if h.AttentionBias || h.MLPBias {
		return Config{}, fmt.Errorf("attention_bias/mlp_bias = true: biases are not supported")
	}
	c := Config{
		Architecture:     h.Architectures[0],
		HiddenSize:       h.HiddenSize,
		IntermediateSize: h.IntermediateSize,
		NumLayers:        h.NumHiddenLayers,
		NumHeads:         h.NumAttentionHeads,
		NumKVHeads:       h.NumAttentionHeads,
		RMSNormEps:       h.RMSNormEps,
		RopeTheta:        10000,
		RopeLayout:       RopeHalf,
		MaxPositions:     h.MaxPositionEmbeddings,
		VocabSize:        h.VocabSize,
		TieEmbeddings:    false,
		BOS:              -1,
		TorchDType:       h.TorchDType,
		DType:            "float32",
	}
	if c.TorchDType == "" {
		c.TorchDType = h.DType
	}
	if h.NumKeyValueHeads != nil {
		c.NumKVHeads = *h.NumKeyValueHeads
	}
	if h.HeadDim != nil {
		c.HeadDim = *h.HeadDim
	} else if c.NumHeads > 0 {
		c.HeadDim = c.HiddenSize / c.NumHeads
	}
	if h.TieWordEmbeddings != nil {
		c.TieEmbeddings = *h.TieWordEmbeddings
	}
	if h.SlidingWindow != nil {
		c.SlidingWindow = *h.SlidingWindow
	}
	if h.RopeTheta != nil {
		c.RopeTheta = *h.RopeTheta
	}
	for _, raw := range []struct {
		name string
		msg  json.RawMessage
	}{{"rope_scaling", h.RopeScaling}, {"rope_parameters", h.RopeParameters}} {
		if isNull(raw.msg) {
			continue
		}
		var r hfRope
		if err := json.Unmarshal(raw.msg, &r); err != nil {
			return Config{}, fmt.Errorf("%s: %w", raw.name, err)
		}
		if r.RopeTheta != nil {
			c.RopeTheta = *r.RopeTheta
		}
		typ := r.RopeType
		if typ == "" {
			typ = r.Type
		}
		switch typ {
		case "", "default":
		case "llama3":
			c.RopeScaling = &RopeScaling{Type: "llama3", Factor: r.Factor, LowFreqFactor: r.LowFreqFactor,
				HighFreqFactor: r.HighFreqFactor, OriginalMaxPositions: r.OriginalMaxPositionEmbeddings}
		default:
			return Config{}, fmt.Errorf("%s.rope_type = %q: not supported (want \"llama3\", \"default\" or null)", raw.name, typ)
		}
	}
	var err error
	if c.BOS, err = firstInt(h.BOSTokenID, -1); err != nil {
		return Config{}, fmt.Errorf("bos_token_id: %w", err)
	}
	if c.EOS, err = intList(h.EOSTokenID); err != nil {
		return Config{}, fmt.Errorf("eos_token_id: %w", err)
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

func isNull(m json.RawMessage) bool {
	m = bytes.TrimSpace(m)
	return len(m) == 0 || string(m) == "null"
}

// intList reads null, an int or a list of ints.
func intList(m json.RawMessage) ([]int, error) {
	if isNull(m) {
		return nil, nil
	}
	var one int
	if err := json.Unmarshal(m, &one); err == nil {
		return []int{one}, nil
	}
	var many []int
	if err := json.Unmarshal(m, &many); err != nil {
		return nil, fmt.Errorf("want an int or a list of ints, got %s", m)
	}
	return many, nil
}

func firstInt(m json.RawMessage, def int) (int, error) {
	l, err := intList(m)
	if err != nil || len(l) == 0 {
		return def, err
	}
	return l[0], nil
}

// KVDim returns NumKVHeads·HeadDim, the width of the K and V projections.
func (c Config) KVDim() int { return c.NumKVHeads * c.HeadDim }

// QDim returns NumHeads·HeadDim, the width of the Q projection.
func (c Config) QDim() int { return c.NumHeads * c.HeadDim }

// ComputeDType is DType as a GoMLX dtype: BFloat16 for "bfloat16", else Float32.
func (c Config) ComputeDType() dtypes.DType {
	if c.DType == "bfloat16" {
		return dtypes.BFloat16
	}
	return dtypes.Float32
}

// IsEOS reports whether token is one of the end-of-sequence ids.
func (c Config) IsEOS(token int) bool {
	for _, e := range c.EOS {
		if e == token {
			return true
		}
	}
	return false
}

// Validate checks the configuration; errors name the config.json field.
func (c Config) Validate() error {
	pos := func(name string, v int) error {
		if v <= 0 {
			return fmt.Errorf("%s = %d: must be positive", name, v)
		}
		return nil
	}
	for _, f := range []struct {
		n string
		v int
	}{{"hidden_size", c.HiddenSize}, {"intermediate_size", c.IntermediateSize}, {"num_hidden_layers", c.NumLayers},
		{"num_attention_heads", c.NumHeads}, {"num_key_value_heads", c.NumKVHeads}, {"head_dim", c.HeadDim},
		{"max_position_embeddings", c.MaxPositions}, {"vocab_size", c.VocabSize}} {
		if err := pos(f.n, f.v); err != nil {
			return err
		}
	}
	if c.NumHeads%c.NumKVHeads != 0 {
		return fmt.Errorf("num_attention_heads = %d is not a multiple of num_key_value_heads = %d", c.NumHeads, c.NumKVHeads)
	}
	if c.HeadDim%2 != 0 {
		return fmt.Errorf("head_dim = %d: must be even for RoPE", c.HeadDim)
	}
	if !(c.RMSNormEps > 0) || math.IsInf(c.RMSNormEps, 0) {
		return fmt.Errorf("rms_norm_eps = %g: must be positive", c.RMSNormEps)
	}
	if !(c.RopeTheta > 1) || math.IsInf(c.RopeTheta, 0) {
		return fmt.Errorf("rope_theta = %g: must be > 1", c.RopeTheta)
	}
	if s := c.RopeScaling; s != nil {
		if s.Type != "llama3" {
			return fmt.Errorf("rope_scaling.rope_type = %q: not supported (want \"llama3\")", s.Type)
		}
		if !(s.Factor >= 1) || !(s.LowFreqFactor > 0) || !(s.HighFreqFactor > s.LowFreqFactor) || s.OriginalMaxPositions <= 0 {
			return fmt.Errorf("rope_scaling = {factor %g, low_freq_factor %g, high_freq_factor %g, original_max_position_embeddings %d}: "+
				"want factor ≥ 1, 0 < low_freq_factor < high_freq_factor, original_max_position_embeddings > 0",
				s.Factor, s.LowFreqFactor, s.HighFreqFactor, s.OriginalMaxPositions)
		}
	}
	if c.RopeLayout != RopeHalf && c.RopeLayout != RopeInterleaved {
		return fmt.Errorf("rope layout %d: unknown", c.RopeLayout)
	}
	if c.SlidingWindow < 0 {
		return fmt.Errorf("sliding_window = %d: must be positive or null", c.SlidingWindow)
	}
	if c.BOS >= c.VocabSize {
		return fmt.Errorf("bos_token_id = %d: outside vocab_size = %d", c.BOS, c.VocabSize)
	}
	for _, e := range c.EOS {
		if e < 0 || e >= c.VocabSize {
			return fmt.Errorf("eos_token_id = %d: outside vocab_size = %d", e, c.VocabSize)
		}
	}
	if c.DType != "float32" && c.DType != "bfloat16" {
		return fmt.Errorf("compute dtype %q: want \"float32\" or \"bfloat16\"", c.DType)
	}
	return nil
}

// RopeInvFreq returns the inverse frequencies of the config's RoPE (head_dim/2 values, float64), with llama3
// scaling when configured (HF `_compute_llama3_parameters`, with the config's factors; natsbench/model.RopeInvFreq
// is the same with the fixed Llama-3.1 factors).
func (c Config) RopeInvFreq() []float64 {
	hd := c.HeadDim
	inv := make([]float64, hd/2)
	for i := range inv {
		inv[i] = 1 / math.Pow(c.RopeTheta, float64(2*i)/float64(hd))
	}
	s := c.RopeScaling
	if s == nil {
		return inv
	}
	orig := float64(s.OriginalMaxPositions)
	lowWave, highWave := orig/s.LowFreqFactor, orig/s.HighFreqFactor
	for i, f := range inv {
		wave := 2 * math.Pi / f
		switch {
		case wave < highWave:
		case wave > lowWave:
			inv[i] = f / s.Factor
		default:
			smooth := (orig/wave - s.LowFreqFactor) / (s.HighFreqFactor - s.LowFreqFactor)
			inv[i] = (1-smooth)*f/s.Factor + smooth*f
		}
	}
	return inv
}

// RopeTables returns cos and sin `[n, head_dim/2]` (row-major) for positions 0..n-1. Frequency i applies to the
// pair (i, i+head_dim/2) in the RopeHalf layout and to (2i, 2i+1) in the RopeInterleaved layout.
func (c Config) RopeTables(n int) (cos, sin []float32) {
	inv := c.RopeInvFreq()
	half := len(inv)
	cos = make([]float32, n*half)
	sin = make([]float32, n*half)
	for p := 0; p < n; p++ {
		for i, f := range inv {
			// The angle is a float32 product, as in HF (inv_freq float32 @ positions float32) and llama2.c
			// (float val = pos * freq): at long positions this rounding is part of the model's semantics.
			a := float32(f) * float32(p)
			cos[p*half+i] = float32(math.Cos(float64(a)))
			sin[p*half+i] = float32(math.Sin(float64(a)))
		}
	}
	return cos, sin
}

// HFJSON returns a config.json for the configuration (the fields LoadConfig reads; a llama2.c model is written as
// LlamaForCausalLM).
func (c Config) HFJSON() []byte {
	arch := c.Architecture
	if !supportedArchitectures[arch] {
		arch = "LlamaForCausalLM"
	}
	m := map[string]any{
		"architectures": []string{arch}, "model_type": strings.ToLower(strings.TrimSuffix(arch, "ForCausalLM")),
		"hidden_size": c.HiddenSize, "intermediate_size": c.IntermediateSize, "num_hidden_layers": c.NumLayers,
		"num_attention_heads": c.NumHeads, "num_key_value_heads": c.NumKVHeads, "head_dim": c.HeadDim,
		"rms_norm_eps": c.RMSNormEps, "rope_theta": c.RopeTheta, "max_position_embeddings": c.MaxPositions,
		"vocab_size": c.VocabSize, "tie_word_embeddings": c.TieEmbeddings, "hidden_act": "silu",
		"torch_dtype": c.TorchDType, "rope_scaling": nil, "sliding_window": nil,
	}
	if c.TorchDType == "" {
		m["torch_dtype"] = "float32"
	}
	if s := c.RopeScaling; s != nil {
		m["rope_scaling"] = map[string]any{"rope_type": s.Type, "factor": s.Factor, "low_freq_factor": s.LowFreqFactor,
			"high_freq_factor": s.HighFreqFactor, "original_max_position_embeddings": s.OriginalMaxPositions}
	}
	if c.SlidingWindow > 0 {
		m["sliding_window"] = c.SlidingWindow
	}
	if c.BOS >= 0 {
		m["bos_token_id"] = c.BOS
	}
	if len(c.EOS) == 1 {
		m["eos_token_id"] = c.EOS[0]
	} else if len(c.EOS) > 1 {
		m["eos_token_id"] = c.EOS
	}
	out, _ := json.MarshalIndent(m, "", "  ")
	return out
}
