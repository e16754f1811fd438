package llama

import (
	"math"
	"testing"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"

	"natsbench/model"
)

// checkpointCase is one configuration of TestCheckpointGradients.
type checkpointCase struct {
	name string
	path AttentionPath
	mask string // "": none; "mult": Options.Mask from a trainable logit input; "hard": MaskOut with Hard only
}

// lossAndGrads runs one graph: loss = Σ hidden·r (r a fixed pseudo-random direction) of Forward over tokens with
// opt.Checkpoint = ckpt, and its gradient with respect to every weight and (mask "mult") the mask logits. It
// returns the loss, the gradients (host float32) and the number of graph nodes the outputs depend on.
func lossAndGrads(t *testing.T, m *Model, tokens []int32, tc checkpointCase, ckpt bool) (float64, [][]float32, int) {
	t.Helper()
	c := m.Config
	s := len(tokens)
	n := len(m.Params.Specs)
	nodes := 0
	exec, err := NewExec(goBackend(t), func(in []*Node) []*Node {
		g := in[0].Graph()
		w := WeightsFrom(c, m.Params.Specs, in[:n])
		logits := in[n+1] // [kv, s, s]
		opt := Options{SkipLogits: true, Attention: tc.path, Checkpoint: ckpt}
		switch tc.mask {
		case "mult":
			opt.Mask = func(l int, normed *Node) *Node {
				// A mask that depends on the layer's input (so it is recomputed under checkpointing) and on a
				// trainable input: sigmoid(logits + mean(normed)).
				mean := ReduceAllMean(normed)
				return InsertAxes(Sigmoid(Add(logits, MulScalar(mean, float64(l+1)))), 0)
			}
		case "hard":
			opt.MaskOut = func(_ int, normed *Node) model.MaskOut {
				return model.MaskOut{Hard: InsertAxes(GreaterThan(logits, ZerosLike(logits)), 0)}
			}
		}
		h := Forward(c, w, in[n], opt).Hidden
		r := Sin(MulScalar(ConvertDType(IotaFull(g, shapes.Make(dtypes.Int32, h.Shape().Dimensions...)), dtypes.Float32), 0.37))
		loss := ReduceAllSum(Mul(h, r))
		wrt := append([]*Node{}, in[:n]...)
		if tc.mask == "mult" {
			wrt = append(wrt, logits)
		}
		out := append([]*Node{loss}, Gradient(loss, wrt...)...)
		nodes = liveNodes(out)
		return out
	})
	if err != nil {
		t.Fatal(err)
	}
	kv := c.NumKVHeads
	lg := make([]float32, kv*s*s)
	for i := range lg {
		lg[i] = float32(math.Sin(float64(i)*1.7)) * 2
	}
	out := execWeights(t, exec, m.Params.Values, tensors.FromFlatDataAndDimensions(tokens, 1, s), tensors.FromFlatDataAndDimensions(lg, kv, s, s))
	var grads [][]float32
	for _, g := range out[1:] {
		grads = append(grads, tensors.MustCopyFlatData[float32](g))
	}
	return float64(tensors.MustCopyFlatData[float32](out[0])[0]), grads, nodes
}

// liveNodes counts the nodes the outputs depend on (dead clones left by the gradient do not count).
func liveNodes(outs []*Node) int {
	seen := map[*Node]bool{}
	var visit func(n *Node)
	visit = func(n *Node) {
		if seen[n] {
			return
		}
		seen[n] = true
		for _, in := range n.Inputs() {
			visit(in)
		}
	}
	for _, n := range outs {
		visit(n)
	}
	return len(seen)
}

// TestCheckpointGradients: per-layer gradient checkpointing (Options.Checkpoint) leaves Forward's loss and its
// gradients with respect to every weight and to a mask's trainable input unchanged, on the materialised path (a
// differentiable multiplicative mask that depends on each layer's input, as the NAtS scorers do), on the fused path
// without a mask (attention.Core, the teacher's kernel) and with a hard structured mask, for Llama (GQA) and Mistral
// (sliding window). Float32 on the pure-Go backend: the recomputation repeats the same operations on the same
// inputs, so any difference would be float32 rounding of a different order; the bound is 1e-6 of each gradient's
// largest entry (measured: 0, bit-identical). The outputs of the checkpointed graph must depend on more nodes (the
// recomputed layers feed the gradients), so the comparison is not between two copies of one graph.
func TestCheckpointGradients(t *testing.T) {
	tokens := []int32{1, 5, 9, 22, 7, 7, 30, 11, 4, 0, 35, 12}
	for name, c := range testConfigs() {
		m, err := NewRandom(c, 9)
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range []checkpointCase{
			{"materialized-mult", AttentionMaterialized, "mult"},
			{"fused-nomask", AttentionFused, ""},
			{"fused-hard", AttentionFused, "hard"},
		} {
			t.Run(name+"/"+tc.name, func(t *testing.T) {
				l0, g0, n0 := lossAndGrads(t, m, tokens, tc, false)
				l1, g1, n1 := lossAndGrads(t, m, tokens, tc, true)
				if l0 != l1 {
					t.Errorf("loss %v with checkpointing, %v without", l1, l0)
				}
				if n1 <= n0 {
					t.Errorf("the checkpointed graph's outputs depend on %d nodes, the plain one's on %d: nothing is recomputed", n1, n0)
				}
				worst := 0.0
				for i := range g0 {
					scale := 0.0
					for _, x := range g0[i] {
						scale = math.Max(scale, math.Abs(float64(x)))
					}
					d, _ := maxAbsDiff(g0[i], g1[i])
					if scale > 0 {
						worst = math.Max(worst, d/scale)
					}
					if d > 1e-6*scale || (scale == 0 && d != 0) {
						t.Errorf("gradient %d: max |Δ| %g (scale %g)", i, d, scale)
					}
				}
				t.Logf("loss %.6g; nodes %d → %d; largest max|Δgrad|/max|grad| %.2g", l0, n0, n1, worst)
			})
		}
	}
}
