package model

import (
	"fmt"
	"math"
	"os"
	"slices"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
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
// materialised path's gradients up to floating-point order, and up to the bf16 rounding of ∂L/∂M with the default
// formulation, bf16dm (CarrierVariants; TestFusedCarrierMatchesMaterialized).

// useFusedMasked reports whether structured masks run on the fused kernel: in bf16 (the GPU configuration) unless
// NATSBENCH_NO_FUSED_ATTENTION is set (no fused attention at all) or NATSBENCH_MASKED_ATTENTION=materialized (the
// materialised mask for masked attention only; the benchmark compares the two). Read when a graph is built. Tests
// switch it.
var useFusedMasked = func(cfg Config) bool { return cfg.IsBF16() && FusedAttentionAllowed(true) }

// FusedAttentionAllowed reports whether the environment lets half-precision attention run on the fused kernel:
// not when NATSBENCH_NO_FUSED_ATTENTION is set, and for a structured (NAtS) mask (masked) not when
// NATSBENCH_MASKED_ATTENTION=materialized. The one place both switches are read (the GPT model here, the Llama
// fine-tuning path in package llama and finetune's memory probe).
func FusedAttentionAllowed(masked bool) bool {
	if os.Getenv("NATSBENCH_NO_FUSED_ATTENTION") != "" {
		return false
	}
	return !masked || os.Getenv("NATSBENCH_MASKED_ATTENTION") != "materialized"
}

// MaskBias is the additive attention bias of the Bool allowed in dtype dt: 0 where allowed, a large negative
// elsewhere (−30000 in half precision, which bf16/f16 represent and exp sends to 0; −1e9 otherwise), with no
// gradient.
func MaskBias(allowed *Node, dt dtypes.DType) *Node {
	neg := Scalar(allowed.Graph(), dt, -1e9)
	if dt.IsHalfPrecision() {
		neg = Scalar(allowed.Graph(), dt, -30000)
	}
	return StopGradient(Where(allowed, ZerosLike(neg), neg))
}

// FusedMaskedAttention is attention of q `[b,h,s,hd]` over k, v `[b,kv,s,hd]` under the structured mask of mo
// (mo.Hard must be set; it is the whole forward mask, causality is added), giving `[b,h,s,hd]` in q's dtype: the
// fused kernel with Hard as an additive bias, plus the custom VJP of the carrier terms (see above). Query head h uses
// KV head h / (h_total/kv). Used by Forward, and by package llama for its fine-tuning path.
func FusedMaskedAttention(q, k, v *Node, mo MaskOut) *Node {
	dims := q.Shape().Dimensions
	b, h, s := dims[0], dims[1], dims[2]
	kv := k.Shape().Dimensions[1]
	rep := h / kv
	// Additive bias [b, h, s, s] in the compute dtype: 0 where Hard, a large negative elsewhere (every row keeps
	// its own key, so no row is empty).
	hardH := Reshape(BroadcastToDims(InsertAxes(mo.Hard, 2), b, kv, rep, s, s), b, h, s, s)
	bias := MaskBias(hardH, q.DType())
	att, _ := attention.Core(q, k, v, attention.LayoutBHSD, attention.CoreOptions{UseCausalMask: true, AttentionBias: bias})
	if len(mo.Terms) == 0 || os.Getenv("NATSBENCH_DIAG") == "nocarrier" {
		return att // NATSBENCH_DIAG=nocarrier: timing diagnostics only (bench -methods nats-nocarrier): no scorer gradient
	}
	return withCarrierGradient(att, q, k, v, mo)
}

// CarrierVariants names the formulations of the carrier's backward pass, chosen by the environment variable
// NATSBENCH_CARRIER when a graph is built (bench -methods nats,nats-stacked,nats-bf16dm,nats-twopass times them side
// by side). All compute the same ∂L/∂Key of every term (see above); they differ in the tensors XLA has to write and
// read per layer. Sizes below are for the paper shape on the GPU (batch 16, 8 heads, seq 1024: one float32
// [b, h, s, s] tensor is 512 MB).
//
//   - "perterm": dM = ∂L/∂M `[b, kv, s, s]` float32, then one reduction over queries per term, each reading all of
//     dM (XLA emits one reduce kernel per term). The default until the H200 measurement below.
//   - "stacked": the same dM, and one reduction over queries of the terms stacked on a new minor-most axis,
//     `[b, kv, i, j, T]` → `[b, kv, j, T]`: one kernel instead of T. The T axis is minor so that neighbouring threads
//     of that kernel read the same dM element (expected to be served from cache: dM read from memory once); with T
//     major, XLA would walk dM once per term again.
//   - "bf16dm" (the default, also ""): as stacked, with dM stored in bfloat16 (whatever the compute dtype, so the float32 CPU test sees the
//     rounding) and converted back to float32 inside the reduction, which accumulates in float32: half the bytes
//     written and read for dM. Precision: every dM[i, j] is rounded to 8 significant bits (relative error ≤ 2⁻⁹ ≈
//     0.2%) before the sum over queries; the errors are independent across cells, so a term's gradient moves by
//     about 2⁻⁹·(Σ_i dM[i,j]²)^½ and at most 2⁻⁹·Σ_i |dM[i,j]|: bf16 resolution, which the scorer's own bf16
//     forward pass already has. An optimisation barrier keeps the bf16 copy: without it XLA's
//     simplify-fp-conversions pass (run before fusion when xla_allow_excess_precision, the default) removes the
//     f32→bf16→f32 pair and the variant would silently equal stacked.
//   - "twopass": the row statistics first, as small `[b, kv, rep, s, 1]` tensors (the row max m over causal cells,
//     Z over hard cells; Δ = dO·O), then dM's cells e/Z·(dP − Δ) computed elementwise from S, dP and those
//     statistics inside the stacked column reduction (over query heads and queries at once). If XLA fuses that
//     elementwise producer into the reduction, dM is never written: S and dP are read once more instead of dM being
//     written and read. m and Z pass through an optimisation barrier so XLA does not see the max → exp → sum →
//     divide "softmax diamond", which it fuses into one row-wise kernel that writes its elementwise result (the
//     likely origin of the default's dM-writing fusion).
//
// Measured side by side on one H200 (bf16, scripts/device_bench.sh, 10 steps; results/bench): paper shape
// (batch 16 × 1024, d256, 8 layers) perterm 41.7 ms, stacked 40.6, bf16dm 38.2, twopass 38.8 (full attention 20.6);
// GPT-2 small (batch 8 × 1024) perterm 58.8, stacked 57.0, bf16dm 53.0, twopass 58.6 (full 31.9). XLA did not fuse
// twopass as hoped: its HLO still writes one float32 [b, kv, s, s] tensor per layer besides S and dP. bf16dm is the
// fastest on both shapes, so it is the default.
var CarrierVariants = []string{"", "perterm", "stacked", "bf16dm", "twopass"}

// carrierVariant returns NATSBENCH_CARRIER, panicking (graph building) on a value not in CarrierVariants.
func carrierVariant() string {
	v := os.Getenv("NATSBENCH_CARRIER")
	if !slices.Contains(CarrierVariants, v) {
		panic(fmt.Errorf("NATSBENCH_CARRIER=%q: unknown carrier formulation (want one of %q)", v, CarrierVariants))
	}
	return v
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
	variant := carrierVariant()
	if variant == "" {
		variant = "bf16dm"
	}
	parts := []*Node{Reshape(ConvertDType(att, dtypes.Float32), nAtt)}
	for _, t := range mo.Terms {
		parts = append(parts, Reshape(ConvertDType(t.Key, dtypes.Float32), nKey))
	}
	// att, q, k, v, the hard mask and the terms' regions ride along, one element each (anchorElem), so that the
	// gradient function finds them among the inputs of the node it is handed. Under gradient checkpointing
	// (llama.Options.Checkpoint) that node is the clone whose inputs were recomputed from the layer's kept input, so
	// the backward pass uses the recomputed tensors. Closing over the forward pass's nodes instead kept them alive
	// from each layer's forward pass to its backward pass: for Llama-3-8B at 16k tokens q, k, v and a float32 att are
	// ~0.44 GiB a layer, ~14 GiB over 32 layers (on the H200 the 32-layer step's plan was 134.7 GiB against 103.2
	// GiB for 4 layers, results/finetune_memory). The price: the carrier's recomputed att is its own clone of the
	// fused kernel's forward pass, besides the one GoMLX makes for the kernel's gradient, so a layer's backward pass
	// may run that kernel's forward twice (unless XLA merges the two; not measured).
	anchors := []*Node{att, q, k, v, mo.Hard}
	for _, t := range mo.Terms {
		anchors = append(anchors, t.Region)
	}
	for _, x := range anchors {
		parts = append(parts, anchorElem(x))
	}
	nAnchors := len(anchors)
	packed := IdentityWithCustomGradient(Concatenate(parts, 0), func(x, adj *Node) *Node {
		in := carrierInputs(x, anchors)
		att, q, k, v := in[0], in[1], in[2], in[3]
		terms := make([]CarrierTerm, len(mo.Terms))
		for i, t := range mo.Terms {
			terms[i] = CarrierTerm{Key: t.Key, Region: in[5+i], Coef: t.Coef} // Key: forward only, never read here
		}
		mo := MaskOut{Hard: in[4], Terms: terms}
		if carrierInputsHook != nil {
			used := []*Node{att, q, k, v, mo.Hard}
			for _, t := range mo.Terms {
				used = append(used, t.Region)
			}
			carrierInputsHook(used)
		}
		dO := Reshape(Slice(adj, AxisRange(0, nAtt)), b, kv, rep, s, hd) // float32
		qR := Reshape(q, b, kv, rep, s, hd)
		oR := Reshape(ConvertDType(att, dtypes.Float32), b, kv, rep, s, hd)
		out := []*Node{Slice(adj, AxisRange(0, nAtt))}
		switch variant {
		case "perterm":
			dM := maskGradient(qR, k, v, oR, dO, mo.Hard, 0)
			for _, t := range mo.Terms {
				gk := ReduceSum(Where(t.Region, dM, ZerosLike(dM)), 2) // Σ_i over queries: [b, kv, s]
				out = append(out, Reshape(MulScalar(gk, t.Coef), nKey))
			}
		case "stacked", "bf16dm":
			out = append(out, blockedTermSums(qR, k, v, oR, dO, mo, variant == "bf16dm"))
		case "twopass":
			scores, dP, delta := carrierParts(qR, k, v, oR, dO, 0)
			m, _, z := rowStats(scores, mo.Hard)
			mz := OptimizationBarriers(m, z)
			dMr := Mul(Div(Exp(Sub(scores, mz[0])), mz[1]), Sub(dP, delta)) // [b, kv, rep, s, s], fused into the sum
			out = append(out, stackedTermSums(dMr, mo.Terms, 2, 3))
		}
		out = append(out, Zeros(adj.Graph(), shapes.Make(dtypes.Float32, nAnchors))) // att's is above; q, k, v get theirs from the kernel; the masks none
		return Concatenate(out, 0)
	})
	return ConvertDType(Reshape(Slice(packed, AxisRange(0, nAtt)), b, h, s, hd), att.DType())
}

// anchorElem is x's first element as a float32 `[1]`: a cheap input that ties x to the carrier's packed vector
// (withCarrierGradient). It slices before it converts, so no full-size copy of x can arise whatever XLA simplifies.
func anchorElem(x *Node) *Node {
	first := make([]SliceAxisSpec, x.Rank())
	for i := range first {
		first[i] = AxisRange(0, 1)
	}
	return ConvertDType(Reshape(Slice(x, first...), 1), dtypes.Float32)
}

// carrierInputsHook, when set (tests), sees the att, q, k, v, hard mask and term regions the carrier's gradient
// function uses.
var carrierInputsHook func(inputs []*Node)

// carrierInputs returns the tensors that the carrier's packed node x anchors (anchorElem), as x's own inputs hold
// them: x is IdentityWithCustomGradient's node, or the clone GoMLX's backward pass hands the gradient function,
// whose inputs are recomputed when the node lies inside a checkpointed block. The anchors are the packed vector's
// last parts, in the order of anchors (the forward pass's tensors); each is followed down its chain of single-input
// nodes (dtype conversion, reshape, slice) to the node of that tensor's shape. A part whose chain does not lead
// there panics: the packing changed without this function.
func carrierInputs(x *Node, anchors []*Node) []*Node {
	parts := x.Inputs()[0].Inputs() // the Concatenate's
	parts = parts[len(parts)-len(anchors):]
	out := make([]*Node, len(anchors))
	for i, a := range anchors {
		n := parts[i]
		for !n.Shape().Equal(a.Shape()) {
			if len(n.Inputs()) != 1 {
				panic(fmt.Errorf("carrier: anchor %d does not lead to a %s tensor (reached %s)", i, a.Shape(), n.Shape()))
			}
			n = n.Inputs()[0]
		}
		out[i] = n
	}
	return out
}

// carrierBlockBytes bounds one float32 `[b, h, rows, s]` tensor of the carrier's backward pass (scores, dP, the
// probabilities): past it, blockedTermSums walks the queries in blocks of rows. 2 GiB keeps every shape measured on
// the H200 in one block (paper shape 512 MiB, GPT-2 small 384 MiB) and splits long fine-tuning sequences (Llama-3-8B
// at 16k tokens: 32 GiB per tensor unblocked, which failed to allocate; 16 blocks of 1,024 rows).
var carrierBlockBytes int64 = 2 << 30

// SetCarrierBlockBytes sets the bound of one block of the carrier's backward pass (tests: small blocks on tiny
// shapes) and returns a function restoring the previous bound. Read when a graph is built.
func SetCarrierBlockBytes(n int64) (restore func()) {
	old := carrierBlockBytes
	carrierBlockBytes = n
	return func() { carrierBlockBytes = old }
}

// carrierRows returns the query rows per block of the carrier's backward pass for b·h query heads of s tokens: s
// when one float32 `[b, h, s, s]` tensor fits carrierBlockBytes, else s halved (rounded up) until a block fits (or
// one row is left).
func carrierRows(bh, s int) int {
	rows := s
	for rows > 1 && int64(bh)*int64(rows)*int64(s)*4 > carrierBlockBytes {
		rows = (rows + 1) / 2
	}
	return rows
}

// CarrierBlockRows is the number of query rows per block of the carrier's backward pass for bh query heads (batch ×
// heads) of s tokens under the current bound (SetCarrierBlockBytes; default 2 GiB per float32 block): s when no
// blocking happens. Memory estimates (package finetune) use it.
func CarrierBlockRows(bh, s int) int { return carrierRows(bh, s) }

// blockedTermSums is the stacked (and, with bf16dm, the bf16-stored) carrier gradient of every term, packed as
// stackedTermSums packs it, computed over blocks of query rows (carrierRows): each block recomputes its rows of S
// and dP against all keys, its rows of ∂L/∂M and their sums over its queries, and the blocks' sums add up. Every
// row's statistics (max, Z, Δ) lie within its block, so the result is the unblocked one up to the order of the
// float32 additions over queries. An optimisation barrier joins each block's inputs to the running sum, so XLA
// runs the blocks one after another and one block's temporaries can reuse the last one's memory.
func blockedTermSums(q, k, v, o, dO *Node, mo MaskOut, bf16dm bool) *Node {
	dims := q.Shape().Dimensions // [b, kv, rep, s, hd]
	s := dims[3]
	rows := carrierRows(dims[0]*dims[1]*dims[2], s)
	sumBlock := func(q, o, dO, hard *Node, terms []CarrierTerm, r0 int) *Node {
		dM := maskGradient(q, k, v, o, dO, hard, r0) // [b, kv, rows, s]
		if bf16dm {
			dM = ConvertDType(OptimizationBarrier(ConvertDType(dM, dtypes.BFloat16)), dtypes.Float32)
		}
		return stackedTermSums(dM, terms, 2)
	}
	if rows >= s {
		return sumBlock(q, o, dO, mo.Hard, mo.Terms, 0)
	}
	var acc *Node
	for r0 := 0; r0 < s; r0 += rows {
		r1 := min(r0+rows, s)
		rr := AxisRange(r0, r1)
		qb, ob, dOb := SliceAxis(q, 3, rr), SliceAxis(o, 3, rr), SliceAxis(dO, 3, rr)
		if acc != nil {
			xs := OptimizationBarriers(acc, qb, ob, dOb)
			acc, qb, ob, dOb = xs[0], xs[1], xs[2], xs[3]
		}
		terms := make([]CarrierTerm, len(mo.Terms))
		for i, t := range mo.Terms {
			terms[i] = CarrierTerm{Key: t.Key, Region: SliceAxis(t.Region, 2, rr), Coef: t.Coef}
		}
		part := sumBlock(qb, ob, dOb, SliceAxis(mo.Hard, 2, rr), terms, r0)
		if acc == nil {
			acc = part
		} else {
			acc = Add(acc, part)
		}
	}
	return acc
}

// stackedTermSums returns the terms' key gradients packed term by term (`[T·b·kv·s]`): Coef_t·Σ Region_t·x over the
// queries, in one reduction of x `[b, kv, (rep,) s, s]` float32 over queryAxes (the query-head and query axes) with
// the T terms on a new minor-most axis.
func stackedTermSums(x *Node, terms []CarrierTerm, queryAxes ...int) *Node {
	g := x.Graph()
	regions := make([]*Node, len(terms))
	coefs := make([]float32, len(terms))
	for i, t := range terms {
		regions[i], coefs[i] = t.Region, float32(t.Coef)
	}
	reg := Stack(regions, -1) // [b, kv, s, s, T]
	if x.Rank() == 5 {
		reg = InsertAxes(reg, 2) // over the query heads: [b, kv, 1, s, s, T]
	}
	dims := append(x.Shape().Clone().Dimensions, len(terms))
	xT := BroadcastToDims(InsertAxes(x, -1), dims...)
	gk := ReduceSum(Where(BroadcastToDims(reg, dims...), xT, ZerosLike(xT)), queryAxes...) // [b, kv, s, T]
	gk = Mul(gk, ExpandLeftToRank(Const(g, coefs), gk.Rank()))
	return Reshape(TransposeAllAxes(gk, 3, 0, 1, 2), -1) // [T, b, kv, s], flattened
}

// maskGradient returns ∂L/∂M `[b, kv, s, s]` (float32, summed over the rep query heads of each KV head) of
// multiplicative-mask attention at M = hard, from q `[b,kv,rep,s,hd]`, k, v `[b,kv,s,hd]`, the attention output o
// and its adjoint dO `[b,kv,rep,s,hd]` (float32); for a block of query rows from r0 (carrierParts), `[b, kv, rows, s]`
// with hard sliced to those rows.
func maskGradient(q, k, v, o, dO, hard *Node, r0 int) *Node {
	scores, dP, delta := carrierParts(q, k, v, o, dO, r0)
	_, e, z := rowStats(scores, hard)
	return ReduceSum(Mul(Div(e, z), Sub(dP, delta)), 2)
}

// rowStats returns, from the causal scores S `[b, kv, rep, s, s]`, the row max m over causal cells, e = exp(S − m)
// and Z = Σ_j hard[i,j]·e[i,j]; m and Z are `[b, kv, rep, s, 1]`.
func rowStats(scores, hard *Node) (m, e, z *Node) {
	m = ReduceAndKeep(scores, ReduceMax, -1)
	e = Exp(Sub(scores, m))
	hardR := BroadcastToShape(InsertAxes(hard, 2), e.Shape())
	return m, e, ReduceAndKeep(Where(hardR, e, ZerosLike(e)), ReduceSum, -1)
}

// carrierParts returns, from q `[b,kv,rep,s,hd]`, k, v `[b,kv,s,hd]`, the attention output o and its adjoint dO
// `[b,kv,rep,s,hd]` (float32), the scaled scores S with −1e30 above the diagonal and dP = dO·vᵀ, both
// `[b, kv, rep, s, s]`, and Δ = dO·O `[b, kv, rep, s, 1]`, all float32.
// With a block of query rows [r0, r0+rows) in q, o and dO `[b,kv,rep,rows,hd]` (against all the keys of k, v), S and
// dP are `[b, kv, rep, rows, s]`, causal for absolute query positions.
func carrierParts(q, k, v, o, dO *Node, r0 int) (scores, dP, delta *Node) {
	hd := q.Shape().Dimensions[4]
	rows, s := q.Shape().Dimensions[3], k.Shape().Dimensions[2]
	g := q.Graph()
	f32 := dtypes.Float32
	// float32 products: the carrier gradient takes differences of e/Z·dP terms, which bf16 scores would blur. In
	// bf16 the operands stay bf16 (every one of q, k, v and dO holds bf16 values: dO is the adjoint of a bf16
	// tensor) and the matmul accumulates into a float32 output: the same numbers as float32 operands, on tensor cores.
	scores = MulScalar(contractF32("bgrqd,bgkd->bgrqk", q, k), 1/math.Sqrt(float64(hd)))
	causal := causalMask(g, s)
	if r0 != 0 || rows != s {
		causal = GreaterOrEqual(AddScalar(Iota(g, shapes.Make(dtypes.Int32, rows, s), 0), float64(r0)),
			Iota(g, shapes.Make(dtypes.Int32, rows, s), 1))
	}
	causal = ExpandLeftToRank(causal, scores.Rank())
	scores = Where(BroadcastToShape(causal, scores.Shape()), scores, Scalar(g, f32, -1e30))
	dOc := dO
	if q.DType().IsHalfPrecision() {
		dOc = ConvertDType(dO, q.DType()) // exact: see above
	}
	dP = contractF32("bgrqd,bgkd->bgrqk", dOc, v)
	delta = ReduceAndKeep(Mul(dO, o), ReduceSum, -1) // dO_i·O_i: [b,kv,rep,s,1]
	return scores, dP, delta
}

// contractF32 is Einsum(eq, a, b) with a float32 result: float32 operands as they are, half-precision operands
// multiplied as they are with a float32 accumulator and output (no float32 copies of the operands).
func contractF32(eq string, a, b *Node) *Node {
	if a.DType().IsHalfPrecision() && b.DType() == a.DType() {
		return contractWith(Dot(a, b).WithAccumulatorDType(dtypes.Float32).WithOutputDType(dtypes.Float32), eq, a, b)
	}
	return Einsum(eq, ConvertDType(a, dtypes.Float32), ConvertDType(b, dtypes.Float32))
}
