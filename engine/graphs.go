package engine

import (
	"math"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph"

	"natsbench/kvcache"
	"natsbench/model"
)

const negInf = -1e30

// computeDType is the dtype of the model's matmuls (and of the K/V buffers).
func (e *Engine) computeDType() dtypes.DType {
	if e.Cfg.IsBF16() {
		return dtypes.BFloat16
	}
	return dtypes.Float32
}

// prefillGraph builds one prefill chunk. Inputs after the parameters: tokens `[B, T]`, pos0 (scalar: position of
// the chunk's first token, a multiple of the NAtS chunk size), last (scalar: index of the chunk's last real
// token), then per layer K and V `[B, KV, Cap, hd]`, then slot positions and roles `[L, B, KV, Cap]` int32 (after
// the first chunk, for Full, StreamingLLM and NAtS, the ones the last commitDeltaGraph left on the device).
// Outputs: per layer the chunk's K and V `[B, KV, T, hd]`, logits (`[B, V]` of the last real token, or
// `[B, T, V]` with Options.AllLogits), the argmax `[B]`, the NAtS state `[L, B, d]`, then the roles
// `[L, B, KV, T]` (NAtS), the attention `[L, B, KV, T, Cap+T]` (evictors that need it) and the normed inputs
// `[L, B, T, d]` (probe).
func (e *Engine) prefillGraph(params, in []*Node, probe bool) []*Node {
	cfg, sp := e.Cfg, e.spec
	p := model.NodesFrom(cfg, e.Params.Specs, params)
	L := cfg.NLayers
	tokens, pos0, last := in[0], in[1], in[2]
	Ks, Vs := in[3:3+L], in[3+L:3+2*L]
	slotPos, slotRole := in[3+2*L], in[4+2*L]
	g := tokens.Graph()
	B, T := tokens.Shape().Dimensions[0], tokens.Shape().Dimensions[1]
	capacity := Ks[0].Shape().Dimensions[2]
	H, KV, hd, d := cfg.NHeads, cfg.KVHeads(), cfg.HeadDim(), cfg.DModel
	rep := H / KV
	dt := e.computeDType()
	i32 := func(v int) *Node { return Const(g, int32(v)) }

	// Positions of the chunk's tokens; padding beyond max_seq_len is clamped for RoPE (its outputs are unused).
	tIdx := Iota(g, shapes.Make(dtypes.Int32, T), 0)
	qPos := Add(tIdx, pos0) // [T]
	cosT, sinT := model.RopeConsts(g, cfg, cfg.MaxSeqLen)
	rp := InsertAxes(MinScalar(qPos, float64(cfg.MaxSeqLen-1)), -1)
	cos, sin := Gather(cosT, rp), Gather(sinT, rp) // [T, hd/2]

	x := Gather(param(p, "wte"), InsertAxes(tokens, -1)) // [B, T, d]
	roler, hasRoles := e.Masker.(model.DecodeRoler)
	natsRoles := sp.kind == kindNAtS && hasRoles
	var newK, newV, roles, attnStats, normed, states []*Node
	for l := 0; l < L; l++ {
		pre := model.LayerName(l) + "/"
		xn := model.LayerNorm(x, param(p, pre+"ln1"))
		if probe {
			normed = append(normed, ConvertDType(xn, dtypes.Float32))
		}
		q := Transpose(Reshape(model.Contract("bsd,df->bsf", xn, param(p, pre+"attn/wq")), B, T, H, hd), 1, 2)
		k := Transpose(Reshape(model.Contract("bsd,df->bsf", xn, param(p, pre+"attn/wk")), B, T, KV, hd), 1, 2)
		v := Transpose(Reshape(model.Contract("bsd,df->bsf", xn, param(p, pre+"attn/wv")), B, T, KV, hd), 1, 2)
		q, k = model.RoPE(q, cos, sin), model.RoPE(k, cos, sin)
		newK, newV = append(newK, k), append(newV, v)

		layerOf := func(t *Node) *Node {
			dims := t.Shape().Dimensions
			return Reshape(Slice(t, AxisRange(l, l+1)), dims[1:]...)
		}
		sPos, sRole := layerOf(slotPos), layerOf(slotRole) // [B, KV, Cap]
		// The visibility of the cache [B,KV,T,Cap] and of the chunk [B,KV,T,T] to the chunk's queries.
		var mc, mi *Node
		st := Zeros(g, shapes.Make(dtypes.Float32, B, d))
		switch sp.kind {
		case kindNAtS:
			var r *Node
			r, st = e.chunkRoles(roler, natsRoles, p, pre, l, xn, pos0, last)
			roles = append(roles, r)
			mc, mi = natsVisibility(r, sPos, sRole, pos0, sp.window, sp.chunk)
		case kindSink:
			vis := func(qp, kp *Node) *Node { // qp, kp broadcastable int32
				return Or(LessThan(kp, i32(sp.sinks)), LessThan(Sub(qp, kp), i32(sp.budget-sp.sinks)))
			}
			qp := Reshape(qPos, 1, 1, T, 1)
			mc = And(GreaterOrEqual(InsertAxes(sPos, 2), i32(0)), vis(qp, InsertAxes(sPos, 2)))
			mi = And(causalTT(g, T), vis(qp, Reshape(qPos, 1, 1, 1, T)))
		default:
			mc = GreaterOrEqual(InsertAxes(sPos, 2), i32(0))
			mi = causalTT(g, T)
		}
		mc = BroadcastToDims(mc, B, KV, T, capacity)
		mi = BroadcastToDims(mi, B, KV, T, T)
		states = append(states, st)

		qg := Reshape(q, B, KV, rep, T, hd)
		scale := 1 / math.Sqrt(float64(hd))
		sc := MulScalar(ConvertDType(model.Contract("bgrqd,bgkd->bgrqk", qg, ConvertDType(Ks[l], dt)), dtypes.Float32), scale)
		si := MulScalar(ConvertDType(model.Contract("bgrqd,bgkd->bgrqk", qg, k), dtypes.Float32), scale)
		neg := Scalar(g, dtypes.Float32, negInf)
		sc = Where(BroadcastToShape(InsertAxes(mc, 2), sc.Shape()), sc, neg)
		si = Where(BroadcastToShape(InsertAxes(mi, 2), si.Shape()), si, neg)
		mx := Max(ReduceAndKeep(sc, ReduceMax, -1), ReduceAndKeep(si, ReduceMax, -1))
		ec, ei := Exp(Sub(sc, mx)), Exp(Sub(si, mx))
		z := Add(ReduceAndKeep(ec, ReduceSum, -1), ReduceAndKeep(ei, ReduceSum, -1))
		pc, pi := Div(ec, z), Div(ei, z)
		if e.spec.needs&(kvcache.AccAttn|kvcache.LastAttn) != 0 {
			attnStats = append(attnStats, Concatenate([]*Node{ReduceSum(pc, 2), ReduceSum(pi, 2)}, -1))
		}
		att := Add(model.Contract("bgrqk,bgkd->bgrqd", ConvertDType(pc, dt), ConvertDType(Vs[l], dt)),
			model.Contract("bgrqk,bgkd->bgrqd", ConvertDType(pi, dt), v))
		att = Reshape(Transpose(Reshape(att, B, H, T, hd), 1, 2), B, T, H*hd)
		x = Add(x, model.Contract("bsf,fd->bsd", att, param(p, pre+"attn/wo")))
		xn2 := model.LayerNorm(x, param(p, pre+"ln2"))
		x = Add(x, model.Contract("bsf,fd->bsd", model.GELU(model.Contract("bsd,df->bsf", xn2, param(p, pre+"mlp/fc"))), param(p, pre+"mlp/proj")))
	}
	xf := model.LayerNorm(x, param(p, "ln_f"))
	lastRows := func(t *Node) *Node { // [B, T, n] → [B, n] at index last
		n := t.Shape().Dimensions[2]
		idx := Add(MulScalar(Iota(g, shapes.Make(dtypes.Int32, B), 0), float64(T)), last)
		return Gather(Reshape(t, B*T, n), InsertAxes(idx, -1))
	}
	var logits, lastLogits *Node
	if e.Options.AllLogits {
		logits = lmHead(cfg, p, xf)
		lastLogits = lastRows(logits)
	} else {
		logits = lmHead(cfg, p, lastRows(xf))
		lastLogits = logits
	}
	sd := e.computeDType()
	var out []*Node
	for _, k := range newK {
		out = append(out, ConvertDType(k, sd))
	}
	for _, v := range newV {
		out = append(out, ConvertDType(v, sd))
	}
	out = append(out, logits, ArgMax(lastLogits, -1, dtypes.Int32), Stack(states, 0))
	if len(roles) > 0 {
		out = append(out, Stack(roles, 0))
	}
	if len(attnStats) > 0 {
		out = append(out, Stack(attnStats, 0))
	}
	if probe {
		out = append(out, Stack(normed, 0))
	}
	return out
}

