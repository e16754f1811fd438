package llama

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"natsbench/model"
)

// randomWeights returns HF-named random weights for c (gains near 1, matrices normal(0, 0.3/sqrt(in))).
func randomWeights(c Config, seed uint64) (names []string, shapes [][]int, data [][]float32) {
	rng := rand.New(rand.NewPCG(seed, 7))
	for _, s := range Specs(c) {
		n := 1
		for _, d := range s.Dims {
			n *= d
		}
		v := make([]float32, n)
		for i := range v {
			if s.Ones {
				v[i] = float32(1 + 0.1*rng.NormFloat64())
			} else {
				v[i] = float32(rng.NormFloat64() * 0.3 / math.Sqrt(float64(s.Dims[len(s.Dims)-1])))
			}
		}
		names, shapes, data = append(names, s.Name), append(shapes, s.Dims), append(data, v)
	}
	return
}

// writeModel writes config.json and the weights as dtype, in `shards` files with an index when shards > 1.
func writeModel(t *testing.T, dir string, c Config, names []string, shapes [][]int, data [][]float32, dtype string, shards int) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), c.HFJSON(), 0o644); err != nil {
		t.Fatal(err)
	}
	if shards == 1 {
		if err := WriteSafetensors(filepath.Join(dir, "model.safetensors"), names, shapes, data, dtype, map[string]string{"format": "pt"}); err != nil {
			t.Fatal(err)
		}
		return
	}
	weightMap := map[string]string{}
	for s := 0; s < shards; s++ {
		file := fmt.Sprintf("model-%05d-of-%05d.safetensors", s+1, shards)
		var n []string
		var sh [][]int
		var d [][]float32
		for i := s; i < len(names); i += shards {
			n, sh, d = append(n, names[i]), append(sh, shapes[i]), append(d, data[i])
			weightMap[names[i]] = file
		}
		if err := WriteSafetensors(filepath.Join(dir, file), n, sh, d, dtype, nil); err != nil {
			t.Fatal(err)
		}
	}
	idx, _ := json.Marshal(map[string]any{"metadata": map[string]any{"total_size": 0}, "weight_map": weightMap})
	if err := os.WriteFile(filepath.Join(dir, "model.safetensors.index.json"), idx, 0o644); err != nil {
		t.Fatal(err)
	}
}

func roundAll(data [][]float32, f func(float32) float32) [][]float32 {
	out := make([][]float32, len(data))
	for i, d := range data {
		out[i] = make([]float32, len(d))
		for k, v := range d {
			out[i][k] = f(v)
		}
	}
	return out
}

func bf16Round(v float32) float32 { return math.Float32frombits(uint32(Float32ToBF16(v)) << 16) }
func f16Round(v float32) float32  { return F16ToFloat32(Float32ToF16(v)) }

func testConfigs() map[string]Config {
	llama := Config{Architecture: "LlamaForCausalLM", HiddenSize: 32, IntermediateSize: 48, NumLayers: 2, NumHeads: 4,
		NumKVHeads: 2, HeadDim: 8, RMSNormEps: 1e-5, RopeTheta: 10000, MaxPositions: 64, VocabSize: 40,
		RopeScaling: &RopeScaling{Type: "llama3", Factor: 4, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPositions: 16},
		BOS:         1, EOS: []int{2, 3}, TorchDType: "float32", DType: "float32"}
	mistral := Config{Architecture: "MistralForCausalLM", HiddenSize: 24, IntermediateSize: 40, NumLayers: 2, NumHeads: 3,
		NumKVHeads: 1, HeadDim: 10, RMSNormEps: 1e-6, RopeTheta: 1e6, MaxPositions: 64, VocabSize: 37,
		TieEmbeddings: true, SlidingWindow: 3, BOS: 1, EOS: []int{2}, TorchDType: "float32", DType: "float32"}
	return map[string]Config{"llama": llama, "mistral": mistral}
}

