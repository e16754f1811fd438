package model

import (
	"fmt"
	"math"

	"github.com/gomlx/compute"
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"
)

// Decoder runs single-token decoding steps against a fixed-capacity KV cache held on the device: per layer and
// KV head, Cap slots. The host decides where each new token's K/V goes (Slot) and which slots are valid (Valid);
// eviction only flips validity, and freed slots are reused. One executable is compiled per (batch, capacity)
// and reused.
type Decoder struct {
	Cfg    Config
	Masker Masker
	Params *Params
	// WantLogits makes Step return the logits `[batch, vocab]` (default true). Streaming evaluation turns it off
	// and reads only the NLL of the given targets, so that no vocabulary-sized tensor leaves the device.
	WantLogits bool
	// WantAttn makes Step return the per-slot attention of the new query (H2O and TOVA need it; default true).
	WantAttn bool
	backend  compute.Backend
	exec     *Exec
}

// NewDecoder returns a decoder for the parameters.
func NewDecoder(backend compute.Backend, cfg Config, m Masker, p *Params) *Decoder {
	return &Decoder{Cfg: cfg, Masker: m, Params: p, backend: backend, WantLogits: true, WantAttn: true}
}

// Cache is the device state of decoding: K and V `[layers, batch, kv_heads, cap, head_dim]` and the maskers'
// per-layer running state `[layers, batch, d_model]` (chunk sums for NAtS-chunk; zeros otherwise).
type Cache struct {
	K, V, State *tensors.Tensor
	Batch, Cap  int
}

// NewCache allocates an empty cache (zeros) of the given capacity.
func (d *Decoder) NewCache(batch, capacity int) *Cache {
	l, kv, hd := d.Cfg.NLayers, d.Cfg.KVHeads(), d.Cfg.HeadDim()
	z := func(dims ...int) *tensors.Tensor {
		n := 1
		for _, x := range dims {
			n *= x
		}
		return tensors.FromFlatDataAndDimensions(make([]float32, n), dims...)
	}
	return &Cache{K: z(l, batch, kv, capacity, hd), V: z(l, batch, kv, capacity, hd), State: z(l, batch, d.Cfg.DModel),
		Batch: batch, Cap: capacity}
}

// Grow returns a copy of c with capacity newCap (slots keep their index; new slots are empty).
func (d *Decoder) Grow(c *Cache, newCap int) *Cache {
	if newCap <= c.Cap {
		return c
	}
	l, kv, hd := d.Cfg.NLayers, d.Cfg.KVHeads(), d.Cfg.HeadDim()
	grow := func(t *tensors.Tensor) *tensors.Tensor {
		old := tensors.MustCopyFlatData[float32](t)
		out := make([]float32, l*c.Batch*kv*newCap*hd)
		rows := l * c.Batch * kv
		for r := 0; r < rows; r++ {
			copy(out[r*newCap*hd:], old[r*c.Cap*hd:(r+1)*c.Cap*hd])
		}
		return tensors.FromFlatDataAndDimensions(out, l, c.Batch, kv, newCap, hd)
	}
	return &Cache{K: grow(c.K), V: grow(c.V), State: c.State, Batch: c.Batch, Cap: newCap}
}

// Bytes returns the device bytes held by the K/V buffers.
func (c *Cache) Bytes() int64 { return 2 * int64(c.K.Shape().Size()) * 4 }

// StepOut is what one decoding step returns to the host.
type StepOut struct {
	Logits []float32 // `[batch, vocab]` (when Decoder.WantLogits)
	NLL    []float32 // `[batch]`: −log p(target) when targets were given
	Argmax []int32   // `[batch]`: the greedy next token
	Attn   []float32 // `[layers, batch, kv_heads, cap]` (when Decoder.WantAttn): attention of the new query per slot, summed over the group's query heads
	Roles  []int32   // `[layers, batch, kv_heads]`: role of the new token (or of the chunk it completes); nil without a DecodeRoler
}

