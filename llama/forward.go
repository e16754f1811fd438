package llama

import (
	"fmt"
	"math"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph"

	"natsbench/model"
)

// Weights maps parameter names (Specs) to graph nodes in the compute dtype.
type Weights map[string]*Node

// WeightsFrom pairs specs with graph inputs (in spec order), casting to the config's compute dtype the inputs held
// in another dtype (float32 weights under bf16 compute: a cast copy of every weight in the graph); inputs already in
// the compute dtype (HoldWeights) are used as they are.
func WeightsFrom(c Config, specs []model.Spec, inputs []*Node) Weights {
	dt := c.ComputeDType()
	w := Weights{}
	for i, s := range specs {
		x := inputs[i]
		if x.DType() != dt {
			x = ConvertDType(x, dt)
		}
		w[s.Name] = x
	}
	return w
}

// Get returns the node of a parameter; it panics (at graph building) when absent.
func (w Weights) Get(name string) *Node {
	x, ok := w[name]
	if !ok {
		panic(fmt.Errorf("llama: no parameter %q", name))
	}
	return x
}

// Options of Forward.
type Options struct {
	// Mask, when not nil, is called for every layer with the layer's normed input `[batch, seq, hidden]` and may
	// return a multiplicative attention mask `[batch, kv_heads, seq, seq]` (forward values 0/1; it may carry
	// gradients, NATS-SPEC.md §1.4) applied on top of causality and the sliding window; nil means none. Such a
	// mask always takes the materialised path.
	Mask func(layer int, normed *Node) *Node
	// MaskOut, when not nil (and Mask is nil), is called for every layer with the layer's normed input and returns
	// the layer's mask as a model.Masker gives it (the NAtS masker: Hard plus carrier Terms in training), applied on
	// top of causality and the sliding window. Its structured form runs on the fused path where Attention selects
	// it, else it is materialised (MaskOut.Materialize). Its Aux, Density and Roles are the caller's to collect.
	MaskOut func(layer int, normed *Node) model.MaskOut
	// Attention picks the attention implementation (AttentionPath; the zero value is AttentionAuto: fused in bf16,
	// materialised in float32).
	Attention AttentionPath
	// SkipLogits leaves Output.Logits nil (use LMHead on selected rows of Output.Hidden instead).
	SkipLogits bool
	// Probs, when not nil, is called for every layer with the attention probabilities `[batch, kv_heads, rep,
	// seq, seq]` (float32; rep query heads per KV head), after the mask, causality and the sliding window.
	Probs func(layer int, p *Node)
	// Checkpoint turns on per-layer gradient checkpointing (GoMLX's Node.Checkpoint): only every layer's input
	// `[batch, seq, hidden]` is kept for the backward pass, and a layer's activations are recomputed from it when
	// the backward pass reaches that layer, instead of all layers' activations being kept. Forward values and
	// gradients are the same (the recomputation repeats the same operations on the same inputs); the backward pass
	// costs one more forward pass of the layers. It matters only where a gradient is taken through Forward (the
	// fine-tuning student). A custom gradient recomputes what it uses too: the carrier's VJP
	// (model.FusedMaskedAttention) takes the layer's q, k, v, attention output and masks from the node GoMLX hands it,
	// whose inputs are the recomputed ones.
	Checkpoint bool
}

// Output of Forward.
type Output struct {
	Logits *Node   // `[batch, seq, vocab]` float32 (nil with Options.SkipLogits)
	Hidden *Node   // `[batch, seq, hidden]`: the final hidden states after the final RMSNorm (compute dtype)
	K, V   []*Node // per layer `[batch, kv_heads, seq, head_dim]`: keys after RoPE and values (compute dtype)
}

// RMSNorm is x / sqrt(mean(x²) + eps) · gain over the last axis, computed in float32 and cast back to x's dtype
// before the gain, as HF's LlamaRMSNorm does.
func RMSNorm(x, gain *Node, eps float64) *Node {
	dt := x.DType()
	x32 := ConvertDType(x, dtypes.Float32)
	ms := ReduceAndKeep(Square(x32), ReduceMean, -1)
	y := Div(x32, Sqrt(AddScalar(ms, eps)))
	return Mul(ConvertDType(y, dt), ExpandLeftToRank(gain, x.Rank()))
}

