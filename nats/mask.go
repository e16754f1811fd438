package nats

import (
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph"

	"natsbench/model"
)

const negLogit = -1e9

// units returns the number of decision units (chunks) for seq tokens.
func (m *Masker) units(seq int) int { return (seq + m.cfg.Chunk - 1) / m.cfg.Chunk }

// pool maps the detached normed input `[b, s, d]` to one vector per unit `[b, n, d]`: the identity for C = 1,
// the mean (zero-padded, divided by C) or the max over each chunk otherwise (NATS-SPEC.md §1.7).
func (m *Masker) pool(x *Node) *Node {
	c := m.cfg.Chunk
	if c == 1 {
		return x
	}
	dims := x.Shape().Dimensions
	b, s, d := dims[0], dims[1], dims[2]
	n := m.units(s)
	if n*c != s {
		pad := Zeros(x.Graph(), shapes.Make(x.DType(), b, n*c-s, d))
		x = Concatenate([]*Node{x, pad}, 1)
	}
	x = Reshape(x, b, n, c, d)
	if m.cfg.Merge == "max" {
		return ReduceMax(x, 2)
	}
	return DivScalar(ReduceSum(x, 2), float64(c))
}

// logits computes role logits `[b, kv, n, 3]` (float32) from pooled inputs `[b, n, d]`, with disabled roles at
// a large negative value.
func (m *Masker) logits(cfg model.Config, pooled, w *Node) *Node {
	dims := pooled.Shape().Dimensions
	b, n := dims[0], dims[1]
	kv := cfg.KVHeads()
	lg := model.Contract("bnd,df->bnf", pooled, w)
	lg = Transpose(Reshape(ConvertDType(lg, dtypes.Float32), b, n, kv, 3), 1, 2)
	return Add(lg, m.roleOffset(lg.Graph(), 0))
}

// roleOffset is `[3]`: negLogit for disabled roles, plus bonus on Global.
func (m *Masker) roleOffset(g *Graph, bonus float64) *Node {
	off := make([]float32, 3)
	for r := 0; r < 3; r++ {
		if !m.enabled[r] {
			off[r] = negLogit
		}
	}
	off[Global] += float32(bonus)
	return Reshape(Const(g, off), 1, 1, 1, 3)
}

// Mask implements model.Masker.
func (m *Masker) Mask(s *model.AttnSite) model.MaskOut {
	cfg := s.Cfg
	x := StopGradient(s.Normed)
	seq := x.Shape().Dimensions[1]
	lg := m.logits(cfg, m.pool(x), s.Param("scorer")) // [b,kv,n,3]
	g := lg.Graph()
	n := lg.Shape().Dimensions[2]
	var y, hard *Node
	if s.Training {
		u := s.Uniform(lg.Shape().Dimensions)
		u = ClipScalar(u, 1e-10, 1-1e-7)
		gumbel := Neg(Log(Neg(Log(u))))
		soft := Softmax(Add(lg, gumbel), -1) // τ = 1
		hard = OneHot(ArgMax(soft, -1, dtypes.Int32), 3, dtypes.Float32)
		y = Add(Sub(hard, StopGradient(soft)), soft)
		// Positions (units) 0 and n−1 are forced Global, with no gradient (NATS-SPEC.md §1.3).
		forced := Or(Equal(Iota(g, shapes.Make(dtypes.Int32, n), 0), Const(g, int32(0))),
			Equal(Iota(g, shapes.Make(dtypes.Int32, n), 0), Const(g, int32(n-1))))
		forced = BroadcastToShape(Reshape(forced, 1, 1, n, 1), y.Shape())
		globalHot := BroadcastToShape(Reshape(Const(g, []float32{1, 0, 0}), 1, 1, 1, 3), y.Shape())
		y = Where(forced, globalHot, y)
		hard = Where(forced, globalHot, hard)
	} else {
		lgi := Add(lg, m.roleOffset(g, m.cfg.GlobalBonus))
		hard = OneHot(ArgMax(lgi, -1, dtypes.Int32), 3, dtypes.Float32)
		forced := Equal(Iota(g, shapes.Make(dtypes.Int32, n), 0), Const(g, int32(0)))
		forced = BroadcastToShape(Reshape(forced, 1, 1, n, 1), hard.Shape())
		hard = Where(forced, BroadcastToShape(Reshape(Const(g, []float32{1, 0, 0}), 1, 1, 1, 3), hard.Shape()), hard)
		y = hard
	}
	return m.build(cfg, y, StopGradient(hard), seq, s.Training)
}

