package finetune

import (
	"fmt"
	"math"

	"github.com/gomlx/compute"
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"

	"natsbench/kvcache"
	"natsbench/llama"
	"natsbench/model"
)

// Generator decodes greedily with a frozen Llama-family model under a KV-cache policy. The llama path has no
// KV-cache engine, so generation is by masked recomputation: one forward pass over the padded sequence per
// generated token, under the attention pattern the policy's cache would leave. That is exact, not an
// approximation: in a causal model the hidden states of the positions up to i depend only on the mask rows up to
// i, and each policy's rows are what its cache holds at that query.
//
//   - Mask policies (Masker): full attention (nil), NAtS (the adapter's scorers, argmax roles with the Global
//     bonus, first token or chunk Global: NATS-SPEC §1.7–1.8) and StreamingLLM (model.SinkWindow). A row of the
//     inference mask depends only on the roles of earlier keys (an incomplete trailing chunk's role never
//     matters within the sequence), so the same forward pass serves prefill and every decoding step. This is
//     the route of Trainer.Predict and EvalPasskey.
//   - Evictor policies (Evictor: H2O, TOVA, or any kvcache.Evictor that needs no NAtS roles): the eviction is
//     simulated token by token on a kvcache.Cache with the attention each query gave (summed over the query
//     heads of a KV head), and the forward pass masks every key from the first query after its eviction on.
//     Prefill follows the engine's chunked semantics (engine/doc.go): a block of PrefillChunk prompt tokens
//     attends to the keys kept before the block and causally within it; then the evictor runs once per block
//     token in order with that token's attention row. PrefillChunk = 1 is token-by-token decoding of the
//     prompt; decoding is always token by token.
//
// The KV fraction is NATS-SPEC §1.9's: the keys kept after the last token seen (the prompt and the generated
// tokens fed back; a final EOS is emitted but not fed) divided by the tokens seen, mean over layers and KV heads —
// the same count as engine.Engine.KVFraction. Keys outside a Mistral sliding window count as dropped.
//
// Efficiency is not the point (a full forward per token); it serves small models on CPU and the reference role.
type Generator struct {
	Base         *llama.Model
	Masker       model.Masker    // nil: full attention, unless Evictor is set
	Scorers      *model.Params   // the masker's parameters per layer ("layer_XX/…", the adapter's scorers); may be nil
	Evictor      kvcache.Evictor // data-dependent eviction (Masker must be nil)
	PrefillChunk int             // evictor policies: prompt tokens per forward pass; ≤ 0 means the whole prompt

	backend compute.Backend
	execs   map[[2]int]*Exec // by (padded length, block length; 0 for mask policies)
}

// Generation is the result of one greedy decoding.
type Generation struct {
	Tokens     []int     // generated tokens, a final EOS included
	Logits     []float32 // the logit of each generated token (the largest of its step)
	Seen       int       // tokens the cache has seen: the prompt plus the generated tokens but a final EOS
	KVFraction float64   // keys kept after the last token seen ÷ Seen, mean over layers and KV heads
	KVTokens   float64   // keys kept after the last token seen, mean over layers and KV heads
}

// NewGenerator checks the policy and returns a generator on backend.
func NewGenerator(backend compute.Backend, base *llama.Model, masker model.Masker, scorers *model.Params, ev kvcache.Evictor,
	prefillChunk int) (*Generator, error) {
	if masker != nil && ev != nil {
		return nil, fmt.Errorf("finetune generate: a masker and an evictor are exclusive")
	}
	if ev != nil {
		if ev.Needs().Has(kvcache.Roles) {
			return nil, fmt.Errorf("finetune generate: evictor %T needs NAtS roles: use the NAtS masker instead", ev)
		}
		if v, ok := ev.(interface{ Validate() error }); ok {
			if err := v.Validate(); err != nil {
				return nil, err
			}
		}
	}
	if scorers != nil && len(scorers.Specs) != base.Config.NumLayers {
		return nil, fmt.Errorf("finetune generate: %d scorer tensors for a model of %d layers", len(scorers.Specs), base.Config.NumLayers)
	}
	return &Generator{Base: base, Masker: masker, Scorers: scorers, Evictor: ev, PrefillChunk: prefillChunk, backend: backend,
		execs: map[[2]int]*Exec{}}, nil
}

// padded returns the forward length for n tokens: a multiple of 64 (few compiled shapes).
func padded(n int) int { return (n + 63) / 64 * 64 }