// Step feeds tokens `[batch]` at position pos. slot `[layers, batch, kv_heads]` says where each new K/V goes;
// valid `[layers, batch, kv_heads, cap]` (1/0) marks the slots the new query may attend to, including its own.
// The cache is updated in place (its tensors are replaced).
func (d *Decoder) Step(c *Cache, tokens []int32, pos int, slot []int32, valid []float32) (StepOut, error) {
	vb := make([]bool, len(valid))
	for i, v := range valid {
		vb[i] = v > 0
	}
	return d.StepTargets(c, tokens, nil, pos, slot, vb)
}

// StepTargets is Step with the validity as booleans and, when targets `[batch]` is not nil, the NLL of the
// targets computed on the device.
func (d *Decoder) StepTargets(c *Cache, tokens, targets []int32, pos int, slot []int32, valid []bool) (StepOut, error) {
	if pos >= d.Cfg.MaxSeqLen {
		return StepOut{}, fmt.Errorf("decode: position %d is past model.max_seq_len = %d", pos, d.Cfg.MaxSeqLen)
	}
	n := len(d.Params.Specs)
	_, hasRoles := d.Masker.(DecodeRoler)
	if d.exec == nil {
		var err error
		d.exec, err = NewExec(d.backend, func(in []*Node) []*Node { return d.graph(in[:n], in[n:]) })
		if err != nil {
			return StepOut{}, err
		}
	}
	l, kv := d.Cfg.NLayers, d.Cfg.KVHeads()
	args := make([]any, 0, n+7)
	for _, v := range d.Params.Values {
		args = append(args, v)
	}
	if targets == nil {
		targets = make([]int32, c.Batch)
	}
	// The cache buffers are donated (the step writes the new cache into them) and per-step tensors freed at
	// once: see buffers.go.
	inputs := []*tensors.Tensor{tensors.FromFlatDataAndDimensions(tokens, c.Batch),
		tensors.FromFlatDataAndDimensions(slot, l, c.Batch, kv), tensors.FromFlatDataAndDimensions(valid, l, c.Batch, kv, c.Cap),
		tensors.FromFlatDataAndDimensions(targets, c.Batch)}
	args = append(args, inputs[0], int32(pos), Donate(d.backend, c.K), Donate(d.backend, c.V), Donate(d.backend, c.State),
		inputs[1], inputs[2], inputs[3])
	out, err := d.exec.Exec(args...)
	Free(inputs...)
	if err != nil {
		c.K, c.V, c.State = nil, nil, nil // donated: the cache cannot be used again
		return StepOut{}, fmt.Errorf("decode step at position %d: %w", pos, err)
	}
	c.K, c.V, c.State = out[0], out[1], out[2]
	defer Free(out[3:]...)
	so := StepOut{NLL: tensors.MustCopyFlatData[float32](out[3]), Argmax: tensors.MustCopyFlatData[int32](out[4])}
	k := 5
	if d.WantLogits {
		so.Logits = tensors.MustCopyFlatData[float32](out[k])
		k++
	}
	if d.WantAttn {
		so.Attn = tensors.MustCopyFlatData[float32](out[k])
		k++
	}
	if hasRoles {
		so.Roles = tensors.MustCopyFlatData[int32](out[k])
	}
	return so, nil
}

