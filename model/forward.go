package model

import (
	"fmt"
	"math"
	"os"
	"strings"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/ml/layers/attention"
)

// LayerName returns the scope of layer l ("layer_03").
func LayerName(l int) string { return fmt.Sprintf("layer_%02d", l) }

// Specs returns the parameters of the LM (and of the masker, if any) in a fixed order. GPT initialisation:
// normal(0, 0.02), output projections 0.02/sqrt(2·n_layers), norm gains ones (NATS-SPEC.md §2.2).
func Specs(cfg Config, m Masker) []Spec {
	d, hd, kv := cfg.DModel, cfg.HeadDim(), cfg.KVHeads()
	proj := 0.02 / math.Sqrt(2*float64(cfg.NLayers))
	specs := []Spec{{Name: "wte", Dims: []int{cfg.VocabSize, d}, Std: 0.02, Decay: true}}
	for l := 0; l < cfg.NLayers; l++ {
		p := LayerName(l) + "/"
		specs = append(specs,
			Spec{Name: p + "ln1", Dims: []int{d}, Ones: true},
			Spec{Name: p + "attn/wq", Dims: []int{d, cfg.NHeads * hd}, Std: 0.02, Decay: true},
			Spec{Name: p + "attn/wk", Dims: []int{d, kv * hd}, Std: 0.02, Decay: true},
			Spec{Name: p + "attn/wv", Dims: []int{d, kv * hd}, Std: 0.02, Decay: true},
			Spec{Name: p + "attn/wo", Dims: []int{cfg.NHeads * hd, d}, Std: proj, Decay: true},
			Spec{Name: p + "ln2", Dims: []int{d}, Ones: true},
			Spec{Name: p + "mlp/fc", Dims: []int{d, cfg.FFNMult * d}, Std: 0.02, Decay: true},
			Spec{Name: p + "mlp/proj", Dims: []int{cfg.FFNMult * d, d}, Std: proj, Decay: true},
		)
		if m != nil {
			for _, s := range m.Specs(cfg, l) {
				s.Name = p + "nats/" + s.Name
				specs = append(specs, s)
			}
		}
	}
	specs = append(specs, Spec{Name: "ln_f", Dims: []int{d}, Ones: true})
	if !cfg.TieEmbeddings {
		specs = append(specs, Spec{Name: "lm_head", Dims: []int{d, cfg.VocabSize}, Std: 0.02, Decay: true})
	}
	return specs
}

// Nodes maps parameter names to graph nodes.
type Nodes map[string]*Node

// NodesFrom pairs specs with graph inputs (in spec order), casting to the compute dtype.
func NodesFrom(cfg Config, specs []Spec, inputs []*Node) Nodes {
	n := Nodes{}
	for i, s := range specs {
		x := inputs[i]
		if cfg.IsBF16() {
			x = ConvertDType(x, dtypes.BFloat16)
		}
		n[s.Name] = x
	}
	return n
}

func (n Nodes) get(name string) *Node {
	x, ok := n[name]
	if !ok {
		panic(fmt.Errorf("model: no parameter %q", name))
	}
	return x
}

func (n Nodes) scoped(prefix string) func(string) *Node {
	return func(name string) *Node { return n.get(prefix + name) }
}

// LayerNorm is LayerNorm without bias over the last axis (eps 1e-5), computed in float32 and returned in x's dtype.
func LayerNorm(x, gain *Node) *Node {
	dt := x.DType()
	x32 := ConvertDType(x, dtypes.Float32)
	mean := ReduceAndKeep(x32, ReduceMean, -1)
	c := Sub(x32, mean)
	v := ReduceAndKeep(Square(c), ReduceMean, -1)
	y := Div(c, Sqrt(AddScalar(v, 1e-5)))
	return Mul(ConvertDType(y, dt), ExpandLeftToRank(gain, x.Rank()))
}

// GELU is the exact GELU (erf form, PyTorch nn.GELU default).
func GELU(x *Node) *Node {
	return Mul(MulScalar(x, 0.5), OnePlus(Erf(MulScalar(x, 1/math.Sqrt2))))
}