// Linear applies an HF Linear weight `[out, in]` to x `[..., in]` (rank 2 or 3), giving `[..., out]`.
func Linear(x, w *Node) *Node {
	switch x.Rank() {
	case 2:
		return Einsum("bi,oi->bo", x, w)
	case 3:
		return Einsum("bsi,oi->bso", x, w)
	}
	panic(fmt.Errorf("llama.Linear: x has rank %d, want 2 or 3", x.Rank()))
}

// SwiGLU is down(silu(gate(x)) · up(x)).
func SwiGLU(x, gate, up, down *Node) *Node {
	g := Linear(x, gate)
	return Linear(Mul(Mul(g, Sigmoid(g)), Linear(x, up)), down)
}

// ApplyRope rotates x `[..., seq, head_dim]` with cos/sin `[seq, head_dim/2]` (float32) in the given layout.
func ApplyRope(x, cos, sin *Node, layout RopeLayout) *Node {
	dims := x.Shape().Dimensions
	r := x.Rank()
	hd := dims[r-1]
	c := ExpandLeftToRank(ConvertDType(cos, x.DType()), r)
	s := ExpandLeftToRank(ConvertDType(sin, x.DType()), r)
	lastRange := func(from, to int) []SliceAxisSpec {
		spec := make([]SliceAxisSpec, r)
		for i := range spec {
			spec[i] = AxisRange()
		}
		spec[r-1] = AxisRange(from, to)
		return spec
	}
	if layout == RopeHalf {
		// y1 = x1·cos − x2·sin ; y2 = x2·cos + x1·sin, with x1, x2 the two halves.
		x1 := Slice(x, lastRange(0, hd/2)...)
		x2 := Slice(x, lastRange(hd/2, hd)...)
		return Concatenate([]*Node{Sub(Mul(x1, c), Mul(x2, s)), Add(Mul(x2, c), Mul(x1, s))}, -1)
	}
	// Interleaved: pairs (2i, 2i+1).
	pairDims := append(append([]int(nil), dims[:r-1]...), hd/2, 2)
	xp := Reshape(x, pairDims...)
	pick := func(k int) *Node {
		spec := make([]SliceAxisSpec, r+1)
		for i := range spec {
			spec[i] = AxisRange()
		}
		spec[r] = AxisRange(k, k+1)
		return Reshape(Slice(xp, spec...), append(append([]int(nil), dims[:r-1]...), hd/2)...)
	}
	x0, x1 := pick(0), pick(1)
	y0 := Sub(Mul(x0, c), Mul(x1, s))
	y1 := Add(Mul(x0, s), Mul(x1, c))
	return Reshape(Stack([]*Node{y0, y1}, -1), dims...)
}

// ropeConsts returns cos/sin constants `[n, head_dim/2]` for positions 0..n-1.
func ropeConsts(g *Graph, c Config, n int) (cos, sin *Node) {
	cs, sn := c.RopeTables(n)
	half := c.HeadDim / 2
	return Reshape(Const(g, cs), n, half), Reshape(Const(g, sn), n, half)
}

// AllowedMask returns a Bool `[seq, seq]`: query i may see key j when j ≤ i and, with a sliding window W,
// i − j < W (HF Mistral).
func AllowedMask(g *Graph, c Config, s int) *Node {
	i := Iota(g, shapes.Make(dtypes.Int32, s, s), 0)
	j := Iota(g, shapes.Make(dtypes.Int32, s, s), 1)
	ok := GreaterOrEqual(i, j)
	if c.SlidingWindow > 0 {
		ok = LogicalAnd(ok, LessThan(Sub(i, j), Scalar(g, dtypes.Int32, c.SlidingWindow)))
	}
	return ok
}

// Attention is grouped-query softmax attention: q `[b, kv, rep, sq, hd]`, k/v `[b, kv, sk, hd]`, allowed a Bool
// broadcastable prefix-wise to `[b, kv, rep, sq, sk]` after ExpandLeftToRank, mask nil or a multiplicative mask
// `[b, kv, sq, sk]`. Scores (scaled by 1/sqrt(hd)) and the softmax are float32: P = M ⊙ exp(S − max) / Σ M ⊙ exp(S − max).
// Returns `[b, kv, rep, sq, hd]` in v's dtype.
func Attention(q, k, v, allowed, mask *Node) *Node {
	out, _ := attention(q, k, v, allowed, mask)
	return out
}