// causalTT is the Bool `[1, 1, T, T]` lower-triangular mask (query axis first).
func causalTT(g *Graph, T int) *Node {
	i := Iota(g, shapes.Make(dtypes.Int32, T, T), 0)
	j := Iota(g, shapes.Make(dtypes.Int32, T, T), 1)
	return Reshape(GreaterOrEqual(i, j), 1, 1, T, T)
}

// chunkRoles returns the NAtS decision of every chunk token `[B, KV, T]` int32 (the role of the token for C = 1;
// for C > 1 the role of its NAtS chunk computed from the running pooled input, meaningful at the chunk's last
// token) and the layer's running state after the last real token `[B, d]`.
//
// It calls the masker's own decode-time rule (model.DecodeRoler) once for all B·T tokens, with the scalar
// position set to C+1 (a position that neither starts a chunk nor lies in the first one) and the running pool
// supplied as the state: for mean pooling State = the inclusive running sum and Normed = 0, so that the rule's
// (State + x)/C is the running mean; for max pooling State = Normed = the running max. Position < C (the first
// token or chunk) is then forced Global, as the rule does at decode time.
func (e *Engine) chunkRoles(roler model.DecodeRoler, ok bool, p model.Nodes, pre string, layer int, xn, pos0, last *Node) (roles, state *Node) {
	if !ok {
		panic("engine: NAtS policy without a DecodeRoler masker")
	}
	g := xn.Graph()
	B, T, d := xn.Shape().Dimensions[0], xn.Shape().Dimensions[1], xn.Shape().Dimensions[2]
	C := e.spec.chunk
	x := ConvertDType(xn, dtypes.Float32)
	var normed, st *Node
	if C == 1 {
		normed, st = Reshape(x, B*T, d), Zeros(g, shapes.Make(dtypes.Float32, B*T, d))
	} else {
		xs := Reshape(x, B, T/C, C, d)
		var run *Node
		if mergeMax(e.Masker) {
			run = xs
			for s := 1; s < C; s *= 2 { // running max by doubling
				fill := BroadcastToDims(Scalar(g, dtypes.Float32, math.Inf(-1)), B, T/C, s, d)
				shifted := Concatenate([]*Node{fill, Slice(run, AxisRange(), AxisRange(), AxisRange(0, C-s), AxisRange())}, 2)
				run = Max(run, shifted)
			}
			run = Reshape(run, B*T, d)
			normed, st = run, run
		} else {
			run = Reshape(CumSum(xs, 2), B*T, d)
			normed, st = Zeros(g, shapes.Make(dtypes.Float32, B*T, d)), run
		}
	}
	r, _ := roler.DecodeRoles(&model.DecodeSite{Cfg: e.Cfg, Layer: layer, Normed: normed, Param: scoped(p, pre+"nats/"),
		Pos: Const(g, int32(C+1)), State: st})
	KV := e.Cfg.KVHeads()
	r = Transpose(Reshape(ConvertDType(r, dtypes.Int32), B, T, KV), 1, 2) // [B, KV, T]
	pos := Reshape(Add(Iota(g, shapes.Make(dtypes.Int32, T), 0), pos0), 1, 1, T)
	first := BroadcastToShape(LessThan(pos, Const(g, int32(C))), r.Shape())
	roles = Where(first, ZerosLike(r), r)
	state = Zeros(g, shapes.Make(dtypes.Float32, B, d))
	if C > 1 {
		idx := Add(MulScalar(Iota(g, shapes.Make(dtypes.Int32, B), 0), float64(T)), last)
		state = Gather(st, InsertAxes(idx, -1)) // [B, d]
	}
	return roles, state
}