func TestSafetensorsRandomModels(t *testing.T) {
	tokens := [][]int{{1, 5, 9, 22, 7, 7, 30, 11, 4, 0, 35, 12}, {1, 36, 2, 3, 8, 19, 20, 21, 6, 6, 6, 17}}
	for name, c := range testConfigs() {
		names, shapes, data := randomWeights(c, 42)
		for _, v := range []struct {
			dtype  string
			shards int
			round  func(float32) float32
		}{{"F32", 1, func(x float32) float32 { return x }}, {"BF16", 3, bf16Round}, {"F16", 2, f16Round}} {
			t.Run(name+"/"+v.dtype, func(t *testing.T) {
				dir := filepath.Join(t.TempDir(), "m")
				writeModel(t, dir, c, names, shapes, data, v.dtype, v.shards)
				m, err := Load(dir)
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(m.Config, c) {
					t.Fatalf("config after HFJSON/LoadConfig:\n got %+v\nwant %+v", m.Config, c)
				}
				ref := &refModel{c: refFromConfig(c), w: map[string][]float32{}}
				for i, d := range roundAll(data, v.round) {
					ref.w[names[i]] = d
					if got := m.Weight(names[i]); fmt.Sprint(got) != fmt.Sprint(d) {
						t.Fatalf("%s: loaded values differ from the written ones", names[i])
					}
				}
				r := NewRunner(goBackend(t), m)
				lg, err := r.Forward(tokens)
				if err != nil {
					t.Fatal(err)
				}
				worst := 0.0
				for b, row := range tokens {
					want := ref.logitsAll(row)
					for s := range row {
						d, _ := maxAbsDiff(lg.At(b, s), want[s])
						worst = max(worst, d)
					}
				}
				t.Logf("max |logit − reference| = %.2g", worst)
				if worst > 1e-4 {
					t.Errorf("logits differ from the plain-Go reference by %g", worst)
				}
				if v.dtype == "F32" {
					prompt := tokens[0][:5]
					want := ref.greedy(prompt, 20)
					got, err := r.Generate(prompt, 20)
					if err != nil {
						t.Fatal(err)
					}
					// Generate stops after an EOS; compare up to there.
					if !equalInts(got, want[:len(got)]) || (len(got) < 20 && !c.IsEOS(got[len(got)-1])) {
						t.Errorf("Generate = %v, reference %v", got, want)
					}
				}
			})
		}
	}
}

func TestF16Conversion(t *testing.T) {
	for _, c := range []struct {
		h uint16
		f float32
	}{{0x3C00, 1}, {0xC000, -2}, {0x7BFF, 65504}, {0x0001, 5.960464477539063e-08}, {0x0400, 6.103515625e-05},
		{0x3555, 0.333251953125}, {0x8000, float32(math.Copysign(0, -1))}} {
		if got := F16ToFloat32(c.h); got != c.f {
			t.Errorf("F16ToFloat32(%#04x) = %g, want %g", c.h, got, c.f)
		}
		if got := Float32ToF16(c.f); got != c.h {
			t.Errorf("Float32ToF16(%g) = %#04x, want %#04x", c.f, got, c.h)
		}
	}
	if !math.IsInf(float64(F16ToFloat32(0x7C00)), 1) || F16ToFloat32(0x7E00) == F16ToFloat32(0x7E00) {
		t.Error("inf/NaN")
	}
	if Float32ToF16(1e6) != 0x7C00 || Float32ToF16(1e-9) != 0 {
		t.Error("overflow/underflow")
	}
	if Float32ToBF16(1) != 0x3F80 || Float32ToBF16(-2.5) != 0xC020 || bf16Round(1.00390625) != 1 || bf16Round(1.01171875) != 1.015625 {
		t.Error("bf16 rounding")
	}
}