// RoPE applies rotary embeddings (HF rotate_half layout) to x `[..., seq, hd]` (or `[..., hd]`, one position) with
// cos/sin `[seq, hd/2]` (or `[hd/2]`). The model, the decoder and the inference engine all use it.
func RoPE(x, cos, sin *Node) *Node {
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
	// y1 = x1·cos − x2·sin ; y2 = x2·cos + x1·sin
	y1 := Sub(Mul(x1, c), Mul(x2, s))
	y2 := Add(Mul(x2, c), Mul(x1, s))
	return Concatenate([]*Node{y1, y2}, -1)
}

// RopeConsts returns the cos/sin constants `[n, hd/2]` of positions 0..n-1.
func RopeConsts(g *Graph, cfg Config, n int) (cos, sin *Node) {
	c, s := RopeTables(n, cfg.HeadDim(), cfg.RopeTheta, cfg.RopeScaling)
	half := cfg.HeadDim() / 2
	return Reshape(Const(g, c), n, half), Reshape(Const(g, s), n, half)
}

// Output of Forward.
type Output struct {
	Logits  *Node   // `[batch, seq, vocab]` float32
	Aux     *Node   // scalar: sum of the maskers' auxiliary losses (zero when none)
	Density *Node   // scalar: mean over layers of the maskers' density statistic (nil when none)
	Roles   []*Node // per layer `[batch, kv_heads, seq]` int32 (nil entries when the masker gives none)
	Hidden  *Node   // `[batch, seq, d_model]`: the final normed hidden states
}

// Forward runs the LM over tokens `[batch, seq]` (int32). m may be nil (full causal attention). uniform gives
// noise for training-time sampling and may be nil at inference.
func Forward(cfg Config, m Masker, p Nodes, tokens *Node, training bool, uniform func([]int) *Node) Output {
	g := tokens.Graph()
	dims := tokens.Shape().Dimensions
	b, s := dims[0], dims[1]
	h, kv, hd := cfg.NHeads, cfg.KVHeads(), cfg.HeadDim()
	rep := h / kv
	x := Gather(p.get("wte"), InsertAxes(tokens, -1)) // [b, s, d]
	cos, sin := RopeConsts(g, cfg, s)
	causal := causalMask(g, s)
	out := Output{Aux: ScalarZero(g, dtypes.Float32)}
	var densities []*Node
	for l := 0; l < cfg.NLayers; l++ {
		pre := LayerName(l) + "/"
		xn := LayerNorm(x, p.get(pre+"ln1"))
		q := Transpose(Reshape(einsum("bsd,df->bsf", xn, p.get(pre+"attn/wq")), b, s, h, hd), 1, 2)  // [b,h,s,hd]
		k := Transpose(Reshape(einsum("bsd,df->bsf", xn, p.get(pre+"attn/wk")), b, s, kv, hd), 1, 2) // [b,kv,s,hd]
		v := Transpose(Reshape(einsum("bsd,df->bsf", xn, p.get(pre+"attn/wv")), b, s, kv, hd), 1, 2)
		q, k = RoPE(q, cos, sin), RoPE(k, cos, sin)
		var mo MaskOut
		if m != nil {
			mo = m.Mask(&AttnSite{Cfg: cfg, Layer: l, Normed: xn, Param: p.scoped(pre + "nats/"), Training: training, Uniform: uniform})
		}
		var att *Node
		if mo.Mask == nil && mo.Hard != nil && useFusedMasked(cfg) {
			att = FusedMaskedAttention(q, k, v, mo) // [b,h,s,hd]
		} else if mo.Mask == nil && mo.Hard == nil && cfg.IsBF16() && os.Getenv("NATSBENCH_NO_FUSED_ATTENTION") == "" {
			// Full causal attention in bf16: GoMLX's fused attention (cuDNN flash attention forward and backward on
			// CUDA; the decomposed form elsewhere).
			opt := attention.CoreOptions{UseCausalMask: true}
			if os.Getenv("NATSBENCH_DIAG") == "fullbias" {
				// Timing diagnostics only (bench -methods full-bias): the kernel NAtS uses, with an all-zero bias.
				opt.AttentionBias = Zeros(q.Graph(), shapes.Make(q.DType(), b, h, s, s))
			}
			att, _ = attention.Core(q, k, v, attention.LayoutBHSD, opt) // [b,h,s,hd]
		} else {
			att = Reshape(attentionMasked(Reshape(q, b, kv, rep, s, hd), k, v, causal, mo.Materialize()), b, h, s, hd)
		}
		att = Reshape(Transpose(att, 1, 2), b, s, h*hd)
		x = Add(x, einsum("bsf,fd->bsd", att, p.get(pre+"attn/wo")))
		xn2 := LayerNorm(x, p.get(pre+"ln2"))
		hid := GELU(einsum("bsd,df->bsf", xn2, p.get(pre+"mlp/fc")))
		x = Add(x, einsum("bsf,fd->bsd", hid, p.get(pre+"mlp/proj")))
		if mo.Aux != nil {
			out.Aux = Add(out.Aux, ConvertDType(mo.Aux, dtypes.Float32))
		}
		if mo.Density != nil {
			densities = append(densities, ConvertDType(mo.Density, dtypes.Float32))
		}
		out.Roles = append(out.Roles, mo.Roles)
	}
	xf := LayerNorm(x, p.get("ln_f"))
	out.Hidden = xf
	var logits *Node
	if cfg.TieEmbeddings {
		logits = einsum("bsd,vd->bsv", xf, p.get("wte"))
	} else {
		logits = einsum("bsd,dv->bsv", xf, p.get("lm_head"))
	}
	out.Logits = ConvertDType(logits, dtypes.Float32)
	if len(densities) > 0 {
		out.Density = densities[0]
		for _, d := range densities[1:] {
			out.Density = Add(out.Density, d)
		}
		out.Density = DivScalar(out.Density, float64(len(densities)))
	}
	return out
}