// attention is Attention that also returns the probabilities P `[b, kv, rep, sq, sk]` (float32).
func attention(q, k, v, allowed, mask *Node) (out, probs *Node) {
	hd := q.Shape().Dimensions[4]
	scores := Einsum("bgrqd,bgkd->bgrqk", q, k)
	scores = MulScalar(ConvertDType(scores, dtypes.Float32), 1/math.Sqrt(float64(hd)))
	neg := Scalar(scores.Graph(), dtypes.Float32, -1e30)
	scores = Where(BroadcastToShape(ExpandLeftToRank(allowed, scores.Rank()), scores.Shape()), scores, neg)
	mx := StopGradient(ReduceAndKeep(scores, ReduceMax, -1))
	e := Exp(Sub(scores, mx))
	if mask != nil {
		e = Mul(e, InsertAxes(ConvertDType(mask, dtypes.Float32), 2))
	}
	p := Div(e, ReduceAndKeep(e, ReduceSum, -1))
	return Einsum("bgrqk,bgkd->bgrqd", ConvertDType(p, v.DType()), v), p
}

// Forward runs the LM over tokens `[batch, seq]` (int32), positions 0..seq-1. Setting both Options.Mask and
// Options.MaskOut panics.
func Forward(c Config, w Weights, tokens *Node, opt Options) Output {
	if opt.Mask != nil && opt.MaskOut != nil {
		panic(fmt.Errorf("llama.Forward: Options.Mask and Options.MaskOut are both set"))
	}
	g := tokens.Graph()
	dims := tokens.Shape().Dimensions
	b, s := dims[0], dims[1]
	h, kv, hd := c.NumHeads, c.NumKVHeads, c.HeadDim
	rep := h / kv
	x := Gather(w.Get(NameEmbed), InsertAxes(tokens, -1)) // [b, s, d]
	cos, sin := ropeConsts(g, c, s)
	allowed := AllowedMask(g, c, s)
	var out Output
	for l := 0; l < c.NumLayers; l++ {
		if opt.Checkpoint {
			x = x.Checkpoint() // kept; everything computed from it up to the next layer's input is recomputed
		}
		p := LayerPrefix(l)
		xn := RMSNorm(x, w.Get(p+NameAttnIn), c.RMSNormEps)
		q := Transpose(Reshape(Linear(xn, w.Get(p+NameQ)), b, s, h, hd), 1, 2)  // [b, h, s, hd]
		k := Transpose(Reshape(Linear(xn, w.Get(p+NameK)), b, s, kv, hd), 1, 2) // [b, kv, s, hd]
		v := Transpose(Reshape(Linear(xn, w.Get(p+NameV)), b, s, kv, hd), 1, 2)
		q, k = ApplyRope(q, cos, sin, c.RopeLayout), ApplyRope(k, cos, sin, c.RopeLayout)
		out.K, out.V = append(out.K, k), append(out.V, v)
		var mo model.MaskOut
		switch {
		case opt.Mask != nil:
			mo.Mask = opt.Mask(l, xn)
		case opt.MaskOut != nil:
			mo = opt.MaskOut(l, xn)
		}
		var att *Node
		if opt.fused(mo, q.DType()) {
			att = fusedAttention(c, q, k, v, mo, allowed) // [b, h, s, hd]
		} else {
			var probs *Node
			att, probs = attention(Reshape(q, b, kv, rep, s, hd), k, v, allowed, mo.Materialize()) // [b, kv, rep, s, hd]
			if opt.Probs != nil {
				opt.Probs(l, probs)
			}
		}
		att = Reshape(Transpose(Reshape(att, b, h, s, hd), 1, 2), b, s, h*hd)
		x = Add(x, Linear(att, w.Get(p+NameO)))
		xn2 := RMSNorm(x, w.Get(p+NameMLPIn), c.RMSNormEps)
		x = Add(x, SwiGLU(xn2, w.Get(p+NameGate), w.Get(p+NameUp), w.Get(p+NameDown)))
	}
	if opt.Checkpoint {
		x = x.StopCheckpoint() // the last layer's output is kept; what follows is not recomputed
	}
	out.Hidden = RMSNorm(x, w.Get(NameNorm), c.RMSNormEps)
	if !opt.SkipLogits {
		out.Logits = LMHead(c, w, out.Hidden)
	}
	return out
}

