package finetune

import (
	"strings"
	"testing"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/dtypes/bfloat16"
	"github.com/gomlx/gomlx/core/tensors"

	"natsbench/llama"
	"natsbench/model"
	"natsbench/nats"
)

// TestBF16HeldWeightsStep: with bf16 compute, a trainer holding the frozen weights in bf16 (the default then)
// takes the same training steps as one holding them in float32 and casting them in the graph: equal losses, λ
// terms, densities and scorers after two steps, bit for bit on the pure-Go backend (the host rounding equals the
// backend's cast, llama's TestHoldWeightsBF16). The held bf16 weights and the float32 host parameters are unchanged
// by the steps; the scorers move.
func TestBF16HeldWeightsStep(t *testing.T) {
	backend, err := model.NewBackend("go")
	if err != nil {
		t.Fatal(err)
	}
	c := smallLlama()
	c.DType = "bfloat16"
	base, err := llama.NewRandom(c, 3)
	if err != nil {
		t.Fatal(err)
	}
	newT := func(weights string) *Trainer {
		nm, err := nats.New(nats.Config{Lambda: 1e-3, Window: 3, Chunk: 1})
		if err != nil {
			t.Fatal(err)
		}
		cfg := DefaultConfig()
		cfg.Steps, cfg.WeightsDType = 10, weights
		tr, err := New(backend, base, nm, cfg, 5)
		if err != nil {
			t.Fatal(err)
		}
		return tr
	}
	f32, bf := newT("float32"), newT("")
	if bf.Cfg.WeightsDType != "bfloat16" || f32.Cfg.WeightsDType != "float32" {
		t.Fatalf("weights dtypes %q, %q", bf.Cfg.WeightsDType, f32.Cfg.WeightsDType)
	}
	before := make([][]bfloat16.BFloat16, len(bf.weights))
	for i, w := range bf.weights {
		if w.DType() != dtypes.BFloat16 || f32.weights[i] != base.Params.Values[i] {
			t.Fatalf("%s: held %s", base.Params.Specs[i].Name, w.DType())
		}
		before[i] = tensors.MustCopyFlatData[bfloat16.BFloat16](w)
	}
	host := make([][]float32, len(base.Params.Values))
	for i := range host {
		host[i] = base.Params.Flat(i)
	}
	sc0 := bf.Scorers.Flat(0)
	toks, lab := smallSample()
	for step := 0; step < 2; step++ {
		r0, err := f32.TrainStep(toks, lab)
		if err != nil {
			t.Fatal(err)
		}
		r1, err := bf.TrainStep(toks, lab)
		if err != nil {
			t.Fatal(err)
		}
		if r0.Loss != r1.Loss || r0.Aux != r1.Aux || r0.Density != r1.Density || r0.Loss <= 0 {
			t.Fatalf("step %d: bf16-held %+v, float32-held %+v", step+1, r1, r0)
		}
	}
	for i := range bf.Scorers.Specs {
		a, b := f32.Scorers.Flat(i), bf.Scorers.Flat(i)
		for k := range a {
			if a[k] != b[k] {
				t.Fatalf("%s[%d]: bf16-held %v, float32-held %v", bf.Scorers.Specs[i].Name, k, b[k], a[k])
			}
		}
	}
	for i, w := range bf.weights {
		after := tensors.MustCopyFlatData[bfloat16.BFloat16](w)
		for k := range after {
			if after[k] != before[i][k] {
				t.Fatalf("held weight %s[%d] changed", base.Params.Specs[i].Name, k)
			}
		}
		h := base.Params.Flat(i)
		for k := range h {
			if h[k] != host[i][k] {
				t.Fatalf("host weight %s[%d] changed", base.Params.Specs[i].Name, k)
			}
		}
	}
	moved := false
	for k, x := range bf.Scorers.Flat(0) {
		moved = moved || x != sc0[k]
	}
	if !moved {
		t.Fatal("the scorers did not move")
	}
}

// TestResolveWeightsDType: "" follows the compute dtype; bf16 weights under float32 compute, and unknown dtypes,
// are errors naming finetune.weights_dtype.
func TestResolveWeightsDType(t *testing.T) {
	for _, tc := range []struct{ weights, compute, want, err string }{
		{"", "float32", "float32", ""},
		{"", "", "float32", ""},
		{"", "bfloat16", "bfloat16", ""},
		{"float32", "bfloat16", "float32", ""},
		{"bfloat16", "bfloat16", "bfloat16", ""},
		{"bfloat16", "float32", "", "finetune.weights_dtype"},
		{"float16", "bfloat16", "", "finetune.weights_dtype = \"float16\""},
	} {
		got, err := ResolveWeightsDType(tc.weights, tc.compute)
		if got != tc.want || (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("ResolveWeightsDType(%q, %q) = %q, %v; want %q, error containing %q", tc.weights, tc.compute, got, err, tc.want, tc.err)
		}
	}
}

// TestFingerprintIgnoresComputeDType: scorers trained with bf16 compute load onto the same model loaded in float32
// (the fingerprint hashes the architecture, not the compute dtype), and a float32 fingerprint is what it was.
func TestFingerprintIgnoresComputeDType(t *testing.T) {
	c := smallLlama()
	b := c
	b.DType = "bfloat16"
	if Fingerprint(c) != Fingerprint(b) {
		t.Fatal("the compute dtype changes the fingerprint")
	}
	b.NumLayers++
	if Fingerprint(c) == Fingerprint(b) {
		t.Fatal("the number of layers does not change the fingerprint")
	}
}