// natsVisibility returns the NAtS visibility of the cached slots `[B, KV, T, Cap]` and of the chunk's own keys
// `[B, KV, T, T]` for the chunk's queries (NATS-SPEC §1.1, §1.7), from the chunk decisions r `[B, KV, T]` and the
// cached slots' positions and roles `[B, KV, Cap]`. The chunk starts at pos0, a multiple of C, and T is a
// multiple of C. A decision is made at each chunk's last token; gc counts the Global decisions.
//   - Chunk key j (chunk role R_j, chunk end e_j): visible to query i ≥ j when i and j share a chunk, or R_j is
//     Global, or R_j is Local and no Global decision lies in (e_j, i−1], or R_j is Window and i ≤ e_j + W.
//   - Cached slot s (the cache as left after position pos0−1): Global/Pending always; Local while no Global
//     decision lies in [pos0, i−1] (the first Global of the chunk still sees it); Window while pos0+i ≤ e_s + W.
func natsVisibility(r, sPos, sRole, pos0 *Node, W, C int) (mc, mi *Node) {
	g := r.Graph()
	dims := r.Shape().Dimensions
	B, KV, T := dims[0], dims[1], dims[2]
	i32 := func(v int) *Node { return Const(g, int32(v)) }
	f32 := func(b *Node) *Node { return ConvertDType(b, dtypes.Float32) }
	t := Iota(g, shapes.Make(dtypes.Int32, T), 0)
	complete := Equal(Rem(t, i32(C)), i32(C-1)) // [T]
	isG := And(NotEqual(r, i32(int(kvcache.Local))), NotEqual(r, i32(int(kvcache.Window))))
	gdec := f32(And(BroadcastToShape(Reshape(complete, 1, 1, T), isG.Shape()), isG)) // [B,KV,T]
	gc := CumSum(gdec, 2)                                                            // Global decisions at ≤ t
	gcx := Sub(gc, gdec)                                                             // … at < t
	atEnd := func(v *Node) *Node {                                                   // value at the end of each token's chunk
		if C == 1 {
			return v
		}
		u := Slice(Reshape(v, B, KV, T/C, C), AxisRange(), AxisRange(), AxisRange(), AxisRange(C-1, C))
		return Reshape(BroadcastToDims(u, B, KV, T/C, C), B, KV, T)
	}
	role := atEnd(r)   // chunk role of each key
	gcEnd := atEnd(gc) // Global decisions up to the key's chunk end
	end := Add(MulScalar(Div(t, i32(C)), float64(C)), i32(C-1))

	qi := Reshape(t, 1, 1, T, 1)
	kj := Reshape(t, 1, 1, 1, T)
	same := Equal(Div(qi, i32(C)), Div(kj, i32(C)))
	key := func(v *Node) *Node { return InsertAxes(v, 2) }    // [B,KV,1,T]
	query := func(v *Node) *Node { return InsertAxes(v, -1) } // [B,KV,T,1]
	kG := key(And(NotEqual(role, i32(int(kvcache.Local))), NotEqual(role, i32(int(kvcache.Window)))))
	kL := And(key(Equal(role, i32(int(kvcache.Local)))), LessOrEqual(Sub(query(gcx), key(gcEnd)), Scalar(g, dtypes.Float32, 0.5)))
	kW := And(key(Equal(role, i32(int(kvcache.Window)))), LessOrEqual(qi, AddScalar(Reshape(end, 1, 1, 1, T), float64(W))))
	mi = And(GreaterOrEqual(qi, kj), Or(Or(same, kG), Or(kL, kW)))

	valid := InsertAxes(GreaterOrEqual(sPos, i32(0)), 2) // [B,KV,1,Cap]
	sr := InsertAxes(sRole, 2)
	sEnd := InsertAxes(Add(MulScalar(Div(sPos, i32(C)), float64(C)), i32(C-1)), 2)
	qAbs := Reshape(Add(t, pos0), 1, 1, T, 1)
	cG := And(NotEqual(sr, i32(int(kvcache.Local))), NotEqual(sr, i32(int(kvcache.Window))))
	cL := And(Equal(sr, i32(int(kvcache.Local))), LessOrEqual(query(gcx), Scalar(g, dtypes.Float32, 0.5)))
	cW := And(Equal(sr, i32(int(kvcache.Window))), LessOrEqual(qAbs, AddScalar(sEnd, float64(W))))
	mc = And(valid, Or(cG, Or(cL, cW)))
	return mc, mi
}

