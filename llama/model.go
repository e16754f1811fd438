package llama

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/gomlx/gomlx/core/tensors"

	"natsbench/model"
)

// Model is a loaded Llama-family LM: its configuration and its float32 parameters (Specs order).
type Model struct {
	Config Config
	Params *model.Params
	Source string // the folder or file it was loaded from
}

// Parameter names are Hugging Face's: "model.embed_tokens.weight", "model.layers.N.self_attn.q_proj.weight", ...
// Linear weights keep HF's `[out, in]` layout, so a checkpoint maps onto the parameters one to one.

// LayerPrefix returns "model.layers.N.".
func LayerPrefix(l int) string { return fmt.Sprintf("model.layers.%d.", l) }

// Parameter names (suffixes after LayerPrefix for per-layer ones).
const (
	NameEmbed  = "model.embed_tokens.weight"
	NameNorm   = "model.norm.weight"
	NameLMHead = "lm_head.weight"
	NameAttnIn = "input_layernorm.weight"
	NameQ      = "self_attn.q_proj.weight"
	NameK      = "self_attn.k_proj.weight"
	NameV      = "self_attn.v_proj.weight"
	NameO      = "self_attn.o_proj.weight"
	NameMLPIn  = "post_attention_layernorm.weight"
	NameGate   = "mlp.gate_proj.weight"
	NameUp     = "mlp.up_proj.weight"
	NameDown   = "mlp.down_proj.weight"
)

// Specs returns the parameters of the architecture in a fixed order, with HF names and HF layouts: embedding
// `[vocab, hidden]`, q/k/v/o and gate/up/down `[out, in]`, norm gains `[hidden]`, lm_head `[vocab, hidden]` (absent
// when the embeddings are tied). Std is 0.02 for matrices (only used by NewRandom), gains are ones.
func Specs(c Config) []model.Spec {
	d := c.HiddenSize
	specs := []model.Spec{{Name: NameEmbed, Dims: []int{c.VocabSize, d}, Std: 0.02, Decay: true}}
	for l := 0; l < c.NumLayers; l++ {
		p := LayerPrefix(l)
		specs = append(specs,
			model.Spec{Name: p + NameAttnIn, Dims: []int{d}, Ones: true},
			model.Spec{Name: p + NameQ, Dims: []int{c.QDim(), d}, Std: 0.02, Decay: true},
			model.Spec{Name: p + NameK, Dims: []int{c.KVDim(), d}, Std: 0.02, Decay: true},
			model.Spec{Name: p + NameV, Dims: []int{c.KVDim(), d}, Std: 0.02, Decay: true},
			model.Spec{Name: p + NameO, Dims: []int{d, c.QDim()}, Std: 0.02, Decay: true},
			model.Spec{Name: p + NameMLPIn, Dims: []int{d}, Ones: true},
			model.Spec{Name: p + NameGate, Dims: []int{c.IntermediateSize, d}, Std: 0.02, Decay: true},
			model.Spec{Name: p + NameUp, Dims: []int{c.IntermediateSize, d}, Std: 0.02, Decay: true},
			model.Spec{Name: p + NameDown, Dims: []int{d, c.IntermediateSize}, Std: 0.02, Decay: true},
		)
	}
	specs = append(specs, model.Spec{Name: NameNorm, Dims: []int{d}, Ones: true})
	if !c.TieEmbeddings {
		specs = append(specs, model.Spec{Name: NameLMHead, Dims: []int{c.VocabSize, d}, Std: 0.02, Decay: true})
	}
	return specs
}

// NewRandom returns a model with random parameters (normal(0, 0.02), gains ones) from seed.
func NewRandom(c Config, seed uint64) (*Model, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &Model{Config: c, Params: model.NewParams(Specs(c), seed), Source: "random"}, nil
}

// emptyParams returns Params for specs without allocating their data (model.NewParams would allocate and fill
// every tensor, which for an 8B model is 32 GB of zeros): it is built over zero-size specs and the real specs are
// put back; every Values[i] must then be set by the caller.
func emptyParams(specs []model.Spec) *model.Params {
	zero := make([]model.Spec, len(specs))
	for i, s := range specs {
		zero[i] = model.Spec{Name: s.Name, Dims: []int{0}}
	}
	p := model.NewParams(zero, 0)
	p.Specs = specs
	return p
}

