package engine

import (
	"fmt"
	"math"

	"github.com/gomlx/compute/dtypes"
	. "github.com/gomlx/gomlx/core/graph"

	"natsbench/model"
)

// The block arithmetic below repeats model/forward.go (layerNorm, gelu, rope, Contract) exactly, because the
// model package keeps those helpers unexported; the equality tests against model.Inference guard the copy.

// param returns a named parameter node, panicking (graph code) with the name when it is missing.
func param(p model.Nodes, name string) *Node {
	x, ok := p[name]
	if !ok {
		panic(fmt.Errorf("engine: no parameter %q", name))
	}
	return x
}

// scoped returns the masker parameters of one layer by local name.
func scoped(p model.Nodes, prefix string) func(string) *Node {
	return func(name string) *Node { return param(p, prefix+name) }
}

// layerNorm is LayerNorm without bias over the last axis (eps 1e-5), computed in float32.
func layerNorm(x, gain *Node) *Node {
	dt := x.DType()
	x32 := ConvertDType(x, dtypes.Float32)
	mean := ReduceAndKeep(x32, ReduceMean, -1)
	c := Sub(x32, mean)
	v := ReduceAndKeep(Square(c), ReduceMean, -1)
	y := Div(c, Sqrt(AddScalar(v, 1e-5)))
	return Mul(ConvertDType(y, dt), ExpandLeftToRank(gain, x.Rank()))
}

// gelu is the exact (erf) GELU.
func gelu(x *Node) *Node {
	return Mul(MulScalar(x, 0.5), OnePlus(Erf(MulScalar(x, 1/math.Sqrt2))))
}

// rope applies rotary embeddings (rotate_half layout) to x `[..., seq, hd]` (or `[..., hd]`) with cos/sin
// `[seq, hd/2]` (or `[hd/2]`).
func rope(x, cos, sin *Node) *Node {
	dims := x.Shape().Dimensions
	hd := dims[len(dims)-1]
	axes := make([]SliceAxisSpec, x.Rank())
	for i := range axes {
		axes[i] = AxisRange()
	}
	axes[len(axes)-1] = AxisRange(0, hd/2)
	x1 := Slice(x, axes...)
	axes[len(axes)-1] = AxisRange(hd/2, hd)
	x2 := Slice(x, axes...)
	c := ExpandLeftToRank(ConvertDType(cos, x.DType()), x.Rank())
	s := ExpandLeftToRank(ConvertDType(sin, x.DType()), x.Rank())
	y1 := Sub(Mul(x1, c), Mul(x2, s))
	y2 := Add(Mul(x2, c), Mul(x1, s))
	return Concatenate([]*Node{y1, y2}, -1)
}

// contract is model.Contract: Einsum without a float32 accumulator request for half-precision operands.
func contract(eq string, a, b *Node) *Node {
	if a.DType().IsHalfPrecision() {
		return Dot(a, b).WithAccumulatorDType(dtypes.InvalidDType).Einsum(eq)
	}
	return Einsum(eq, a, b)
}

// ropeTables returns the cos/sin constants `[n, hd/2]` of positions 0..n-1.
func ropeTables(g *Graph, cfg model.Config, n int) (cos, sin *Node) {
	c, s := model.RopeTables(n, cfg.HeadDim(), cfg.RopeTheta, cfg.RopeScaling)
	half := cfg.HeadDim() / 2
	return Reshape(Const(g, c), n, half), Reshape(Const(g, s), n, half)
}

// lmHead maps final normed states `[..., d]` to float32 logits `[..., vocab]`.
func lmHead(cfg model.Config, p model.Nodes, xf *Node) *Node {
	var logits *Node
	if cfg.TieEmbeddings {
		if xf.Rank() == 3 {
			logits = contract("bsd,vd->bsv", xf, param(p, "wte"))
		} else {
			logits = contract("bd,vd->bv", xf, param(p, "wte"))
		}
	} else {
		if xf.Rank() == 3 {
			logits = contract("bsd,dv->bsv", xf, param(p, "lm_head"))
		} else {
			logits = contract("bd,dv->bv", xf, param(p, "lm_head"))
		}
	}
	return ConvertDType(logits, dtypes.Float32)
}