// causalMask returns a Bool `[seq, seq]` with true where key j ≤ query i.
func causalMask(g *Graph, s int) *Node {
	i := Iota(g, shapes.Make(dtypes.Int32, s, s), 0)
	j := Iota(g, shapes.Make(dtypes.Int32, s, s), 1)
	return GreaterOrEqual(i, j)
}

// attentionMasked is causal softmax attention with an optional multiplicative mask (NATS-SPEC.md §1.4):
// P = M ⊙ exp(S − rowmax) / rowsum(M ⊙ exp(S − rowmax)), so that ∂L/∂M is the exact mask gradient.
// q `[b, kv, rep, s, hd]`, k/v `[b, kv, s, hd]`, mask `[b, kv, s, s]` or nil. Scores and softmax in float32.
func attentionMasked(q, k, v, causal, mask *Node) *Node {
	hd := q.Shape().Dimensions[4]
	scores := einsum("bgrqd,bgkd->bgrqk", q, k)
	scores = MulScalar(ConvertDType(scores, dtypes.Float32), 1/math.Sqrt(float64(hd)))
	neg := Scalar(scores.Graph(), dtypes.Float32, -1e30)
	scores = Where(BroadcastToShape(ExpandLeftToRank(causal, scores.Rank()), scores.Shape()), scores, neg)
	mx := StopGradient(ReduceAndKeep(scores, ReduceMax, -1))
	e := Exp(Sub(scores, mx))
	if mask != nil {
		e = Mul(e, InsertAxes(ConvertDType(mask, dtypes.Float32), 2))
	}
	pr := Div(e, ReduceAndKeep(e, ReduceSum, -1))
	return einsum("bgrqk,bgkd->bgrqd", ConvertDType(pr, v.DType()), v)
}