// stepGraph builds one decoding step over the committed cache plus the staging area. Inputs after the
// parameters: the small arguments as one int32 vector `[B + 2 + 2U]` (one upload: each upload waits for its
// transfer) holding the tokens `[B]`, pos, ridx (the staging index of the new token), U update indices (flat into
// valid) and their U values (added to valid); per layer K, V `[B, KV, Cap, hd]`, per layer staged K, V
// `[B, KV, R, hd]`, valid `[L, B, KV, Cap+R]` float32 and state `[L, B, d]`.
// Outputs: per layer staged K, V, valid, state, argmax `[B]` (NAtS: followed by the roles `[L, B, KV]` flattened,
// `[B + L·B·KV]` in all), logits `[B, V]`, then attention `[L, B, KV, Cap+R]` (evictors that need it). The
// committed K/V are only read: no step rewrites the large buffers.
func (e *Engine) stepGraph(params, in []*Node) []*Node {
	cfg := e.Cfg
	p := model.NodesFrom(cfg, e.Params.Specs, params)
	L := cfg.NLayers
	small := in[0]
	Ks, Vs := in[1:1+L], in[1+L:1+2*L]
	Krs, Vrs := in[1+2*L:1+3*L], in[1+3*L:1+4*L]
	valid, state := in[1+4*L], in[2+4*L]
	g := small.Graph()
	B := state.Shape().Dimensions[1]
	U := (small.Shape().Size() - B - 2) / 2
	part := func(from, n int) *Node { return Slice(small, AxisRange(from, from+n)) }
	tokens, pos, ridx := part(0, B), Reshape(part(B, 1)), Reshape(part(B+1, 1))
	updIdx, updVal := Reshape(part(B+2, U), U, 1), ConvertDType(part(B+2+U, U), dtypes.Float32)
	capacity, R := Ks[0].Shape().Dimensions[2], Krs[0].Shape().Dimensions[2]
	H, KV, hd := cfg.NHeads, cfg.KVHeads(), cfg.HeadDim()
	rep := H / KV
	dt, sd := e.computeDType(), e.computeDType()

	vdims := valid.Shape().Dimensions
	valid = Reshape(ScatterSum(Reshape(valid, valid.Shape().Size()), updIdx, updVal, false, false), vdims...)

	x := Gather(param(p, "wte"), InsertAxes(tokens, -1)) // [B, d]
	cosT, sinT := model.RopeConsts(g, cfg, cfg.MaxSeqLen)
	cos := Squeeze(Gather(cosT, Reshape(pos, 1, 1)), 0)
	sin := Squeeze(Gather(sinT, Reshape(pos, 1, 1)), 0)
	ohR := BroadcastToDims(Reshape(Equal(Iota(g, shapes.Make(dtypes.Int32, R), 0), ridx), 1, 1, R, 1), B, KV, R, hd)
	roler, hasRoles := e.Masker.(model.DecodeRoler)
	hasRoles = hasRoles && e.spec.kind == kindNAtS
	wantAttn := e.spec.needs&(kvcache.AccAttn|kvcache.LastAttn) != 0
	var newKr, newVr, newState, roles, attnStats []*Node
	for l := 0; l < L; l++ {
		pre := model.LayerName(l) + "/"
		layerOf := func(t *Node) *Node {
			dims := t.Shape().Dimensions
			return Reshape(Slice(t, AxisRange(l, l+1)), dims[1:]...)
		}
		xn := model.LayerNorm(x, param(p, pre+"ln1"))
		q := Reshape(model.Contract("bd,df->bf", xn, param(p, pre+"attn/wq")), B, KV, rep, hd)
		k := Reshape(model.Contract("bd,df->bf", xn, param(p, pre+"attn/wk")), B, KV, 1, hd)
		v := Reshape(model.Contract("bd,df->bf", xn, param(p, pre+"attn/wv")), B, KV, 1, hd)
		q, k = model.RoPE(q, cos, sin), model.RoPE(k, cos, sin)
		Kr := Where(ohR, BroadcastToDims(ConvertDType(k, sd), B, KV, R, hd), Krs[l])
		Vr := Where(ohR, BroadcastToDims(ConvertDType(v, sd), B, KV, R, hd), Vrs[l])
		newKr, newVr = append(newKr, Kr), append(newVr, Vr)

		scale := 1 / math.Sqrt(float64(hd))
		sm := MulScalar(ConvertDType(model.Contract("bgrd,bgkd->bgrk", q, ConvertDType(Ks[l], dt)), dtypes.Float32), scale)
		ss := MulScalar(ConvertDType(model.Contract("bgrd,bgkd->bgrk", q, ConvertDType(Kr, dt)), dtypes.Float32), scale)
		vl := GreaterThan(InsertAxes(layerOf(valid), 2), Scalar(g, dtypes.Float32, 0.5)) // [B,KV,1,Cap+R]
		vm := Slice(vl, AxisRange(), AxisRange(), AxisRange(), AxisRange(0, capacity))
		vs := Slice(vl, AxisRange(), AxisRange(), AxisRange(), AxisRange(capacity, capacity+R))
		neg := Scalar(g, dtypes.Float32, negInf)
		sm = Where(BroadcastToShape(vm, sm.Shape()), sm, neg)
		ss = Where(BroadcastToShape(vs, ss.Shape()), ss, neg)
		mx := Max(ReduceAndKeep(sm, ReduceMax, -1), ReduceAndKeep(ss, ReduceMax, -1))
		em, es := Exp(Sub(sm, mx)), Exp(Sub(ss, mx))
		z := Add(ReduceAndKeep(em, ReduceSum, -1), ReduceAndKeep(es, ReduceSum, -1))
		pm, ps := Div(em, z), Div(es, z)
		if wantAttn {
			attnStats = append(attnStats, Concatenate([]*Node{ReduceSum(pm, 2), ReduceSum(ps, 2)}, -1))
		}
		att := Add(model.Contract("bgrk,bgkd->bgrd", ConvertDType(pm, dt), ConvertDType(Vs[l], dt)),
			model.Contract("bgrk,bgkd->bgrd", ConvertDType(ps, dt), ConvertDType(Vr, dt)))
		x = Add(x, model.Contract("bf,fd->bd", Reshape(att, B, H*hd), param(p, pre+"attn/wo")))
		xn2 := model.LayerNorm(x, param(p, pre+"ln2"))
		x = Add(x, model.Contract("bf,fd->bd", model.GELU(model.Contract("bd,df->bf", xn2, param(p, pre+"mlp/fc"))), param(p, pre+"mlp/proj")))
		st := layerOf(state)
		if hasRoles {
			r, ns := roler.DecodeRoles(&model.DecodeSite{Cfg: cfg, Layer: l, Normed: xn, Param: scoped(p, pre+"nats/"), Pos: pos, State: st})
			roles = append(roles, ConvertDType(r, dtypes.Int32))
			st = ConvertDType(ns, dtypes.Float32)
		}
		newState = append(newState, st)
	}
	logits := lmHead(cfg, p, model.LayerNorm(x, param(p, "ln_f")))
	out := append(append([]*Node{}, newKr...), newVr...)
	// The greedy tokens and, for NAtS, the roles come back as one int32 vector: every output read on the host is a
	// device synchronisation and a transfer (a second one cost ~0.2 ms per step on the H200, results/latency_parts).
	picks := ArgMax(logits, -1, dtypes.Int32)
	if hasRoles {
		picks = Concatenate([]*Node{picks, Reshape(Stack(roles, 0), L*B*KV)}, 0)
	}
	out = append(out, valid, Stack(newState, 0), picks, logits)
	if wantAttn {
		out = append(out, Stack(attnStats, 0))
	}
	return out
}

