package finetune

import (
	"fmt"
	"math"
	"slices"
	"testing"

	"github.com/gomlx/compute"
	"github.com/gomlx/compute/dtypes"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"

	"natsbench/kvcache"
	"natsbench/llama"
	"natsbench/model"
	"natsbench/nats"
	"natsbench/policy"
)

// genPrompt is a BOS-led prompt of n byte tokens.
func genPrompt(n int) []int {
	text := "the quiet town by the river kept the first passkey for the vault: alfa bravo charlie delta echo"
	return append([]int{1}, byteTok{}.Encode(text[:n-1])...)
}

func newGen(t *testing.T, backend compute.Backend, base *llama.Model, m model.Masker, sc *model.Params, ev kvcache.Evictor, chunk int) *Generator {
	t.Helper()
	g, err := NewGenerator(backend, base, m, sc, ev, chunk)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// seenOf is the number of tokens the cache has seen after generating gen from a prompt of n tokens.
func seenOf(c llama.Config, n int, gen []int) int {
	if len(gen) > 0 && c.IsEOS(gen[len(gen)-1]) {
		return n + len(gen) - 1
	}
	return n + len(gen)
}

// TestGenerateFullEqualsRunner: full attention by masked recomputation gives llama.Runner's greedy tokens (with and
// without its KV cache, both checked against transformers elsewhere) and a KV fraction of exactly 1; H2O and TOVA
// with a budget no sequence reaches evict nothing and give the same tokens, at any prefill chunk.
func TestGenerateFullEqualsRunner(t *testing.T) {
	base := tinyBase(t)
	backend, _ := model.NewBackend("go")
	r := llama.NewRunner(backend, base)
	prompt := genPrompt(40)
	const maxNew = 12
	want, err := r.GenerateNoCache(prompt, maxNew)
	if err != nil {
		t.Fatal(err)
	}
	cached, err := r.Generate(prompt, maxNew)
	if err != nil || !slices.Equal(cached, want) {
		t.Fatalf("runner: cached %v, no cache %v (%v)", cached, want, err)
	}
	for _, tc := range []struct {
		name  string
		ev    kvcache.Evictor
		chunk int
	}{{"full", nil, 0}, {"h2o", policy.H2O{Budget: 100, Recent: 50}, 1}, {"h2o", policy.H2O{Budget: 100, Recent: 50}, 16},
		{"tova", policy.TOVA{Budget: 100}, 0}} {
		res, err := newGen(t, backend, base, nil, nil, tc.ev, tc.chunk).Generate(prompt, maxNew)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(res.Tokens, want) {
			t.Fatalf("%s (chunk %d): tokens %v, runner %v", tc.name, tc.chunk, res.Tokens, want)
		}
		if s := seenOf(base.Config, len(prompt), want); res.Seen != s || res.KVFraction != 1 || res.KVTokens != float64(s) {
			t.Fatalf("%s: seen %d kv %v (%v tokens), want seen %d kv 1", tc.name, res.Seen, res.KVFraction, res.KVTokens, s)
		}
	}
}

// refNAtS is a straightforward NAtS reference: the hard mask is built on the host by policy.NAtSMask /
// NAtSChunkMask from the roles the adapter's scorers give (read back from the masker), and the forward pass runs
// under that explicit mask. Roles of layer l depend on the masks of the layers below, so the pass is repeated
// until the roles of every layer are fixed (layers+1 passes). It returns the greedy token after row n−1 and the
// keys kept after it (row n of the mask, itself excluded), mean over layers and KV heads.
type refNAtS struct {
	tr *Trainer
	ex map[int]*Exec
}

func (r *refNAtS) pass(S int, seq []int, masks []float32) (next int, roles []int32, err error) {
	c := r.tr.Base.Config
	nb, ns := len(r.tr.Base.Params.Specs), len(r.tr.Scorers.Specs)
	ex := r.ex[S]
	if ex == nil {
		ex, err = NewExec(r.tr.backend, func(in []*Node) []*Node {
			w := llama.WeightsFrom(c, r.tr.Base.Params.Specs, in[:nb])
			sc, tokens, mk, last := in[nb:nb+ns], in[nb+ns], in[nb+ns+1], in[nb+ns+2]
			var rs []*Node
			h := llama.Forward(c, w, tokens, llama.Options{SkipLogits: true, Mask: func(l int, normed *Node) *Node {
				out := r.tr.Masker.Mask(&model.AttnSite{Cfg: maskerConfig(c), Layer: l, Normed: normed,
					Param: func(string) *Node { return sc[l] }})
				rs = append(rs, out.Roles)
				return Reshape(Slice(mk, AxisRange(l, l+1)), 1, c.NumKVHeads, S, S)
			}}).Hidden
			next, _ := greedyAt(c, w, h, last)
			return []*Node{next, ConvertDType(Stack(rs, 0), dtypes.Int32)}
		})
		if err != nil {
			return 0, nil, err
		}
		r.ex[S] = ex
	}
	ids := make([]int32, S)
	for i, t := range seq {
		ids[i] = int32(t)
	}
	args := []any{}
	for _, v := range r.tr.Base.Params.Values {
		args = append(args, v)
	}
	for _, v := range r.tr.Scorers.Values {
		args = append(args, v)
	}
	args = append(args, tensors.FromFlatDataAndDimensions(ids, 1, S),
		tensors.FromFlatDataAndDimensions(masks, c.NumLayers, c.NumKVHeads, S, S), int32(len(seq)-1))
	out, err := ex.Exec(args...)
	if err != nil {
		return 0, nil, err
	}
	return int(tensors.MustCopyFlatData[int32](out[0])[0]), tensors.MustCopyFlatData[int32](out[1]), nil
}

// step returns the greedy token after seq and the mean kept keys after its last token.
func (r *refNAtS) step(S int, seq []int) (int, float64, error) {
	c := r.tr.Base.Config
	L, H := c.NumLayers, c.NumKVHeads
	cfg := r.tr.Masker.Config()
	n := len(seq)
	masks := make([]float32, L*H*S*S)
	for i := range masks {
		masks[i] = 1 // first pass: no mask; layer l's roles are right after pass l+1
	}
	var next int
	var kept float64
	for p := 0; p <= L; p++ {
		var roles []int32
		var err error
		if next, roles, err = r.pass(S, seq, masks); err != nil {
			return 0, 0, err
		}
		kept = 0
		for l := 0; l < L; l++ {
			for h := 0; h < H; h++ {
				// Roles of the n real tokens, plus a padding query at row n (its own role never matters to it).
				rr := make([]kvcache.Role, n+1)
				for j := 0; j <= n; j++ {
					rr[j] = kvcache.Role(roles[(l*H+h)*S+j])
				}
				rr[0] = kvcache.Global // forced at inference (NATS-SPEC §1.8); the masker does it too
				var m [][]bool
				if cfg.Chunk <= 1 {
					m = policy.NAtSMask(rr, cfg.Window)
				} else {
					cr := make([]kvcache.Role, (n+cfg.Chunk)/cfg.Chunk)
					for k := range cr {
						cr[k] = rr[k*cfg.Chunk]
					}
					m = policy.NAtSChunkMask(cr, n+1, cfg.Window, cfg.Chunk)
				}
				o := (l*H + h) * S * S
				for i := 0; i < S; i++ {
					for j := 0; j < S; j++ {
						v := float32(1)
						if i <= n && j <= n && !m[i][j] {
							v = 0
						}
						masks[o+i*S+j] = v
					}
				}
				kept += float64(policy.RowSum(m, n) - 1)
			}
		}
	}
	return next, kept / float64(L*H), nil
}

// TestGenerateNAtSEqualsReference: NAtS generation with the adapter's scorers (token level and chunks) equals the
// reference that builds the hard mask on the host from the same roles, token for token, with the same kept keys;
// the roles are mixed (something is dropped) so the comparison is not the trivial all-Global one.
func TestGenerateNAtSEqualsReference(t *testing.T) {
	for _, cfg := range []nats.Config{{Lambda: 1e-3, Window: 4, Chunk: 1}, {Lambda: 1e-3, Window: 4, Chunk: 2}} {
		t.Run(fmt.Sprintf("chunk%d", cfg.Chunk), func(t *testing.T) {
			nm, err := nats.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			backend, _ := model.NewBackend("go")
			dc := DefaultConfig()
			dc.Steps = 1
			tr, err := New(backend, tinyBase(t), nm, dc, 3)
			if err != nil {
				t.Fatal(err)
			}
			prompt := genPrompt(30)
			const maxNew = 6
			res, err := newGen(t, tr.backend, tr.Base, nm, tr.Scorers, nil, 0).Generate(prompt, maxNew)
			if err != nil {
				t.Fatal(err)
			}
			ref := &refNAtS{tr: tr, ex: map[int]*Exec{}}
			S := padded(len(prompt) + maxNew + 1)
			seq := slices.Clone(prompt)
			var want []int
			var kept float64
			for len(want) < maxNew {
				next, k, err := ref.step(S, seq)
				if err != nil {
					t.Fatal(err)
				}
				kept = k
				want = append(want, next)
				if tr.Base.Config.IsEOS(next) {
					break
				}
				seq = append(seq, next)
				if len(want) == maxNew {
					_, kept, err = ref.step(S, seq)
					if err != nil {
						t.Fatal(err)
					}
				}
			}
			if !slices.Equal(res.Tokens, want) {
				t.Fatalf("tokens %v, reference %v", res.Tokens, want)
			}
			if res.Seen != len(seq) || math.Abs(res.KVTokens-kept) > 1e-4 {
				t.Fatalf("seen %d kept %v, reference seen %d kept %v", res.Seen, res.KVTokens, len(seq), kept)
			}
			full, err := newGen(t, tr.backend, tr.Base, nil, nil, nil, 0).Generate(prompt, maxNew)
			if err != nil {
				t.Fatal(err)
			}
			if slices.Equal(full.Tokens, res.Tokens) {
				t.Fatalf("nats gives full attention's tokens %v: the comparison cannot tell masks apart", full.Tokens)
			}
			if !(res.KVFraction > 0 && res.KVFraction < 0.9) {
				t.Fatalf("kv fraction %v: the random scorers should drop keys", res.KVFraction)
			}
			t.Logf("tokens %v, kv %.3f (%.2f of %d)", res.Tokens, res.KVFraction, res.KVTokens, res.Seen)
		})
	}
}

// TestGenerateStreamingLLM: StreamingLLM through its mask (model.SinkWindow) equals StreamingLLM through the
// simulated cache (policy.StreamingLLM evictor, prompt token by token), which also checks the evictor route's
// masks; the KV fraction is the hand count (budget − 1 keys kept of the tokens seen); and the budget is small
// enough to change the tokens against full attention.
func TestGenerateStreamingLLM(t *testing.T) {
	base := tinyBase(t)
	backend, _ := model.NewBackend("go")
	prompt := genPrompt(40)
	const maxNew = 10
	const sinks, budget = 2, 8
	viaMask, err := newGen(t, backend, base, model.SinkWindow{Sinks: sinks, Budget: budget}, nil, nil, 0).Generate(prompt, maxNew)
	if err != nil {
		t.Fatal(err)
	}
	viaCache, err := newGen(t, backend, base, nil, nil, policy.StreamingLLM{Sinks: sinks, Budget: budget}, 1).Generate(prompt, maxNew)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(viaMask.Tokens, viaCache.Tokens) || viaMask.KVTokens != viaCache.KVTokens || viaMask.Seen != viaCache.Seen {
		t.Fatalf("mask %+v, cache %+v", viaMask, viaCache)
	}
	for i := range viaMask.Logits { // the logits tell apart masks that happen to give the same tokens
		if math.Abs(float64(viaMask.Logits[i]-viaCache.Logits[i])) > 1e-4 {
			t.Fatalf("step %d: logit %v through the mask, %v through the cache", i, viaMask.Logits[i], viaCache.Logits[i])
		}
	}
	seen := seenOf(base.Config, len(prompt), viaMask.Tokens)
	if viaMask.Seen != seen || viaMask.KVTokens != budget-1 || math.Abs(viaMask.KVFraction-float64(budget-1)/float64(seen)) > 1e-12 {
		t.Fatalf("seen %d kept %v fraction %v, want %d, %d, %v", viaMask.Seen, viaMask.KVTokens, viaMask.KVFraction, seen, budget-1,
			float64(budget-1)/float64(seen))
	}
	full, err := newGen(t, backend, base, nil, nil, nil, 0).Generate(prompt, maxNew)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Equal(full.Tokens, viaMask.Tokens) {
		t.Fatalf("budget %d gives full attention's tokens %v: the test cannot tell the masks apart", budget, full.Tokens)
	}
	// H2O and TOVA at the same budget keep budget−1 keys too, and the prefill chunk changes only what the prompt's
	// queries see (the engine's chunked semantics), not the count.
	for _, ev := range []kvcache.Evictor{policy.H2O{Budget: budget, Recent: 3}, policy.TOVA{Budget: budget}} {
		for _, chunk := range []int{1, 16} {
			res, err := newGen(t, backend, base, nil, nil, ev, chunk).Generate(prompt, maxNew)
			if err != nil {
				t.Fatal(err)
			}
			if res.KVTokens != budget-1 || res.Seen != seenOf(base.Config, len(prompt), res.Tokens) {
				t.Fatalf("%T chunk %d: kept %v seen %d", ev, chunk, res.KVTokens, res.Seen)
			}
		}
	}
}