// graph builds one decoding step. in: tokens [b], pos scalar, K, V, State, slot, valid (bool), targets [b].
func (d *Decoder) graph(params, in []*Node) []*Node {
	cfg := d.Cfg
	p := NodesFrom(cfg, d.Params.Specs, params)
	tokens, pos, K, V, state, slot, valid, targets := in[0], in[1], in[2], in[3], in[4], in[5], in[6], in[7]
	g := tokens.Graph()
	b := tokens.Shape().Dimensions[0]
	capacity := K.Shape().Dimensions[3]
	h, kv, hd := cfg.NHeads, cfg.KVHeads(), cfg.HeadDim()
	rep := h / kv
	dt := dtypes.Float32
	if cfg.IsBF16() {
		dt = dtypes.BFloat16
	}
	x := Gather(p.get("wte"), InsertAxes(tokens, -1)) // [b, d]
	cosT, sinT := RopeConsts(g, cfg, cfg.MaxSeqLen)
	cos := Squeeze(Gather(cosT, Reshape(pos, 1, 1)), 0) // [hd/2]
	sin := Squeeze(Gather(sinT, Reshape(pos, 1, 1)), 0)
	roler, hasRoles := d.Masker.(DecodeRoler)
	var newK, newV, newState, attnStats, roles []*Node
	for l := 0; l < cfg.NLayers; l++ {
		pre := LayerName(l) + "/"
		layerOf := func(t *Node) *Node {
			dims := t.Shape().Dimensions
			return Reshape(Slice(t, AxisRange(l, l+1)), dims[1:]...)
		}
		xn := LayerNorm(x, p.get(pre+"ln1"))
		q := Reshape(einsum("bd,df->bf", xn, p.get(pre+"attn/wq")), b, kv, rep, hd)
		k := Reshape(einsum("bd,df->bf", xn, p.get(pre+"attn/wk")), b, kv, 1, hd)
		v := Reshape(einsum("bd,df->bf", xn, p.get(pre+"attn/wv")), b, kv, 1, hd)
		q, k = RoPE(q, cos, sin), RoPE(k, cos, sin)
		oh := InsertAxes(OneHot(layerOf(slot), capacity, dtypes.Float32), -1) // [b,kv,cap,1]
		Kl := Add(Mul(layerOf(K), OneMinus(oh)), Mul(oh, ConvertDType(k, dtypes.Float32)))
		Vl := Add(Mul(layerOf(V), OneMinus(oh)), Mul(oh, ConvertDType(v, dtypes.Float32)))
		newK, newV = append(newK, Kl), append(newV, Vl)
		scores := einsum("bgrd,bgkd->bgrk", q, ConvertDType(Kl, dt))
		scores = MulScalar(ConvertDType(scores, dtypes.Float32), 1/math.Sqrt(float64(hd)))
		ok := InsertAxes(layerOf(valid), 2) // [b,kv,1,cap]
		scores = Where(BroadcastToShape(ok, scores.Shape()), scores, Scalar(g, dtypes.Float32, -1e30))
		pr := Softmax(scores, -1)
		attnStats = append(attnStats, ReduceSum(pr, 2))
		att := Reshape(einsum("bgrk,bgkd->bgrd", ConvertDType(pr, dt), ConvertDType(Vl, dt)), b, h*hd)
		x = Add(x, einsum("bf,fd->bd", att, p.get(pre+"attn/wo")))
		xn2 := LayerNorm(x, p.get(pre+"ln2"))
		x = Add(x, einsum("bf,fd->bd", GELU(einsum("bd,df->bf", xn2, p.get(pre+"mlp/fc"))), p.get(pre+"mlp/proj")))
		st := layerOf(state)
		if hasRoles {
			r, ns := roler.DecodeRoles(&DecodeSite{Cfg: cfg, Layer: l, Normed: xn, Param: p.scoped(pre + "nats/"), Pos: pos, State: st})
			roles = append(roles, r)
			st = ConvertDType(ns, dtypes.Float32)
		}
		newState = append(newState, st)
	}
	xf := LayerNorm(x, p.get("ln_f"))
	var logits *Node
	if cfg.TieEmbeddings {
		logits = einsum("bd,vd->bv", xf, p.get("wte"))
	} else {
		logits = einsum("bd,dv->bv", xf, p.get("lm_head"))
	}
	logits = ConvertDType(logits, dtypes.Float32)
	rows := Iota(g, shapes.Make(dtypes.Int32, b, 1), 0)
	picked := Gather(logits, Concatenate([]*Node{rows, InsertAxes(targets, -1)}, 1))
	nll := Sub(ReduceLogSumExp(logits), picked)
	out := []*Node{Stack(newK, 0), Stack(newV, 0), Stack(newState, 0), nll, ArgMax(logits, -1, dtypes.Int32)}
	if d.WantLogits {
		out = append(out, logits)
	}
	if d.WantAttn {
		out = append(out, Stack(attnStats, 0))
	}
	if hasRoles {
		out = append(out, Stack(roles, 0))
	}
	return out
}
