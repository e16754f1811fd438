package model_test

import (
	"math"
	"testing"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"

	"natsbench/model"
)

// TestCarrierUsesRecomputedInputs: under gradient checkpointing the carrier's gradient function works on the
// recomputed q, k, v, attention output, hard mask and term regions, not on the forward pass's nodes, which would
// otherwise stay alive from every layer's forward pass to its backward pass (~0.44 GiB a layer for Llama-3-8B at
// 16k tokens). A layer of fused masked attention with a carrier term, inside a checkpointed block: without
// checkpointing the gradient function sees the forward nodes themselves; with it, other nodes (the clones GoMLX
// recomputes from the checkpoint), and the loss and the gradients with respect to the block's input, the
// projections and the term's key input are the same (float32, pure-Go backend, bound 1e-6 of each gradient's
// largest entry).
func TestCarrierUsesRecomputedInputs(t *testing.T) {
	backend, err := model.NewBackend("go")
	if err != nil {
		t.Fatal(err)
	}
	const b, s, d, h, kv, hd = 1, 6, 8, 4, 2, 4
	run := func(ckpt bool) (loss float64, grads [][]float32, sameAsForward []bool) {
		var fwd *Node
		var seen []*Node
		defer model.SetCarrierInputsHook(func(n []*Node) { seen = n })()
		exec, err := NewExec(backend, func(x, wq, wk, wv, keyIn *Node) []*Node {
			g := x.Graph()
			xc := x
			if ckpt {
				xc = x.Checkpoint()
			}
			proj := func(w *Node, heads int) *Node {
				return Transpose(Reshape(Einsum("bsd,df->bsf", xc, w), b, s, heads, hd), 1, 2)
			}
			q, k, v := proj(wq, h), proj(wk, kv), proj(wv, kv)
			causal := GreaterOrEqual(Iota(g, shapes.Make(dtypes.Int32, s, s), 0), Iota(g, shapes.Make(dtypes.Int32, s, s), 1))
			// Hard drops key 1 for queries past 3; the term's region is the causal part of the rows past 2.
			drop := And(GreaterThan(Iota(g, shapes.Make(dtypes.Int32, s, s), 0), Const(g, int32(3))),
				Equal(Iota(g, shapes.Make(dtypes.Int32, s, s), 1), Const(g, int32(1))))
			// Both depend on the block's input (through an always-true test on it), as the NAtS masks do through the
			// scorers, so they are recomputed too.
			live := BroadcastToDims(Reshape(GreaterThan(ReduceAllSum(xc), Const(g, float32(-1e30))), 1, 1, 1, 1), b, kv, s, s)
			hard := And(live, BroadcastToDims(Reshape(And(causal, LogicalNot(drop)), 1, 1, s, s), b, kv, s, s))
			region := And(live, BroadcastToDims(Reshape(And(causal, GreaterThan(Iota(g, shapes.Make(dtypes.Int32, s, s), 0), Const(g, int32(2)))), 1, 1, s, s), b, kv, s, s))
			key := Sigmoid(Add(keyIn, ReduceSum(Reshape(xc, b, 1, s, d), -1))) // depends on the block's input: recomputed too
			mo := model.MaskOut{Hard: hard, Terms: []model.CarrierTerm{{Key: key, Region: region, Coef: 0.7}}}
			att := model.FusedMaskedAttention(q, k, v, mo)
			fwd = att
			r := Sin(MulScalar(ConvertDType(IotaFull(g, att.Shape()), dtypes.Float32), 0.37))
			l := ReduceAllSum(Mul(att, r))
			return append([]*Node{l}, Gradient(l, x, wq, wk, wv, keyIn)...)
		})
		if err != nil {
			t.Fatal(err)
		}
		fill := func(seed float64, dims ...int) *tensors.Tensor {
			n := 1
			for _, x := range dims {
				n *= x
			}
			v := make([]float32, n)
			for i := range v {
				v[i] = float32(math.Sin(float64(i)*seed+seed) * 0.8)
			}
			return tensors.FromFlatDataAndDimensions(v, dims...)
		}
		out, err := exec.Exec(fill(0.31, b, s, d), fill(0.57, d, h*hd), fill(0.73, d, kv*hd), fill(1.19, d, kv*hd), fill(0.91, b, kv, s))
		if err != nil {
			t.Fatal(err)
		}
		if len(seen) != 6 {
			t.Fatalf("the carrier's gradient function saw %d inputs, want att, q, k, v, the hard mask and the term's region", len(seen))
		}
		// The forward pass's att, q, k, v and masks are ancestors of the attention's output; recomputed clones are not.
		anc := map[*Node]bool{}
		var visit func(n *Node)
		visit = func(n *Node) {
			if !anc[n] {
				anc[n] = true
				for _, in := range n.Inputs() {
					visit(in)
				}
			}
		}
		visit(fwd)
		for i := range seen {
			sameAsForward = append(sameAsForward, anc[seen[i]])
		}
		for _, o := range out[1:] {
			grads = append(grads, tensors.MustCopyFlatData[float32](o))
		}
		return float64(tensors.MustCopyFlatData[float32](out[0])[0]), grads, sameAsForward
	}
	names := []string{"att", "q", "k", "v", "hard mask", "region"}
	l0, g0, same0 := run(false)
	l1, g1, same1 := run(true)
	for i, n := range names {
		if !same0[i] {
			t.Errorf("without checkpointing the gradient function's %s is not the forward pass's", n)
		}
		if same1[i] {
			t.Errorf("with checkpointing the gradient function uses the forward pass's %s (kept alive until the backward pass)", n)
		}
	}
	if l0 != l1 {
		t.Errorf("loss %v with checkpointing, %v without", l1, l0)
	}
	for i := range g0 {
		scale, d := 0.0, 0.0
		for j := range g0[i] {
			scale = math.Max(scale, math.Abs(float64(g0[i][j])))
			d = math.Max(d, math.Abs(float64(g0[i][j]-g1[i][j])))
		}
		if scale == 0 {
			t.Errorf("gradient %d is zero", i)
		}
		if d > 1e-6*scale {
			t.Errorf("gradient %d: max |Δ| %g with checkpointing (scale %g)", i, d, scale)
		}
	}
}