// commitGraph moves staged tokens into the committed buffers and resizes them: inputs per layer K, V
// `[B, KV, Cap, hd]`, per layer staged K, V `[B, KV, S, hd]`, and src `[L, B, KV, NewCap]` int32, the source of
// every new slot in the concatenation [committed | staged], −1 for a slot that holds no valid token (its content is
// then undefined). Outputs per layer K, V `[B, KV, NewCap, hd]`, then the validity `[L, B, KV, NewCap + R]`
// float32 (1 where src ≥ 0; the R staging columns 0).
func (e *Engine) commitGraph(in []*Node) []*Node {
	L := e.Cfg.NLayers
	return e.commitFromSrc(in[:L], in[L:2*L], in[2*L:3*L], in[3*L:4*L], in[4*L])
}

// commitFromSrc is commitGraph's body: the gather of every new slot from src (−1: any source, not valid) and the
// validity of the new layout with R empty staging columns.
func (e *Engine) commitFromSrc(Ks, Vs, Ss, SVs []*Node, src *Node) []*Node {
	L := len(Ks)
	g := src.Graph()
	d := Ks[0].Shape().Dimensions
	B, KV, capacity, hd := d[0], d[1], d[2], d[3]
	S := Ss[0].Shape().Dimensions[2]
	newCap := src.Shape().Dimensions[3]
	n := capacity + S
	row := Iota(g, shapes.Make(dtypes.Int32, B, KV, newCap), 0)
	head := Iota(g, shapes.Make(dtypes.Int32, B, KV, newCap), 1)
	base := MulScalar(Add(MulScalar(row, float64(KV)), head), float64(n))
	var outK, outV []*Node
	for l := 0; l < L; l++ {
		s := Max(Reshape(Slice(src, AxisRange(l, l+1)), B, KV, newCap), ZerosLike(base)) // −1: any source
		idx := InsertAxes(Reshape(Add(base, s), B*KV*newCap), -1)
		pick := func(a, b *Node) *Node {
			all := Reshape(Concatenate([]*Node{a, b}, 2), B*KV*n, hd)
			return Reshape(Gather(all, idx), B, KV, newCap, hd)
		}
		outK, outV = append(outK, pick(Ks[l], Ss[l])), append(outV, pick(Vs[l], SVs[l]))
	}
	valid := ConvertDType(GreaterOrEqual(src, ZerosLike(src)), dtypes.Float32)
	if R := e.Options.Staging; R > 0 {
		valid = Concatenate([]*Node{valid, Zeros(g, shapes.Make(dtypes.Float32, L, B, KV, R))}, -1)
	}
	return append(append(outK, outV...), valid)
}