// Generate decodes greedily from prompt (BOS included when the model wants one) for at most maxNew tokens,
// stopping after an EOS of the model's config.
func (g *Generator) Generate(prompt []int, maxNew int) (Generation, error) {
	c := g.Base.Config
	switch {
	case len(prompt) == 0:
		return Generation{}, fmt.Errorf("finetune generate: empty prompt")
	case maxNew < 1:
		return Generation{}, fmt.Errorf("finetune generate: max new tokens = %d, want ≥ 1", maxNew)
	case len(prompt)+maxNew > c.MaxPositions:
		return Generation{}, fmt.Errorf("finetune generate: prompt %d + %d new tokens exceeds max_position_embeddings = %d", len(prompt), maxNew, c.MaxPositions)
	}
	for _, t := range prompt {
		if t < 0 || t >= c.VocabSize {
			return Generation{}, fmt.Errorf("finetune generate: token id %d outside the vocabulary [0, %d)", t, c.VocabSize)
		}
	}
	if g.Evictor != nil {
		return g.generateEvict(prompt, maxNew)
	}
	return g.generateMask(prompt, maxNew)
}

// args returns the base parameters and the scorers as executable arguments.
func (g *Generator) args() []any {
	args := make([]any, 0, len(g.Base.Params.Values)+8)
	for _, v := range g.Base.Params.Values {
		args = append(args, v)
	}
	if g.Scorers != nil {
		for _, v := range g.Scorers.Values {
			args = append(args, v)
		}
	}
	return args
}

func (g *Generator) nScorers() int {
	if g.Scorers == nil {
		return 0
	}
	return len(g.Scorers.Specs)
}

// greedyAt returns the greedy token after row last of the final hidden states h `[1, S, hidden]`, `[1]` int32,
// and its logit `[1]` float32.
func greedyAt(c llama.Config, w llama.Weights, h, last *Node) (*Node, *Node) {
	s := h.Shape().Dimensions[1]
	sel := ConvertDType(Equal(Iota(h.Graph(), shapes.Make(dtypes.Int32, s), 0), last), dtypes.Float32)
	row := ReduceSum(Mul(ConvertDType(h, dtypes.Float32), ExpandAxes(sel, 0, -1)), 1) // [1, hidden]
	logits := llama.LMHead(c, w, ConvertDType(row, h.DType()))
	return ArgMax(logits, -1, dtypes.Int32), ReduceMax(logits, -1)
}

// maskExec compiles the mask-policy pass over S tokens: inputs base params, scorers, tokens [1,S], last (scalar
// int32: the last real position); outputs the greedy token after last `[1]` and the keys kept after last (the
// visible keys of row last+1 minus that query itself), mean over layers and KV heads.
func (g *Generator) maskExec(S int) (*Exec, error) {
	if ex := g.execs[[2]int{S, 0}]; ex != nil {
		return ex, nil
	}
	c := g.Base.Config
	mc := maskerConfig(c)
	nb, ns := len(g.Base.Params.Specs), g.nScorers()
	ex, err := NewExec(g.backend, func(in []*Node) []*Node {
		w := llama.WeightsFrom(c, g.Base.Params.Specs, in[:nb])
		sc := in[nb : nb+ns]
		tokens, last := in[nb+ns], in[nb+ns+1]
		gr := tokens.Graph()
		next := AddScalar(last, 1)
		rowNext := ConvertDType(Equal(Iota(gr, shapes.Make(dtypes.Int32, S), 0), next), dtypes.Float32) // [S]
		keptOf := func(m *Node) *Node {                                                                 // m [1, kv, S, S] → Σ over kv heads of visible keys of row last+1, minus 1 each
			vis := visibleKeys(c, m) // [1, kv, S]
			return Sub(ReduceAllSum(Mul(vis, Reshape(rowNext, 1, 1, S))), Scalar(gr, dtypes.Float32, float64(vis.Shape().Dimensions[1])))
		}
		kept := ScalarZero(gr, dtypes.Float32)
		opt := llama.Options{SkipLogits: true}
		if g.Masker != nil {
			opt.Mask = func(l int, normed *Node) *Node {
				var param func(string) *Node
				if ns > 0 {
					scorer := ConvertDType(sc[l], normed.DType())
					param = func(string) *Node { return scorer }
				}
				m := g.Masker.Mask(&model.AttnSite{Cfg: mc, Layer: l, Normed: normed, Param: param}).Materialize()
				if m == nil {
					m = Ones(gr, shapes.Make(dtypes.Float32, 1, c.NumKVHeads, S, S))
				}
				m = ConvertDType(m, dtypes.Float32)
				kept = Add(kept, keptOf(m))
				return m
			}
		} else {
			kept = MulScalar(keptOf(Ones(gr, shapes.Make(dtypes.Float32, 1, c.NumKVHeads, S, S))), float64(c.NumLayers))
		}
		h := llama.Forward(c, w, tokens, opt).Hidden
		next, logit := greedyAt(c, w, h, last)
		return []*Node{next, DivScalar(kept, float64(c.NumLayers*c.NumKVHeads)), logit}
	})
	if err != nil {
		return nil, fmt.Errorf("finetune generate: %w", err)
	}
	g.execs[[2]int{S, 0}] = ex
	return ex, nil
}