// Load reads a Hugging Face model folder: config.json (LoadConfig) and its safetensors weights (OpenCheckpoint),
// tensor by tensor, converting F32/F16/BF16 to float32. Every parameter of Specs must be present with HF's shape.
// Tensors the architecture does not use are an error (another architecture?), except rotary `inv_freq` buffers
// and `lm_head.weight` when the embeddings are tied (transformers ties it to the embedding then).
func Load(dir string) (*Model, error) {
	cfg, err := LoadConfig(filepath.Join(dir, "config.json"))
	if err != nil {
		return nil, err
	}
	ck, err := OpenCheckpoint(dir)
	if err != nil {
		return nil, err
	}
	defer ck.Close()
	specs := Specs(cfg)
	p := emptyParams(specs)
	used := map[string]bool{}
	for i, s := range specs {
		info, file, ok := ck.Info(s.Name)
		if !ok {
			return nil, fmt.Errorf("llama load %s: tensor %q is missing from the checkpoint", dir, s.Name)
		}
		if fmt.Sprint(info.Shape) != fmt.Sprint(s.Dims) {
			return nil, fmt.Errorf("llama load %s: tensor %q in %s has shape %v, config.json implies %v", dir, s.Name, file, info.Shape, s.Dims)
		}
		data, dims, err := ck.ReadFloat32(s.Name)
		if err != nil {
			return nil, fmt.Errorf("llama load: %w", err)
		}
		p.Values[i] = tensors.FromFlatDataAndDimensions(data, dims...)
		used[s.Name] = true
	}
	var extra []string
	for _, n := range ck.Names() {
		if used[n] || strings.HasSuffix(n, "rotary_emb.inv_freq") || (cfg.TieEmbeddings && n == NameLMHead) {
			continue
		}
		extra = append(extra, n)
	}
	if len(extra) > 0 {
		sort.Strings(extra)
		if len(extra) > 5 {
			extra = append(extra[:5], fmt.Sprintf("and %d more", len(extra)-5))
		}
		return nil, fmt.Errorf("llama load %s: tensors the %s architecture does not use: %v", dir, cfg.Architecture, extra)
	}
	return &Model{Config: cfg, Params: p, Source: dir}, nil
}

// Weight returns a host copy of a parameter by name, or nil.
func (m *Model) Weight(name string) []float32 {
	i := m.Params.Index(name)
	if i < 0 {
		return nil
	}
	return m.Params.Flat(i)
}

// Save writes the model as a Hugging Face folder: config.json (the fields LoadConfig reads) and model.safetensors
// in dtype ("F32" or "BF16").
// A model in the RopeInterleaved layout is refused (HF has no such layout): convert it with ToHalfLayout first.
func (m *Model) Save(dir, dtype string) error {
	if m.Config.RopeLayout != RopeHalf {
		return fmt.Errorf("llama save %s: the model uses the %s RoPE layout, which config.json cannot express; call ToHalfLayout first", dir, m.Config.RopeLayout)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), m.Config.HFJSON(), 0o644); err != nil {
		return err
	}
	names := make([]string, len(m.Params.Specs))
	shapes := make([][]int, len(names))
	data := make([][]float32, len(names))
	for i, s := range m.Params.Specs {
		names[i], shapes[i], data[i] = s.Name, s.Dims, m.Params.Flat(i)
	}
	return WriteSafetensors(filepath.Join(dir, "model.safetensors"), names, shapes, data, dtype, map[string]string{"format": "pt"})
}

// ToHalfLayout returns an equivalent model in the RopeHalf layout: the rows of every q_proj and k_proj are
// permuted per head so that the interleaved pair (2i, 2i+1) becomes (i, i+head_dim/2), as HF's
// convert_llama_weights_to_hf does. A RopeHalf model is returned unchanged. The parameters are shared otherwise.
func (m *Model) ToHalfLayout() *Model {
	if m.Config.RopeLayout == RopeHalf {
		return m
	}
	c := m.Config
	c.RopeLayout = RopeHalf
	out := &Model{Config: c, Source: m.Source, Params: emptyParams(m.Params.Specs)}
	copy(out.Params.Values, m.Params.Values)
	hd, d := c.HeadDim, c.HiddenSize
	for l := 0; l < c.NumLayers; l++ {
		for _, n := range []string{NameQ, NameK} {
			i := out.Params.Index(LayerPrefix(l) + n)
			src := m.Params.Flat(i)
			dst := make([]float32, len(src))
			heads := len(src) / (hd * d)
			for h := 0; h < heads; h++ {
				for j := 0; j < hd/2; j++ {
					copy(dst[(h*hd+j)*d:(h*hd+j+1)*d], src[(h*hd+2*j)*d:(h*hd+2*j+1)*d])
					copy(dst[(h*hd+hd/2+j)*d:(h*hd+hd/2+j+1)*d], src[(h*hd+2*j+1)*d:(h*hd+2*j+2)*d])
				}
			}
			out.Params.Values[i] = tensors.FromFlatDataAndDimensions(dst, m.Params.Specs[i].Dims...)
		}
	}
	return out
}