// LMHead maps final hidden states `[..., hidden]` (rank 2 or 3) to float32 logits `[..., vocab]`, with the
// embedding when tied.
func LMHead(c Config, w Weights, hidden *Node) *Node {
	head := NameLMHead
	if c.TieEmbeddings {
		head = NameEmbed
	}
	return ConvertDType(Linear(hidden, w.Get(head)), dtypes.Float32)
}

// DecodeStep runs one token per batch row at position pos (scalar int32) against per-layer caches K/V
// `[layers, batch, kv_heads, cap, head_dim]` (compute dtype float32 on the host side): the new key/value is written
// at slot pos, and the query attends to slots j ≤ pos (and pos − j < SlidingWindow). It returns float32 logits
// `[batch, vocab]` and the updated caches. Slots beyond pos may hold anything.
func DecodeStep(c Config, w Weights, tokens, pos, K, V *Node) (logits, newK, newV *Node) {
	g := tokens.Graph()
	b := tokens.Shape().Dimensions[0]
	capacity := K.Shape().Dimensions[3]
	h, kv, hd := c.NumHeads, c.NumKVHeads, c.HeadDim
	rep := h / kv
	x := Gather(w.Get(NameEmbed), InsertAxes(tokens, -1)) // [b, d]
	cosT, sinT := ropeConsts(g, c, capacity)
	cos := Gather(cosT, Reshape(pos, 1, 1)) // [1, hd/2]
	sin := Gather(sinT, Reshape(pos, 1, 1))
	slots := Iota(g, shapes.Make(dtypes.Int32, capacity), 0)
	allowed := LessOrEqual(slots, pos)
	if c.SlidingWindow > 0 {
		allowed = LogicalAnd(allowed, LessThan(Sub(pos, slots), Scalar(g, dtypes.Int32, c.SlidingWindow)))
	}
	allowed = Reshape(allowed, 1, capacity)                                             // [sq=1, cap]
	here := Reshape(ConvertDType(Equal(slots, pos), dtypes.Float32), 1, 1, capacity, 1) // [1,1,cap,1]
	layerOf := func(t *Node, l int) *Node {
		d := t.Shape().Dimensions
		return Reshape(Slice(t, AxisRange(l, l+1)), d[1:]...)
	}
	var ks, vs []*Node
	for l := 0; l < c.NumLayers; l++ {
		p := LayerPrefix(l)
		xn := RMSNorm(x, w.Get(p+NameAttnIn), c.RMSNormEps)
		q := Reshape(Linear(xn, w.Get(p+NameQ)), b, h, 1, hd)
		k := Reshape(Linear(xn, w.Get(p+NameK)), b, kv, 1, hd)
		v := Reshape(Linear(xn, w.Get(p+NameV)), b, kv, 1, hd)
		q, k = ApplyRope(q, cos, sin, c.RopeLayout), ApplyRope(k, cos, sin, c.RopeLayout)
		Kl := Add(Mul(layerOf(K, l), OneMinus(here)), Mul(here, ConvertDType(k, dtypes.Float32))) // [b, kv, cap, hd]
		Vl := Add(Mul(layerOf(V, l), OneMinus(here)), Mul(here, ConvertDType(v, dtypes.Float32)))
		ks, vs = append(ks, Kl), append(vs, Vl)
		dt := q.DType()
		att := Attention(Reshape(q, b, kv, rep, 1, hd), ConvertDType(Kl, dt), ConvertDType(Vl, dt), allowed, nil)
		x = Add(x, Linear(Reshape(att, b, h*hd), w.Get(p+NameO)))
		xn2 := RMSNorm(x, w.Get(p+NameMLPIn), c.RMSNormEps)
		x = Add(x, SwiGLU(xn2, w.Get(p+NameGate), w.Get(p+NameUp), w.Get(p+NameDown)))
	}
	xf := RMSNorm(x, w.Get(NameNorm), c.RMSNormEps)
	return LMHead(c, w, xf), Stack(ks, 0), Stack(vs, 0)
}