// generateMask is Generate for mask policies: one pass per generated token, and one more after a last token that
// is not an EOS (it is fed, as the engine feeds it) for the KV count.
func (g *Generator) generateMask(prompt []int, maxNew int) (Generation, error) {
	S := padded(len(prompt) + maxNew + 1) // row len(seq) must exist for the KV count
	ex, err := g.maskExec(S)
	if err != nil {
		return Generation{}, err
	}
	seq := append([]int(nil), prompt...)
	var logit float32
	pass := func() (int, float64, error) {
		ids := make([]int32, S)
		for i, t := range seq {
			ids[i] = int32(t)
		}
		tok := tensors.FromFlatDataAndDimensions(ids, 1, S)
		out, err := ex.Exec(append(g.args(), tok, int32(len(seq)-1))...)
		model.Free(tok)
		if err != nil {
			return 0, 0, fmt.Errorf("finetune generate: %w", err)
		}
		defer model.Free(out...)
		logit = tensors.MustCopyFlatData[float32](out[2])[0]
		return int(tensors.MustCopyFlatData[int32](out[0])[0]), scalar(out[1]), nil
	}
	var res Generation
	var kept float64
	for {
		next, k, err := pass()
		if err != nil {
			return res, err
		}
		kept = k
		res.Tokens, res.Logits = append(res.Tokens, next), append(res.Logits, logit)
		if g.Base.Config.IsEOS(next) {
			break
		}
		seq = append(seq, next)
		if len(res.Tokens) == maxNew {
			if _, kept, err = pass(); err != nil {
				return res, err
			}
			break
		}
	}
	res.Seen = len(seq)
	res.KVTokens, res.KVFraction = kept, kept/float64(res.Seen)
	return res, nil
}

// evictExec compiles the evictor-policy pass over S tokens with query blocks of T rows: inputs base params,
// tokens [1,S], evict [L, kv, S] int32 (key j is visible to queries i with j ≤ i < evict[l,h,j]), q0 (first row
// of the block), last (the row whose greedy token is wanted); outputs that token `[1]` and the attention of the
// block's rows `[L, kv, T, S]` (summed over the query heads of each KV head).
func (g *Generator) evictExec(S, T int) (*Exec, error) {
	if ex := g.execs[[2]int{S, T}]; ex != nil {
		return ex, nil
	}
	c := g.Base.Config
	nb := len(g.Base.Params.Specs)
	ex, err := NewExec(g.backend, func(in []*Node) []*Node {
		w := llama.WeightsFrom(c, g.Base.Params.Specs, in[:nb])
		tokens, evict, q0, last := in[nb], in[nb+1], in[nb+2], in[nb+3]
		gr := tokens.Graph()
		rows := Iota(gr, shapes.Make(dtypes.Int32, 1, 1, S, 1), 2)
		blockRows := Add(Iota(gr, shapes.Make(dtypes.Int32, T), 0), q0) // [T]
		var attn []*Node
		opt := llama.Options{SkipLogits: true,
			Mask: func(l int, _ *Node) *Node {
				e := Reshape(Slice(evict, AxisRange(l, l+1)), 1, c.NumKVHeads, 1, S)
				return ConvertDType(LessThan(rows, e), dtypes.Float32) // [1, kv, S, S]; causality is the model's
			},
			Probs: func(l int, p *Node) {
				a := Transpose(Reshape(ReduceSum(p, 2), c.NumKVHeads, S, S), 0, 1)         // [S queries, kv, S keys]
				attn = append(attn, Transpose(Gather(a, InsertAxes(blockRows, -1)), 0, 1)) // [kv, T, S]
			}}
		h := llama.Forward(c, w, tokens, opt).Hidden
		next, logit := greedyAt(c, w, h, last)
		return []*Node{next, Stack(attn, 0), logit}
	})
	if err != nil {
		return nil, fmt.Errorf("finetune generate: %w", err)
	}
	g.execs[[2]int{S, T}] = ex
	return ex, nil
}