// CrossEntropy returns the mean next-token negative log-likelihood (natural log) of logits `[b, s, vocab]`
// against targets `[b, s]` int32, and the per-token NLL `[b, s]`.
func CrossEntropy(logits, targets *Node) (mean, perToken *Node) {
	dims := logits.Shape().Dimensions
	b, s, vsz := dims[0], dims[1], dims[2]
	flat := Reshape(logits, b*s, vsz)
	lse := ReduceLogSumExp(flat)
	g := logits.Graph()
	rows := Iota(g, shapes.Make(dtypes.Int32, b*s, 1), 0)
	idx := Concatenate([]*Node{rows, Reshape(ConvertDType(targets, dtypes.Int32), b*s, 1)}, 1)
	picked := Gather(flat, idx)
	nll := Reshape(Sub(lse, picked), b, s)
	return ReduceAllMean(nll), nll
}

// ReduceLogSumExp is log Σ exp over the last axis of x `[n, v]`, giving `[n]`.
func ReduceLogSumExp(x *Node) *Node {
	mx := StopGradient(ReduceAndKeep(x, ReduceMax, -1))
	return Add(Log(ReduceSum(Exp(Sub(x, mx)), -1)), Squeeze(mx, -1))
}

// Contract is graph.Einsum without GoMLX's float32-accumulator request for half-precision operands. XLA's GPU
// GEMMs accumulate bf16 products in float32 regardless, but with the request GoMLX's DotGeneral gradient converts
// both operands of the backward matmuls to float32 and runs them in float32. (GoMLX v0.28.8's DotBuilder.Einsum
// drops the builder's configuration, so this goes through DotBuilder.General: see contractWith.)
// For float32 operands it is graph.Einsum.
func Contract(eq string, a, b *Node) *Node {
	if a.DType().IsHalfPrecision() {
		return contractWith(Dot(a, b).WithAccumulatorDType(dtypes.InvalidDType), eq, a, b)
	}
	return Einsum(eq, a, b)
}

// contractWith is the two-operand einsum eq ("bsd,df->bsf": batch axes in both operands and the output, contracted
// axes in both operands only, cross axes in one operand and the output) computed by the configured builder d of
// Dot(a, b) through DotBuilder.General, which keeps d's accumulator and output dtypes.
func contractWith(d *DotBuilder, eq string, a, b *Node) *Node {
	io := strings.Split(eq, "->")
	ins := strings.Split(io[0], ",")
	if len(io) != 2 || len(ins) != 2 || len(ins[0]) != a.Rank() || len(ins[1]) != b.Rank() {
		panic(fmt.Sprintf("contract %q: operands of rank %d and %d", eq, a.Rank(), b.Rank()))
	}
	la, lb, out := ins[0], ins[1], io[1]
	var aC, aB, bC, bB []int
	var batch, crossA, crossB []byte
	for i := 0; i < len(la); i++ {
		c := la[i]
		j, inOut := strings.IndexByte(lb, c), strings.IndexByte(out, c) >= 0
		switch {
		case j >= 0 && inOut:
			aB, bB, batch = append(aB, i), append(bB, j), append(batch, c)
		case j >= 0:
			aC, bC = append(aC, i), append(bC, j)
		case inOut:
			crossA = append(crossA, c)
		default:
			panic(fmt.Sprintf("contract %q: axis %q of the first operand is summed alone", eq, c))
		}
	}
	for j := 0; j < len(lb); j++ {
		c := lb[j]
		if strings.IndexByte(la, c) >= 0 {
			continue
		}
		if strings.IndexByte(out, c) < 0 {
			panic(fmt.Sprintf("contract %q: axis %q of the second operand is summed alone", eq, c))
		}
		crossB = append(crossB, c)
	}
	res := d.General(aC, aB, bC, bB) // [batch…, crossA…, crossB…]
	order := string(batch) + string(crossA) + string(crossB)
	if len(order) != len(out) {
		panic(fmt.Sprintf("contract %q: output axes do not match the operands", eq))
	}
	perm := make([]int, len(out))
	moved := false
	for i := 0; i < len(out); i++ {
		perm[i] = strings.IndexByte(order, out[i])
		if perm[i] < 0 {
			panic(fmt.Sprintf("contract %q: output axis %q is in no operand", eq, out[i]))
		}
		moved = moved || perm[i] != i
	}
	if moved {
		res = TransposeAllAxes(res, perm...)
	}
	return res
}

func einsum(eq string, a, b *Node) *Node { return Contract(eq, a, b) }
