package model

import (
	"math"
	"os"

	"github.com/gomlx/compute/dtypes"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/ml/layers/attention"
)

// Attention with a structured mask (MaskOut.Hard + MaskOut.Terms) on the fused kernel.
//
// The materialised path (attentionMasked) computes P = M ⊙ exp(S − m) / Σ M ⊙ exp(S − m) with a differentiable
// [b, kv, s, s] mask M = Hard + carrier − sg(carrier), so autodiff keeps float32 scores, probabilities, the mask
// and the carrier alive for the backward pass. Here the forward pass is the fused attention kernel with Hard as an
// additive bias (cuDNN flash attention on CUDA; GoMLX's decomposed attention elsewhere), whose own VJP gives
// ∂L/∂q, ∂L/∂k, ∂L/∂v. The carrier's gradient is added by a custom VJP: for every causal cell (masked or not)
//
//	∂L/∂M[i,j] = exp(S[i,j] − m_i) / Z_i · (dO_i·v_j − dO_i·O_i),   Z_i = Σ_j Hard[i,j]·exp(S[i,j] − m_i)
//
// (the derivative of the multiplicative-mask attention at M = Hard), and each term receives
// Coef·Σ_i Region[i,j]·∂L/∂M[i,j], summed over the query heads of the KV head. The backward pass recomputes S and
// dO·vᵀ with two matmuls and reduces them; nothing of size s² is kept between the passes. The result equals the
// materialised path's gradients up to floating-point order (TestFusedCarrierMatchesMaterialized).

// useFusedMasked reports whether structured masks run on the fused kernel: in bf16 (the GPU configuration) unless
// NATSBENCH_NO_FUSED_ATTENTION is set (no fused attention at all) or NATSBENCH_MASKED_ATTENTION=materialized (the
// materialised mask for masked attention only; the benchmark compares the two). Read when a graph is built. Tests
// switch it.
var useFusedMasked = func(cfg Config) bool {
	return cfg.IsBF16() && os.Getenv("NATSBENCH_NO_FUSED_ATTENTION") == "" &&
		os.Getenv("NATSBENCH_MASKED_ATTENTION") != "materialized"
}

// fusedMaskedAttention is attention of q `[b,h,s,hd]` over k, v `[b,kv,s,hd]` under the structured mask of mo,
// giving `[b,h,s,hd]`.
func fusedMaskedAttention(q, k, v *Node, mo MaskOut) *Node {
	dims := q.Shape().Dimensions
	b, h, s := dims[0], dims[1], dims[2]
	kv := k.Shape().Dimensions[1]
	rep := h / kv
	g := q.Graph()
	// Additive bias [b, h, s, s] in the compute dtype: 0 where Hard, a large negative elsewhere (every row keeps
	// its own key, so no row is empty).
	hardH := Reshape(BroadcastToDims(InsertAxes(mo.Hard, 2), b, kv, rep, s, s), b, h, s, s)
	neg := Scalar(g, q.DType(), -1e9)
	if q.DType() == dtypes.BFloat16 || q.DType() == dtypes.Float16 {
		neg = Scalar(g, q.DType(), -30000)
	}
	bias := StopGradient(Where(hardH, ZerosLike(neg), neg))
	att, _ := attention.Core(q, k, v, attention.LayoutBHSD, attention.CoreOptions{UseCausalMask: true, AttentionBias: bias})
	if len(mo.Terms) == 0 || os.Getenv("NATSBENCH_DIAG") == "nocarrier" {
		return att // NATSBENCH_DIAG=nocarrier: timing diagnostics only (bench -methods nats-nocarrier): no scorer gradient
	}
	return withCarrierGradient(att, q, k, v, mo)
}