// build turns a role sample y `[b,kv,n,3]` (straight-through in training) and its hard one-hot into the mask,
// the gradient carrier, the sparsity term, the density statistic and the per-token roles.
func (m *Masker) build(cfg model.Config, y, hard *Node, seq int, training bool) model.MaskOut {
	g := y.Graph()
	n := y.Shape().Dimensions[2]
	yG, yL, yS := pick(y, Global), pick(y, Local), pick(y, Window)          // [b,kv,n]
	gH, lH, sH := pick(hard, Global), pick(hard, Local), pick(hard, Window) // [b,kv,n]
	e, nx, n2 := nextGlobals(gH)                                            // [b,kv,n] int32, n = none
	C, W := m.cfg.Chunk, m.cfg.Window

	// Token-level views of per-unit quantities: [b,kv,1,seq] (key axis), via repeat over the chunk.
	tok := func(v *Node) *Node { return InsertAxes(repeatUnits(v, C, seq), 2) }
	I := Iota(g, shapes.Make(dtypes.Int32, seq, seq), 0) // query i
	J := Iota(g, shapes.Make(dtypes.Int32, seq, seq), 1) // key j
	causal := GreaterOrEqual(I, J)
	bd, kvd := gH.Shape().Dimensions[0], gH.Shape().Dimensions[1]
	cI := func(v *Node) *Node {
		if v.Rank() == 2 {
			v = InsertAxes(v, 0, 0)
		}
		return BroadcastToDims(v, bd, kvd, seq, seq)
	}
	Ib := cI(I)
	ce := Add(MulScalar(Div(J, Const(g, int32(C))), float64(C)), Const(g, int32(C-1)))     // last token of j's chunk
	endPlus := func(v *Node) *Node { return MulScalar(AddScalar(v, 1), float64(C)) }       // (v+1)·C
	regA := LessOrEqual(cI(tok(endPlus(nx))), Ib)                                          // i ≥ (n_c+1)·C
	regB := LessThan(Ib, cI(tok(endPlus(e))))                                              // i < (e_c+1)·C
	regC := LessOrEqual(Ib, cI(AddScalar(ce, float64(W))))                                 // i ≤ c·C+C−1+W
	regD := And(LessOrEqual(cI(tok(endPlus(nx))), Ib), LessThan(Ib, cI(tok(endPlus(n2))))) // collected rows
	cb := cI(causal)
	and := func(b *Node) *Node { return And(b, cb) }
	A, B, Cw, D := and(regA), and(regB), and(regC), and(regD)

	keyOn := func(v *Node) *Node {
		return InsertAxes(repeatUnits(GreaterThan(v, ScalarZero(g, v.DType())), C, seq), 2)
	}
	out := model.MaskOut{Hard: Or(Or(And(keyOn(gH), cb), And(keyOn(lH), B)), And(keyOn(sH), Cw))}
	if training {
		// The gradient carrier of NATS-SPEC.md §1.5 in structured form (model.CarrierTerm): y^G on region A, y^L on
		// B, y^S on C, minus y^G of the terminating Global unit n_c on D; divided by C for chunks.
		yGn := gatherUnits(yG, nx)
		key := func(v *Node) *Node { return repeatFloat(v, C, seq) } // [b,kv,seq]
		coef := 1 / float64(C)
		out.Terms = []model.CarrierTerm{
			{Key: key(yG), Region: A, Coef: coef},
			{Key: key(yL), Region: B, Coef: coef},
			{Key: key(yS), Region: Cw, Coef: coef},
			{Key: key(yGn), Region: D, Coef: -coef},
		}
		if m.cfg.Lambda > 0 {
			rep := float64(cfg.NHeads / cfg.KVHeads())
			cIdx := Reshape(ConvertDType(Iota(g, shapes.Make(dtypes.Int32, n), 0), dtypes.Float32), 1, 1, n)
			nf := float64(n)
			eL := ConvertDType(MinScalar(e, float64(n-1)), dtypes.Float32)
			term := Add(Mul(Mul(gH, yG), OneMinus(DivScalar(cIdx, nf))),
				Mul(Mul(lH, yL), StopGradient(DivScalar(Sub(eL, cIdx), nf))))
			out.Aux = MulScalar(ReduceAllSum(term), m.cfg.Lambda*rep)
		}
	}
	// Mask density as logged by the official code (NATS-SPEC.md §1.6): mean over (b, head, unit) of 2·n_valid/N.
	cIdx := Reshape(ConvertDType(Iota(g, shapes.Make(dtypes.Int32, n), 0), dtypes.Float32), 1, 1, n)
	eF := ConvertDType(MinScalar(e, float64(n)), dtypes.Float32)
	valid := Add(Add(Mul(gH, SubScalar(Neg(cIdx), -float64(n))), Mul(lH, Sub(eF, cIdx))), MulScalar(sH, float64(W/C)))
	out.Density = DivScalar(MulScalar(ReduceAllMean(valid), 2), float64(n))
	out.Roles = repeatUnits(ArgMax(hard, -1, dtypes.Int32), C, seq)
	return out
}

