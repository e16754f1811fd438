package llama

import (
	"testing"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"

	"natsbench/model"
)

// hiddenOf runs Forward on tokens (one row) with the given attention path and optional Hard-only structured mask
// and returns the final hidden states as float32.
func hiddenOf(t *testing.T, m *Model, c Config, tokens []int32, path AttentionPath, hard []bool) []float32 {
	t.Helper()
	s := len(tokens)
	n := len(m.Params.Specs)
	exec, err := NewExec(goBackend(t), func(in []*Node) []*Node {
		w := WeightsFrom(c, m.Params.Specs, in[:n])
		opt := Options{SkipLogits: true, Attention: path}
		if hard != nil {
			opt.MaskOut = func(_ int, normed *Node) model.MaskOut {
				return model.MaskOut{Hard: Reshape(Const(normed.Graph(), hard), 1, c.NumKVHeads, s, s)}
			}
		}
		return []*Node{ConvertDType(Forward(c, w, in[n], opt).Hidden, dtypes.Float32)}
	})
	if err != nil {
		t.Fatal(err)
	}
	out := execWeights(t, exec, m.Params.Values, tensors.FromFlatDataAndDimensions(tokens, 1, s))
	return tensors.MustCopyFlatData[float32](out[0])
}

// TestFusedTeacherMatchesMaterialized: without a mask (the fine-tuning teacher) and with a Hard-only structured
// mask (inference), the fused path's final hidden states equal the materialised path's, for grouped-query Llama and
// for Mistral, whose sliding window (3, shorter than the 12 tokens) the fused path folds into its bias. Both run in
// float32 on the pure-Go backend (AttentionFused forces the fused path; bf16 is not what this backend runs well), so
// only the order of float32 operations differs: hidden states are RMS-normed (entries of size ~1), and 2e-5 is
// ~100 float32 ulps there, while dropping the window or the mask moves them by O(0.1) (checked below).
func TestFusedTeacherMatchesMaterialized(t *testing.T) {
	tokens := []int32{1, 5, 9, 22, 7, 7, 30, 11, 4, 0, 35, 12}
	s := len(tokens)
	for name, c := range testConfigs() {
		t.Run(name, func(t *testing.T) {
			m, err := NewRandom(c, 5)
			if err != nil {
				t.Fatal(err)
			}
			// A causal Hard mask with a pseudo-random pattern; the diagonal stays visible.
			hard := make([]bool, c.NumKVHeads*s*s)
			for h := 0; h < c.NumKVHeads; h++ {
				for i := 0; i < s; i++ {
					for j := 0; j <= i; j++ {
						hard[(h*s+i)*s+j] = i == j || (i*7+j*3+h*5)%4 != 0
					}
				}
			}
			for _, tc := range []struct {
				name string
				hard []bool
			}{{"no-mask", nil}, {"hard-mask", hard}} {
				mat := hiddenOf(t, m, c, tokens, AttentionMaterialized, tc.hard)
				fus := hiddenOf(t, m, c, tokens, AttentionFused, tc.hard)
				d, at := maxAbsDiff(mat, fus)
				t.Logf("%s: max |Δhidden| = %.2g", tc.name, d)
				if d > 2e-5 {
					t.Errorf("%s: fused hidden states differ from the materialised ones by %g at %d", tc.name, d, at)
				}
			}
			// Sensitivity: the path does change the result when the window or the mask is dropped.
			plain := hiddenOf(t, m, c, tokens, AttentionFused, nil)
			if c.SlidingWindow > 0 {
				nw := c
				nw.SlidingWindow = 0
				if d, _ := maxAbsDiff(plain, hiddenOf(t, m, nw, tokens, AttentionFused, nil)); d < 1e-3 {
					t.Errorf("the sliding window changes nothing (%g): the test does not exercise it", d)
				}
			}
			if d, _ := maxAbsDiff(plain, hiddenOf(t, m, c, tokens, AttentionFused, hard)); d < 1e-3 {
				t.Errorf("the Hard mask changes nothing (%g): the test does not exercise it", d)
			}
		})
	}
}