// commitDestGraph is commitGraph for decoding's staging at an unchanged capacity, with the sources built on the
// device: inputs per layer K, V `[B, KV, Cap, hd]`, per layer staged K, V `[B, KV, R, hd]`, dest `[L, B, KV, R]`
// int32 (the slot each staged token was placed in, −1 for none), the validity `[L, B, KV, Cap+R]` the last step
// left, and the updates queued since (flat indices `[n, 1]`, values `[n]`, as the step takes them). A slot's
// source is the staged token placed in it if that token is still valid, else the slot itself if it is still
// valid, else none. Outputs as commitGraph.
func (e *Engine) commitDestGraph(in []*Node) []*Node {
	L := e.Cfg.NLayers
	Ks, Vs, Ss, SVs := in[:L], in[L:2*L], in[2*L:3*L], in[3*L:4*L]
	dest, valid, updIdx, updVal := in[4*L], in[4*L+1], in[4*L+2], in[4*L+3]
	g := dest.Graph()
	d := dest.Shape().Dimensions
	B, KV, R := d[1], d[2], d[3]
	capacity := Ks[0].Shape().Dimensions[2]
	vdims := valid.Shape().Dimensions
	v := Reshape(ScatterSum(Reshape(valid, valid.Shape().Size()), updIdx, updVal, false, false), vdims...)
	live := GreaterThan(v, Scalar(g, dtypes.Float32, 0.5))
	liveC := Slice(live, AxisRange(), AxisRange(), AxisRange(), AxisRange(0, capacity))          // [L,B,KV,Cap]
	liveS := Slice(live, AxisRange(), AxisRange(), AxisRange(), AxisRange(capacity, capacity+R)) // [L,B,KV,R]
	five := shapes.Make(dtypes.Int32, L, B, KV, capacity, R)
	slot := Iota(g, five, 3)
	match := And(Equal(slot, BroadcastToDims(InsertAxes(dest, 3), five.Dimensions...)),
		BroadcastToDims(InsertAxes(liveS, 3), five.Dimensions...))
	// 1 + the staged index placed in each slot (0: none; at most one live staged token holds a slot).
	m := ReduceMax(Where(match, AddScalar(Iota(g, five, 4), 1), ZerosLike(slot)), 4) // [L,B,KV,Cap]
	self := Iota(g, shapes.Make(dtypes.Int32, L, B, KV, capacity), 3)
	src := Where(GreaterThan(m, ZerosLike(m)), AddScalar(m, float64(capacity-1)),
		Where(liveC, self, AddScalar(ZerosLike(self), -1)))
	return e.commitFromSrc(Ks, Vs, Ss, SVs, src)
}