// pick returns role r of a one-hot `[b,kv,n,3]` as `[b,kv,n]`.
func pick(x *Node, r int) *Node {
	return Squeeze(Slice(x, AxisRange(), AxisRange(), AxisRange(), AxisRange(r, r+1)), -1)
}

// nextGlobals returns, for each unit c of `[b,kv,n]` Global indicators: e_c = first Global at or after c,
// n_c = first Global strictly after c, n2_c = first Global strictly after n_c; n (one past the end) where none.
// It keeps the two smallest Global positions of the suffix [c, n) by ⌈log2 n⌉ doubling steps (each merges the
// pair of [c, c+2^t) with that of [c+2^t, c+2^(t+1))), so it costs O(n log n) elementwise work instead of the
// O(n²) of a masked reduction.
func nextGlobals(gH *Node) (e, nx, n2 *Node) {
	g := gH.Graph()
	dims := gH.Shape().Dimensions
	n := dims[2]
	idx := Iota(g, shapes.Make(dtypes.Int32, dims...), 2)
	none := Const(g, int32(n))
	v1 := Where(GreaterThan(gH, ScalarZero(g, dtypes.Float32)), idx, BroadcastToShape(none, idx.Shape()))
	v2 := BroadcastToShape(none, idx.Shape())
	for s := 1; s < n; s *= 2 {
		b1, b2 := shiftLeft(v1, s, n), shiftLeft(v2, s, n)
		v1, v2 = Min(v1, b1), Min(Max(v1, b1), Min(v2, b2))
	}
	return StopGradient(v1), StopGradient(shiftLeft(v1, 1, n)), StopGradient(shiftLeft(v2, 1, n))
}

// shiftLeft returns x[..., s:] padded at the end with s copies of pad (last axis).
func shiftLeft(x *Node, s, pad int) *Node {
	dims := x.Shape().Dimensions
	n := dims[len(dims)-1]
	if s >= n {
		return BroadcastToShape(Const(x.Graph(), int32(pad)), x.Shape())
	}
	padDims := append(append([]int{}, dims[:len(dims)-1]...), s)
	tail := BroadcastToShape(Const(x.Graph(), int32(pad)), shapes.Make(x.DType(), padDims...))
	return Concatenate([]*Node{Slice(x, AxisRange(), AxisRange(), AxisRange(s, n)), tail}, -1)
}

// gatherUnits returns v[idx] along the unit axis: v `[b,kv,n]` float, idx `[b,kv,n]` int32 (n = none → 0).
// A Gather over the flattened (b, kv, unit) axis, so the gradient is a scatter-add: O(n), not O(n²).
func gatherUnits(v, idx *Node) *Node {
	g := v.Graph()
	d := v.Shape().Dimensions
	b, kv, n := d[0], d[1], d[2]
	// Append one zero per (b, kv) row for "none" (index n).
	padded := Concatenate([]*Node{v, Zeros(g, shapes.Make(v.DType(), b, kv, 1))}, -1) // [b,kv,n+1]
	flat := Reshape(padded, b*kv*(n+1), 1)
	row := Iota(g, shapes.Make(dtypes.Int32, b, kv, n), 0)
	head := Iota(g, shapes.Make(dtypes.Int32, b, kv, n), 1)
	base := MulScalar(Add(MulScalar(row, float64(kv)), head), float64(n+1))
	at := Add(base, MinScalar(idx, float64(n)))
	return Reshape(Gather(flat, InsertAxes(at, -1)), b, kv, n)
}

// repeatUnits maps a per-unit int32 `[b,kv,n]` to tokens `[b,kv,seq]` (each unit covers C tokens).
func repeatUnits(v *Node, c, seq int) *Node {
	if c == 1 {
		return v
	}
	d := v.Shape().Dimensions
	r := Reshape(BroadcastToDims(InsertAxes(v, -1), d[0], d[1], d[2], c), d[0], d[1], d[2]*c)
	return Slice(r, AxisRange(), AxisRange(), AxisRange(0, seq))
}

// repeatFloat is repeatUnits for float values (keeps gradients).
func repeatFloat(v *Node, c, seq int) *Node { return repeatUnits(v, c, seq) }