func TestSafetensorsBadInput(t *testing.T) {
	c := testConfigs()["llama"]
	names, shapes, data := randomWeights(c, 1)
	base := t.TempDir()
	mustErr := func(what string, err error, parts ...string) {
		t.Helper()
		if err == nil {
			t.Errorf("%s: no error", what)
			return
		}
		for _, p := range parts {
			if !strings.Contains(err.Error(), p) {
				t.Errorf("%s: error %q does not name %q", what, err, p)
			}
		}
		t.Logf("%s: %v", what, err)
	}

	// Missing shard.
	dir := filepath.Join(base, "sharded")
	writeModel(t, dir, c, names, shapes, data, "BF16", 3)
	missing := filepath.Join(dir, "model-00002-of-00003.safetensors")
	os.Remove(missing)
	_, err := Load(dir)
	mustErr("missing shard", err, missing)

	// Truncated file.
	dir = filepath.Join(base, "trunc")
	writeModel(t, dir, c, names, shapes, data, "F32", 1)
	file := filepath.Join(dir, "model.safetensors")
	raw, _ := os.ReadFile(file)
	os.WriteFile(file, raw[:len(raw)-10], 0o644)
	_, err = Load(dir)
	mustErr("truncated file", err, file, "truncated", NameLMHead) // the last tensor written is lm_head
	os.WriteFile(file, raw[:5], 0o644)
	_, err = Load(dir)
	mustErr("truncated header", err, file)

	// Unknown dtype, unsupported dtype, and a byte length that does not match the shape.
	hdrFile := func(header map[string]any, payload int) string {
		h, _ := json.Marshal(header)
		buf := binary.LittleEndian.AppendUint64(nil, uint64(len(h)))
		buf = append(append(buf, h...), make([]byte, payload)...)
		p := filepath.Join(base, fmt.Sprintf("h%d.safetensors", len(buf)))
		os.WriteFile(p, buf, 0o644)
		return p
	}
	p := hdrFile(map[string]any{"w": map[string]any{"dtype": "Q4_K", "shape": []int{2}, "data_offsets": []int{0, 2}}}, 2)
	_, err = OpenSafetensors(p)
	mustErr("unknown dtype", err, p, `"w"`, "Q4_K")
	p = hdrFile(map[string]any{"ids": map[string]any{"dtype": "I64", "shape": []int{2}, "data_offsets": []int{0, 16}}}, 16)
	s, err := OpenSafetensors(p)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = s.ReadFloat32("ids")
	mustErr("unsupported dtype", err, p, `"ids"`, "I64")
	s.Close()
	p = hdrFile(map[string]any{"w": map[string]any{"dtype": "F32", "shape": []int{3, 2}, "data_offsets": []int{0, 16}}}, 16)
	_, err = OpenSafetensors(p)
	mustErr("byte length vs shape", err, p, `"w"`)

	// Unsupported architecture.
	dir = filepath.Join(base, "gpt2")
	os.MkdirAll(dir, 0o755)
	cfgPath := filepath.Join(dir, "config.json")
	os.WriteFile(cfgPath, []byte(`{"architectures": ["GPT2LMHeadModel"], "n_embd": 768}`), 0o644)
	_, err = Load(dir)
	mustErr("unsupported architecture", err, cfgPath, "GPT2LMHeadModel")

	// A tensor of the wrong shape, a missing tensor, an extra tensor.
	for _, tc := range []struct {
		what string
		edit func(n []string, sh [][]int, d [][]float32) ([]string, [][]int, [][]float32)
		want string
	}{
		{"wrong shape", func(n []string, sh [][]int, d [][]float32) ([]string, [][]int, [][]float32) {
			sh[1] = []int{sh[1][0] * 2}
			d[1] = append(d[1], d[1]...)
			return n, sh, d
		}, names[1]},
		{"missing tensor", func(n []string, sh [][]int, d [][]float32) ([]string, [][]int, [][]float32) {
			return n[1:], sh[1:], d[1:]
		}, NameEmbed},
		{"extra tensor", func(n []string, sh [][]int, d [][]float32) ([]string, [][]int, [][]float32) {
			return append(n, "model.layers.0.self_attn.q_proj.bias"), append(sh, []int{32}), append(d, make([]float32, 32))
		}, "q_proj.bias"},
	} {
		dir := filepath.Join(base, strings.ReplaceAll(tc.what, " ", "_"))
		n, sh, d := tc.edit(append([]string{}, names...), append([][]int{}, shapes...), append([][]float32{}, data...))
		writeModel(t, dir, c, n, sh, d, "F32", 1)
		_, err := Load(dir)
		mustErr(tc.what, err, dir, tc.want)
	}
}

