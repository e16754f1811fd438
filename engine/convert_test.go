package engine

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/gomlx/gomlx/core/tensors"
)

// TestBF16WeightsConvertedOnce: with bf16 the engine passes weights converted once on the device; the outputs are
// bit-identical to passing the float32 weights (which the graphs convert on every call), also after a parameter
// tensor is replaced (as CalibrateRoles does).
func TestBF16WeightsConvertedOnce(t *testing.T) {
	cfg := tiny()
	cfg.DType = "bfloat16"
	backend := testBackend(t)
	prompt := randTokens(rand.New(rand.NewPCG(3, 4)), 1, 12, cfg.VocabSize)
	run := func(noCache bool, params func() []*tensors.Tensor) (first, second []float32) {
		p := testParams(cfg, nil, 7)
		p.Values = params()
		e, err := New(backend, cfg, nil, nil, p, Options{})
		if err != nil {
			t.Fatal(err)
		}
		e.noParamCache = noCache
		if _, err := e.Prefill(prompt, 4); err != nil {
			t.Fatal(err)
		}
		out, err := e.Step([]int32{5})
		if err != nil {
			t.Fatal(err)
		}
		first = out.Logits
		// Replace one weight (scaled wte) and decode again from a fresh prefill.
		i := p.Index("wte")
		w := p.Flat(i)
		for k := range w {
			w[k] *= 2
		}
		p.Values[i] = tensors.FromFlatDataAndDimensions(w, p.Specs[i].Dims...)
		if _, err := e.Prefill(prompt, 4); err != nil {
			t.Fatal(err)
		}
		if out, err = e.Step([]int32{5}); err != nil {
			t.Fatal(err)
		}
		return first, out.Logits
	}
	base := testParams(cfg, nil, 7)
	vals := func() []*tensors.Tensor {
		v := make([]*tensors.Tensor, len(base.Values))
		for i := range v {
			v[i] = tensors.FromFlatDataAndDimensions(base.Flat(i), base.Specs[i].Dims...)
		}
		return v
	}
	a1, a2 := run(false, vals)
	b1, b2 := run(true, vals)
	if !slices.Equal(a1, b1) || !slices.Equal(a2, b2) {
		t.Fatalf("bf16 logits differ with weights converted once: max diff %g, after a weight change %g", maxDiff(a1, b1), maxDiff(a2, b2))
	}
	if slices.Equal(a1, a2) {
		t.Fatal("changing wte did not change the logits: the converted copy went stale")
	}
}