// generateEvict is Generate for evictor policies.
func (g *Generator) generateEvict(prompt []int, maxNew int) (Generation, error) {
	c := g.Base.Config
	L, H := c.NumLayers, c.NumKVHeads
	n := len(prompt)
	T := g.PrefillChunk
	if T <= 0 || T > n {
		T = n
	}
	S := padded(max(n+maxNew, (n+T-1)/T*T))
	cache, err := kvcache.New(L, 1, H, S, g.Evictor)
	if err != nil {
		return Generation{}, err
	}
	evict := make([]int32, L*H*S) // [L, H, S]: first query that no longer sees key j
	for i := range evict {
		evict[i] = math.MaxInt32
	}
	seq := append(make([]int, 0, S), prompt...)
	var logit float32
	// block runs the pass for rows q0..q0+t−1 (a block of T rows, the rows past t ignored), then the cache
	// protocol for each of the t tokens, and returns the greedy token after row q0+t−1.
	block := func(q0, t, T int) (int, error) {
		ex, err := g.evictExec(S, T)
		if err != nil {
			return 0, err
		}
		ids := make([]int32, S)
		for i, tk := range seq {
			ids[i] = int32(tk)
		}
		tok := tensors.FromFlatDataAndDimensions(ids, 1, S)
		ev := tensors.FromFlatDataAndDimensions(evict, L, H, S)
		out, err := ex.Exec(append(g.args(), tok, ev, int32(q0), int32(q0+t-1))...)
		model.Free(tok, ev)
		if err != nil {
			return 0, fmt.Errorf("finetune generate: %w", err)
		}
		defer model.Free(out...)
		attn := tensors.MustCopyFlatData[float32](out[1]) // [L, H, T, S]
		st := cache.Stats()
		for r := 0; r < t; r++ {
			if _, err := cache.Begin(); err != nil {
				return 0, err
			}
			for l, layer := range cache.Layers {
				if st.Attn == nil {
					break
				}
				cp := layer.Cap
				for h := 0; h < H; h++ {
					row := attn[((l*H+h)*T+r)*S : ((l*H+h)*T+r+1)*S]
					for k, j := range layer.Pos[h*cp : (h+1)*cp] {
						if j >= 0 {
							st.Attn[l][h*cp+k] = row[j]
						}
					}
				}
			}
			before := snapshot(cache, H)
			if err := cache.End(); err != nil {
				return 0, err
			}
			after := snapshot(cache, H)
			for i := range before { // [L, H, S] kept before/after
				if before[i] && !after[i] {
					evict[i] = int32(q0 + t) // the next block's first query no longer sees it
				}
			}
		}
		logit = tensors.MustCopyFlatData[float32](out[2])[0]
		return int(tensors.MustCopyFlatData[int32](out[0])[0]), nil
	}
	var next int
	for q0 := 0; q0 < n; q0 += T {
		t := min(T, n-q0)
		if next, err = block(q0, t, T); err != nil {
			return Generation{}, err
		}
	}
	var res Generation
	for {
		res.Tokens, res.Logits = append(res.Tokens, next), append(res.Logits, logit)
		if c.IsEOS(next) {
			break
		}
		seq = append(seq, next)
		pos := len(seq) - 1
		if next, err = block(pos, 1, 1); err != nil {
			return res, err
		}
		if len(res.Tokens) == maxNew {
			break
		}
	}
	res.Seen = len(seq)
	var kept int
	for _, layer := range cache.Layers {
		for h := 0; h < H; h++ {
			kept += layer.Occupied(0, h)
		}
	}
	res.KVTokens = float64(kept) / float64(L*H)
	res.KVFraction = res.KVTokens / float64(res.Seen)
	return res, nil
}

// snapshot returns which positions each (layer, KV head) holds, `[L, H, S]` flat with S the cache capacity.
func snapshot(c *kvcache.Cache, H int) []bool {
	S := c.Cap()
	out := make([]bool, len(c.Layers)*H*S)
	for l, layer := range c.Layers {
		for h := 0; h < H; h++ {
			for _, j := range layer.Pos[h*S : (h+1)*S] {
				if j >= 0 {
					out[(l*H+h)*S+int(j)] = true
				}
			}
		}
	}
	return out
}