// withCarrierGradient returns att unchanged, with the gradient of the carrier terms attached (see above). att, the
// term keys and their gradients travel packed in one float32 vector through IdentityWithCustomGradient, whose
// gradient function sees ∂L/∂att and returns the keys' gradients in their slots.
func withCarrierGradient(att, q, k, v *Node, mo MaskOut) *Node {
	dims := att.Shape().Dimensions
	b, h, s, hd := dims[0], dims[1], dims[2], dims[3]
	kv := k.Shape().Dimensions[1]
	rep := h / kv
	nAtt := b * h * s * hd
	nKey := b * kv * s
	parts := []*Node{Reshape(ConvertDType(att, dtypes.Float32), nAtt)}
	for _, t := range mo.Terms {
		parts = append(parts, Reshape(ConvertDType(t.Key, dtypes.Float32), nKey))
	}
	packed := IdentityWithCustomGradient(Concatenate(parts, 0), func(_, adj *Node) *Node {
		dO := Reshape(Slice(adj, AxisRange(0, nAtt)), b, kv, rep, s, hd) // float32
		dM := maskGradient(Reshape(q, b, kv, rep, s, hd), k, v, Reshape(ConvertDType(att, dtypes.Float32), b, kv, rep, s, hd), dO, mo.Hard)
		out := []*Node{Slice(adj, AxisRange(0, nAtt))}
		for _, t := range mo.Terms {
			gk := ReduceSum(Where(t.Region, dM, ZerosLike(dM)), 2) // Σ_i over queries: [b, kv, s]
			out = append(out, Reshape(MulScalar(gk, t.Coef), nKey))
		}
		return Concatenate(out, 0)
	})
	return ConvertDType(Reshape(Slice(packed, AxisRange(0, nAtt)), b, h, s, hd), att.DType())
}

// maskGradient returns ∂L/∂M `[b, kv, s, s]` (float32, summed over the rep query heads of each KV head) of
// multiplicative-mask attention at M = hard, from q `[b,kv,rep,s,hd]`, k, v `[b,kv,s,hd]`, the attention output o
// and its adjoint dO `[b,kv,rep,s,hd]` (float32).
func maskGradient(q, k, v, o, dO, hard *Node) *Node {
	hd := q.Shape().Dimensions[4]
	s := q.Shape().Dimensions[3]
	g := q.Graph()
	f32 := dtypes.Float32
	// float32 products: the carrier gradient takes differences of e/Z·dP terms, which bf16 scores would blur. In
	// bf16 the operands stay bf16 (every one of q, k, v and dO holds bf16 values: dO is the adjoint of a bf16
	// tensor) and the matmul accumulates into a float32 output: the same numbers as float32 operands, on tensor cores.
	scores := MulScalar(contractF32("bgrqd,bgkd->bgrqk", q, k), 1/math.Sqrt(float64(hd)))
	causal := ExpandLeftToRank(causalMask(g, s), scores.Rank())
	scores = Where(BroadcastToShape(causal, scores.Shape()), scores, Scalar(g, f32, -1e30))
	e := Exp(Sub(scores, ReduceAndKeep(scores, ReduceMax, -1)))
	hardR := BroadcastToShape(InsertAxes(hard, 2), e.Shape())
	z := ReduceAndKeep(Where(hardR, e, ZerosLike(e)), ReduceSum, -1)
	if q.DType().IsHalfPrecision() {
		dO = ConvertDType(dO, q.DType()) // exact: see above
	}
	dP := contractF32("bgrqd,bgkd->bgrqk", dO, v)
	delta := ReduceAndKeep(Mul(ConvertDType(dO, f32), o), ReduceSum, -1) // dO_i·O_i: [b,kv,rep,s,1]
	return ReduceSum(Mul(Div(e, z), Sub(dP, delta)), 2)
}

// contractF32 is Einsum(eq, a, b) with a float32 result: float32 operands as they are, half-precision operands
// multiplied as they are with a float32 accumulator and output (no float32 copies of the operands).
func contractF32(eq string, a, b *Node) *Node {
	if a.DType().IsHalfPrecision() && b.DType() == a.DType() {
		return contractWith(Dot(a, b).WithAccumulatorDType(dtypes.Float32).WithOutputDType(dtypes.Float32), eq, a, b)
	}
	return Einsum(eq, ConvertDType(a, dtypes.Float32), ConvertDType(b, dtypes.Float32))
}