func TestConfigParsing(t *testing.T) {
	// Llama-3.1-8B's config.json (as published; NATS-SPEC.md §3.1).
	c, err := ParseConfig([]byte(`{"architectures": ["LlamaForCausalLM"], "attention_bias": false, "bos_token_id": 128000,
	  "eos_token_id": [128001, 128008, 128009], "hidden_act": "silu", "hidden_size": 4096, "intermediate_size": 14336,
	  "max_position_embeddings": 131072, "mlp_bias": false, "model_type": "llama", "num_attention_heads": 32,
	  "num_hidden_layers": 32, "num_key_value_heads": 8, "rms_norm_eps": 1e-05, "rope_scaling": {"factor": 8.0,
	  "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192, "rope_type": "llama3"},
	  "rope_theta": 500000.0, "tie_word_embeddings": false, "torch_dtype": "bfloat16", "vocab_size": 128256}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.HeadDim != 128 || c.NumKVHeads != 8 || c.RopeScaling == nil || c.RopeScaling.OriginalMaxPositions != 8192 ||
		!c.IsEOS(128009) || c.BOS != 128000 || c.RopeLayout != RopeHalf || c.TorchDType != "bfloat16" {
		t.Errorf("%+v", c)
	}
	// The llama3 frequencies agree with natsbench/model's (fixed Llama-3.1 factors).
	got, want := c.RopeInvFreq(), model.RopeInvFreq(128, 500000, "llama3")
	for i := range got {
		if math.Abs(got[i]-want[i]) > 1e-15*math.Abs(want[i]) {
			t.Fatalf("inv_freq[%d] = %g, model.RopeInvFreq %g", i, got[i], want[i])
		}
	}
	if p := "/work/shared/data/tokenizers/mistral-7b-v0.3/config.json"; fileExists(p) {
		m, err := LoadConfig(p)
		if err != nil {
			t.Fatal(err)
		}
		if m.Architecture != "MistralForCausalLM" || m.SlidingWindow != 0 || m.RopeTheta != 1e6 || m.HeadDim != 128 || m.VocabSize != 32768 {
			t.Errorf("%+v", m)
		}
	}
	for _, bad := range []struct{ json, want string }{
		{`{"architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 1, "num_hidden_layers": 1, "num_attention_heads": 3, "num_key_value_heads": 2, "max_position_embeddings": 8, "vocab_size": 8, "rms_norm_eps": 1e-5}`, "num_key_value_heads"},
		{`{"architectures": ["LlamaForCausalLM"], "rope_scaling": {"rope_type": "yarn", "factor": 4}}`, "yarn"},
		{`{"architectures": ["MistralForCausalLM"], "hidden_size": 0}`, "hidden_size"},
		{`{"architectures": ["LlamaForCausalLM"], "hidden_act": "gelu"}`, "gelu"},
	} {
		if _, err := ParseConfig([]byte(bad.json)); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("ParseConfig(%s): err = %v, want one naming %s", bad.json, err, bad.want)
		}
	}
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// readRefLogits reads reference_logits.json: {"tokens": [...], "logits": [[...]]}.
func readRefLogits(t *testing.T, path string) (tokens []int, logits [][]float32) {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var r struct {
		Tokens []int       `json:"tokens"`
		Logits [][]float32 `json:"logits"`
	}
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return r.Tokens, r.Logits
}

// TestHFReferenceLogits compares with logits computed by Hugging Face transformers itself on tiny random models it
// saved (testdata/hf-tiny*, made on the GPU machine by scripts/make_hf_tiny.py and testdata/gen/make_refs.py). Each
// folder is optional: the test skips what is absent.
func TestHFReferenceLogits(t *testing.T) {
	cases := []struct {
		dir, logits string
		tol         float64
		bf16        bool // compute in bfloat16
	}{
		{"testdata/hf-tiny", "testdata/hf-tiny/reference_logits.json", 1e-5, false},      // |logits| ≤ 0.08
		{"testdata/hf-tiny/bf16", "testdata/hf-tiny/reference_logits.json", 2e-3, false}, // bf16 weights vs f32 logits
		{"testdata/hf-tiny-mistral", "testdata/hf-tiny-mistral/reference_logits.json", 1e-5, false},
		{"testdata/hf-tiny", "testdata/hf-tiny/reference_logits.json", 2e-3, true}, // f32 weights, bf16 compute
	}
	ran := 0
	for _, tc := range cases {
		if !fileExists(filepath.Join(tc.dir, "config.json")) || !fileExists(tc.logits) {
			continue
		}
		ran++
		name := tc.dir
		if tc.bf16 {
			name += "/compute-bf16"
		}
		t.Run(name, func(t *testing.T) {
			m, err := Load(tc.dir)
			if err != nil {
				t.Fatal(err)
			}
			if tc.bf16 {
				m.Config.DType = "bfloat16"
			}
			tokens, want := readRefLogits(t, tc.logits)
			lg, err := NewRunner(goBackend(t), m).Forward([][]int{tokens})
			if err != nil {
				t.Fatal(err)
			}
			worst, scale := 0.0, 0.0
			for s := range tokens {
				d, _ := maxAbsDiff(lg.At(0, s), want[s])
				worst = max(worst, d)
				for _, v := range want[s] {
					scale = max(scale, math.Abs(float64(v)))
				}
			}
			t.Logf("%s (%s, weights %s, compute %s): max |logit − HF| = %.2g (max |logit| %.2g)", tc.dir,
				m.Config.Architecture, m.Config.TorchDType, m.Config.DType, worst, scale)
			if worst > tc.tol {
				t.Errorf("logits differ from HF transformers by %g (tolerance %g)", worst, tc.tol)
			}
		})
	}
	if ran == 0 {
		t.Skip("no testdata/hf-tiny*/ reference folders")
	}
}
