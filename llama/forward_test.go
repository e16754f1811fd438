package llama

import (
	"testing"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"
)

// TestMaskHook checks Options.Mask: an all-ones mask changes nothing, and a diagonal mask (each query sees only
// itself) equals a sliding window of 1.
func TestMaskHook(t *testing.T) {
	c := testConfigs()["llama"]
	m, err := NewRandom(c, 3)
	if err != nil {
		t.Fatal(err)
	}
	tokens := []int32{1, 4, 9, 16, 25, 36, 7, 8}
	s := len(tokens)
	run := func(cfg Config, mask func(g *Graph) *Node) []float32 {
		n := len(m.Params.Specs)
		exec, err := NewExec(goBackend(t), func(in []*Node) []*Node {
			w := WeightsFrom(cfg, m.Params.Specs, in[:n])
			opt := Options{}
			if mask != nil {
				opt.Mask = func(layer int, normed *Node) *Node {
					return BroadcastToDims(Reshape(mask(normed.Graph()), 1, 1, s, s), 1, cfg.NumKVHeads, s, s)
				}
			}
			return []*Node{Forward(cfg, w, in[n], opt).Logits}
		})
		if err != nil {
			t.Fatal(err)
		}
		out := execWeights(t, exec, m.Params.Values, tensors.FromFlatDataAndDimensions(tokens, 1, s))
		return tensors.MustCopyFlatData[float32](out[0])
	}
	plain := run(c, nil)
	ones := run(c, func(g *Graph) *Node { return Ones(g, shapes.Make(dtypes.Float32, s, s)) })
	if d, _ := maxAbsDiff(plain, ones); d > 1e-6 {
		t.Errorf("all-ones mask changes logits by %g", d)
	}
	diag := run(c, func(g *Graph) *Node {
		i := Iota(g, shapes.Make(dtypes.Int32, s, s), 0)
		j := Iota(g, shapes.Make(dtypes.Int32, s, s), 1)
		return ConvertDType(Equal(i, j), dtypes.Float32)
	})
	w1 := c
	w1.SlidingWindow = 1
	window := run(w1, nil)
	if d, _ := maxAbsDiff(diag, window); d > 1e-6 {
		t.Errorf("diagonal mask vs sliding window 1: %g", d)
	}
	if d, _ := maxAbsDiff(diag, plain); d < 1e-3 {
		t.Errorf("diagonal mask changes nothing (%g)", d)
	}
}

// execWeights runs exec on the weights followed by the extra inputs (tokens, …), failing the test on an error.
func execWeights(t *testing.T, exec *Exec, weights []*tensors.Tensor, extra ...*tensors.Tensor) []*tensors.Tensor {
	t.Helper()
	args := make([]any, 0, len(weights)+len(extra))
	for _, v := range weights {
		args = append(args, v)
	}
	for _, v := range extra {
		args = append(args, v)
	}
	out, err := exec.Exec(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