// commitDeltaGraph is commitGraph for a prefill chunk at an unchanged capacity (Full, StreamingLLM, NAtS), with the
// sources built on the device from the slots the chunk changed. Inputs per layer K, V `[B, KV, Cap, hd]`, per layer
// the chunk's K, V `[B, KV, T, hd]`, the slot positions and roles `[L, B, KV, Cap]` int32 the last commit left on
// the device, the changed slots as flat indices into them `[U]` int32 (a slot may repeat, with the same values;
// padding points at a spare element past the end), their positions and roles after the chunk `[U]` (position −1:
// freed), and pos0 (scalar). A changed slot now holds a chunk token (position ≥ pos0) or nothing; every other slot
// keeps what it held. Outputs as commitGraph, then the slot positions and roles after the chunk (what the next
// chunk reads).
func (e *Engine) commitDeltaGraph(in []*Node) []*Node {
	L := e.Cfg.NLayers
	Ks, Vs, Ss, SVs := in[:L], in[L:2*L], in[2*L:3*L], in[3*L:4*L]
	sPos, sRole, idx, nPos, nRole, pos0 := in[4*L], in[4*L+1], in[4*L+2], in[4*L+3], in[4*L+4], in[4*L+5]
	g := sPos.Graph()
	capacity := Ks[0].Shape().Dimensions[2]
	dims := sPos.Shape().Dimensions
	N, U := sPos.Shape().Size(), idx.Shape().Size()
	at := Reshape(idx, U, 1)
	scatter := func(v *Node) *Node { // the changes' values (≥ 0; repeats are equal) at their slots, 0 elsewhere
		s := ScatterMax(Zeros(g, shapes.Make(dtypes.Int32, N+1)), at, v, false, false)
		return Reshape(Slice(s, AxisRange(0, N)), dims...)
	}
	changed := GreaterThan(scatter(OnesLike(nPos)), ZerosLike(sPos))
	newPos := Where(changed, AddScalar(scatter(AddScalar(nPos, 1)), -1), sPos)
	newRole := Where(changed, scatter(nRole), sRole)
	none := AddScalar(ZerosLike(sPos), -1)
	self := Iota(g, shapes.Make(dtypes.Int32, dims...), 3)
	src := Where(changed, Where(GreaterOrEqual(newPos, ZerosLike(newPos)), AddScalar(Sub(newPos, pos0), float64(capacity)), none),
		Where(GreaterOrEqual(sPos, ZerosLike(sPos)), self, none))
	return append(e.commitFromSrc(Ks, Vs, Ss, SVs, src), newPos, newRole)
}