// TestAttentionPathChoice: AttentionAuto is fused in bf16 and materialised in float32; a plain multiplicative mask
// or a Probs hook always materialises; the environment switches of package model apply to Auto only.
func TestAttentionPathChoice(t *testing.T) {
	g := NewGraph(goBackend(t), "choice")
	hard := model.MaskOut{Hard: Ones(g, shapes.Make(dtypes.Bool, 1, 1, 2, 2))}
	plain := model.MaskOut{Mask: Ones(g, shapes.Make(dtypes.Float32, 1, 1, 2, 2))}
	bf, f32 := dtypes.BFloat16, dtypes.Float32
	probs := func(int, *Node) {}
	for _, tc := range []struct {
		name string
		env  [2]string // NATSBENCH_NO_FUSED_ATTENTION, NATSBENCH_MASKED_ATTENTION
		opt  Options
		mo   model.MaskOut
		dt   dtypes.DType
		want bool
	}{
		{"auto/bf16/none", [2]string{}, Options{}, model.MaskOut{}, bf, true},
		{"auto/bf16/hard", [2]string{}, Options{}, hard, bf, true},
		{"auto/f32/hard", [2]string{}, Options{}, hard, f32, false},
		{"auto/bf16/plain-mask", [2]string{}, Options{}, plain, bf, false},
		{"auto/bf16/probs", [2]string{}, Options{Probs: probs}, model.MaskOut{}, bf, false},
		{"auto/bf16/no-fused-env", [2]string{"1", ""}, Options{}, model.MaskOut{}, bf, false},
		{"auto/bf16/masked-materialized-env/hard", [2]string{"", "materialized"}, Options{}, hard, bf, false},
		{"auto/bf16/masked-materialized-env/none", [2]string{"", "materialized"}, Options{}, model.MaskOut{}, bf, true},
		{"fused/f32/hard", [2]string{"1", ""}, Options{Attention: AttentionFused}, hard, f32, true},
		{"fused/f32/probs", [2]string{}, Options{Attention: AttentionFused, Probs: probs}, hard, f32, false},
		{"materialized/bf16", [2]string{}, Options{Attention: AttentionMaterialized}, hard, bf, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("NATSBENCH_NO_FUSED_ATTENTION", tc.env[0])
			t.Setenv("NATSBENCH_MASKED_ATTENTION", tc.env[1])
			if got := tc.opt.fused(tc.mo, tc.dt); got != tc.want {
				t.Errorf("fused = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestFusedBF16Forward: in the production dtype (bfloat16, AttentionAuto: the fused path) the final hidden states
// agree with the materialised bf16 path, with and without a Hard mask, on the pure-Go backend (attention.Core's
// decomposed form there, not cuDNN). The paths round to bf16 at different points, so they may differ by a few bf16
// steps of the largest entry (2⁻⁸ relative each; measured: one step); 4 steps is the bound, while a dropped window
// or mask moves the states by O(0.1–1) (TestFusedTeacherMatchesMaterialized).
func TestFusedBF16Forward(t *testing.T) {
	// AttentionAuto must take the fused path here: a caller's environment switching it off would make the test
	// compare the materialised path with itself.
	t.Setenv("NATSBENCH_NO_FUSED_ATTENTION", "")
	t.Setenv("NATSBENCH_MASKED_ATTENTION", "")
	tokens := []int32{1, 5, 9, 22, 7, 7, 30, 11, 4, 0, 35, 12}
	s := len(tokens)
	for name, c := range testConfigs() {
		t.Run(name, func(t *testing.T) {
			m, err := NewRandom(c, 5)
			if err != nil {
				t.Fatal(err)
			}
			c.DType = "bfloat16"
			hard := make([]bool, c.NumKVHeads*s*s)
			for i := range hard {
				q, k := (i/s)%s, i%s
				hard[i] = k <= q && (q == k || (q+2*k)%3 != 0)
			}
			for _, h := range [][]bool{nil, hard} {
				mat := hiddenOf(t, m, c, tokens, AttentionMaterialized, h)
				fus := hiddenOf(t, m, c, tokens, AttentionAuto, h)
				scale := 0.0
				for _, v := range mat {
					scale = max(scale, float64(v))
					scale = max(scale, -float64(v))
				}
				d, at := maxAbsDiff(mat, fus)
				t.Logf("mask %v: max |Δhidden| = %.3g (max |hidden| %.3g)", h != nil, d, scale)
				if d > 4*scale/256 {
					t.Errorf("mask %v: bf16 fused hidden states differ by %g at %d (max |hidden| %g)", h != nil, d, at, scale)
				}
			}
		})
	}
}
