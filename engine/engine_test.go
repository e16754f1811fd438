package engine

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"github.com/gomlx/compute"
	"github.com/gomlx/gomlx/core/tensors"

	"natsbench/kvcache"
	"natsbench/model"
	"natsbench/nats"
	"natsbench/policy"
)

func tiny() model.Config {
	return model.Config{VocabSize: 40, DModel: 16, NLayers: 2, NHeads: 4, NKVHeads: 2, FFNMult: 2, MaxSeqLen: 64,
		RopeTheta: 500000, RopeScaling: "llama3", DType: "float32"}
}

var (
	backendOnce sync.Once
	backendVal  compute.Backend
	backendErr  error
)

func testBackend(t testing.TB) compute.Backend {
	backendOnce.Do(func() { backendVal, backendErr = model.NewBackend("go") })
	if backendErr != nil {
		t.Fatal(backendErr)
	}
	return backendVal
}

// testParams returns random weights; NAtS scorers are scaled up so that the roles vary (as in evaluate's tests).
func testParams(cfg model.Config, m model.Masker, seed uint64) *model.Params {
	p := model.NewParams(model.Specs(cfg, m), seed)
	for i, s := range p.Specs {
		if strings.HasSuffix(s.Name, "nats/scorer") {
			d := p.Flat(i)
			for k := range d {
				d[k] *= 150
			}
			p.Values[i] = tensors.FromFlatDataAndDimensions(d, s.Dims...)
		}
	}
	return p
}

func randTokens(r *rand.Rand, b, n, vocab int) [][]int32 {
	out := make([][]int32, b)
	for i := range out {
		out[i] = make([]int32, n)
		for j := range out[i] {
			out[i][j] = int32(r.IntN(vocab))
		}
	}
	return out
}

// method is a cache policy under test.
type method struct {
	name    string
	masker  model.Masker // for the forward reference and the roles
	evictor kvcache.Evictor
	chunks  []int
}

func mustNAtS(t testing.TB, c nats.Config) *nats.Masker {
	m, err := nats.New(c)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func methods(t testing.TB) []method {
	return []method{
		{"full", nil, nil, []int{1, 3, 8}},
		{"streamingllm", model.SinkWindow{Sinks: 2, Budget: 7}, policy.StreamingLLM{Sinks: 2, Budget: 7}, []int{1, 3, 8}},
		{"nats-token", mustNAtS(t, nats.Config{Window: 3, Chunk: 1, GlobalBonus: 0.1}), policy.NAtS{Window: 3, Chunk: 1}, []int{1, 3, 8}},
		{"nats-chunk2", mustNAtS(t, nats.Config{Window: 4, Chunk: 2, GlobalBonus: 0.1}), policy.NAtS{Window: 4, Chunk: 2}, []int{2, 4, 6}},
		{"nats-chunk4-max", mustNAtS(t, nats.Config{Window: 4, Chunk: 4, Merge: "max", GlobalBonus: 0.1}), policy.NAtS{Window: 4, Chunk: 4}, []int{4, 8}},
	}
}

// TestEngineEqualsMaskedForward: for every policy with an equivalent mask, the engine's logits at every prompt
// position (chunked prefill) and every decoded step equal the masked full forward pass over the whole sequence
// within 1e-4, and the greedy tokens are the forward pass's argmax.
func TestEngineEqualsMaskedForward(t *testing.T) { checkEqualsForward(t, testBackend(t), 1e-4) }

func checkEqualsForward(t *testing.T, backend compute.Backend, tol float64) {
	cfg := tiny()
	const B, P, N = 2, 21, 9
	for _, m := range methods(t) {
		t.Run(m.name, func(t *testing.T) {
			params := testParams(cfg, m.masker, 3)
			prompt := randTokens(rand.New(rand.NewPCG(5, 5)), B, P, cfg.VocabSize)
			fwdMasker := m.masker
			inf := model.NewInference(backend, cfg, fwdMasker, params)
			varied := map[int32]bool{}
			for _, chunk := range m.chunks {
				e, err := New(backend, cfg, m.masker, m.evictor, params, Options{AllLogits: true, Staging: 4, MaxUpdates: 3})
				if err != nil {
					t.Fatal(err)
				}
				e.checkSlots = true
				pr, err := e.Prefill(prompt, chunk)
				if err != nil {
					t.Fatal(err)
				}
				dr, err := e.Decode(N)
				if err != nil {
					t.Fatal(err)
				}
				// The full sequence: prompt + emitted tokens; the forward pass's logits at P−1+k predict token k.
				seq := make([]int32, 0, B*(P+N))
				for b := 0; b < B; b++ {
					if len(dr.Tokens[b]) != N {
						t.Fatalf("chunk %d row %d: %d tokens, want %d", chunk, b, len(dr.Tokens[b]), N)
					}
					seq = append(seq, prompt[b]...)
					seq = append(seq, dr.Tokens[b]...)
				}
				S := P + N
				logits, roles, err := inf.Forward(seq, B, S)
				if err != nil {
					t.Fatal(err)
				}
				for _, r := range roles {
					for _, x := range r {
						varied[x] = true
					}
				}
				V := cfg.VocabSize
				for b := 0; b < B; b++ {
					for i := 0; i < P; i++ {
						want := logits[(b*S+i)*V : (b*S+i+1)*V]
						got := pr.Logits[(b*P+i)*V : (b*P+i+1)*V]
						if d := maxDiff(got, want); d > tol {
							t.Fatalf("chunk %d row %d prompt position %d: max |Δlogit| = %g", chunk, b, i, d)
						}
					}
					for k := 0; k < N; k++ {
						if want := argmax(logits[(b*S+P-1+k)*V : (b*S+P+k)*V]); dr.Tokens[b][k] != want {
							t.Fatalf("chunk %d row %d: decoded token %d is %d, forward argmax %d", chunk, b, k, dr.Tokens[b][k], want)
						}
					}
					want := logits[(b*S+S-1)*V : (b*S+S)*V]
					if d := maxDiff(dr.Logits[b*V:(b+1)*V], want); d > tol {
						t.Fatalf("chunk %d row %d: last decode logits max |Δ| = %g", chunk, b, d)
					}
				}
				checkTable(t, e, m.evictor)
				// The engine's decision counts (RoleRates) are the forward pass's roles at the end of every complete
				// chunk after the first, exactly.
				if strings.HasPrefix(m.name, "nats") {
					var flat []int32
					for _, r := range roles {
						flat = append(flat, r...)
					}
					want, got := e.roleRates(flat, B, S, S), e.RoleRates()
					if len(got) != len(want) {
						t.Fatalf("chunk %d: RoleRates %v, forward %v", chunk, got, want)
					}
					for l := range want {
						if got[l] != want[l] {
							t.Fatalf("chunk %d layer %d: engine decided %v, forward roles %v", chunk, l, got[l], want[l])
						}
					}
				} else if e.RoleRates() != nil {
					t.Fatalf("%s: RoleRates %v, want nil", m.name, e.RoleRates())
				}
			}
			if strings.HasPrefix(m.name, "nats") && len(varied) < 3 {
				t.Fatalf("roles did not vary enough (%v): test is vacuous", varied)
			}
		})
	}
}

// TestDecodeStepsEqualForward checks every decoding step's logits (teacher forcing through Step) against the
// masked forward, with a small staging area so that commits and growth happen often.
func TestDecodeStepsEqualForward(t *testing.T) {
	cfg := tiny()
	backend := testBackend(t)
	const B, P, N = 1, 7, 30
	for _, m := range methods(t) {
		t.Run(m.name, func(t *testing.T) {
			params := testParams(cfg, m.masker, 11)
			seq := randTokens(rand.New(rand.NewPCG(9, 1)), B, P+N, cfg.VocabSize)
			logits, _, err := model.NewInference(backend, cfg, m.masker, params).Forward(seq[0], 1, P+N)
			if err != nil {
				t.Fatal(err)
			}
			// MaxUpdates 1: the steps often queue more than one change per row and upload the whole mask instead;
			// 64: the queued changes always travel as a list.
			for _, maxUpd := range []int{1, 64} {
				e, err := New(backend, cfg, m.masker, m.evictor, params, Options{Staging: 3, MaxUpdates: maxUpd})
				if err != nil {
					t.Fatal(err)
				}
				chunk := m.chunks[len(m.chunks)-1]
				if _, err := e.Prefill([][]int32{seq[0][:P]}, chunk); err != nil {
					t.Fatal(err)
				}
				V := cfg.VocabSize
				commits := 0
				for i := P; i < P+N; i++ {
					so, err := e.Step([]int32{seq[0][i]})
					if err != nil {
						t.Fatal(err)
					}
					if so.CommitSeconds < 0 || so.CommitSeconds > so.Seconds {
						t.Fatalf("position %d: commit %g s of a %g s step", i, so.CommitSeconds, so.Seconds)
					}
					if so.CommitSeconds > 0 {
						commits++
					}
					if d := maxDiff(so.Logits, logits[i*V:(i+1)*V]); d > 1e-4 {
						t.Fatalf("position %d: max |Δlogit| = %g", i, d)
					}
				}
				if commits < N/3-1 { // staging of 3 slots: a commit every 3 steps
					t.Fatalf("%d of %d steps report commit time, want about every third", commits, N)
				}
				if e.destCommits == 0 && (m.name == "full" || m.name == "streamingllm") {
					t.Fatalf("no commit took the device-side path (commitDest): the test does not exercise it")
				}
				t.Logf("%d commits, %d on the device-side path, %d growths; %d steps uploaded the whole mask", commits, e.destCommits, e.stepGrowths, e.fullMasks)
				if e.stepGrowths == 0 && (m.name == "full" || strings.HasPrefix(m.name, "nats")) {
					t.Fatalf("no decoding step grew the cache: the test does not exercise growth after a step")
				}
				if maxUpd == 64 && e.fullMasks > 0 {
					t.Fatalf("MaxUpdates 64: %d steps uploaded the whole mask", e.fullMasks)
				}
				if maxUpd == 1 && strings.HasPrefix(m.name, "nats") && e.fullMasks == 0 { // a Global token frees its row's Local ones
					t.Fatalf("MaxUpdates 1: no step uploaded the whole mask: the test does not exercise it")
				}
				checkTable(t, e, m.evictor)
			}
		})
	}
}

// checkTable: no row holds more than its capacity, positions are distinct, and for NAtS every Global slot of the
// history is still there.
func checkTable(t *testing.T, e *Engine, ev kvcache.Evictor) {
	t.Helper()
	for li, l := range e.Table() {
		if l.Cap != e.Cap() {
			t.Fatalf("layer %d: table capacity %d, device %d", li, l.Cap, e.Cap())
		}
		for b := 0; b < l.B; b++ {
			for h := 0; h < l.H; h++ {
				s := l.View(b, h)
				seen := map[int32]bool{}
				for _, p := range s.Pos {
					if p >= 0 {
						if seen[p] {
							t.Fatalf("layer %d (b %d, h %d): position %d held twice", li, b, h, p)
						}
						seen[p] = true
						if int(p) >= e.Len() {
							t.Fatalf("layer %d: position %d beyond the history %d", li, p, e.Len())
						}
					}
				}
				if ev == nil && len(seen) != e.Len() {
					t.Fatalf("full attention keeps %d of %d tokens", len(seen), e.Len())
				}
			}
		}
	}
}

// TestChunkedPrefillEqualsTokenByToken: for every policy (H2O and TOVA included) prefill with chunk 1 leaves the
// same slot table and gives the same logits as prefill of a token followed by decoding steps; for H2O/TOVA the
// result also equals evaluate-style streaming through model.Decoder (independent implementation).
func TestChunkedPrefillEqualsTokenByToken(t *testing.T) {
	cfg := tiny()
	backend := testBackend(t)
	ms := append(methods(t),
		method{"h2o", nil, policy.H2O{Budget: 6, Recent: 3}, []int{1}},
		method{"tova", nil, policy.TOVA{Budget: 5}, []int{1}})
	const P = 19
	for _, m := range ms {
		t.Run(m.name, func(t *testing.T) {
			params := testParams(cfg, m.masker, 4)
			prompt := randTokens(rand.New(rand.NewPCG(2, 8)), 2, P, cfg.VocabSize)
			// Reference: decoding steps over the prompt through model.Decoder and kvcache.Cache.
			ref := refDecode(t, backend, cfg, m, params, prompt)
			V := cfg.VocabSize
			for _, C := range m.chunks {
				a, err := New(backend, cfg, m.masker, m.evictor, params, Options{AllLogits: true})
				if err != nil {
					t.Fatal(err)
				}
				a.checkSlots = true // every commitDelta: the device's slot table equals the host's
				pa, err := a.Prefill(prompt, C)
				if err != nil {
					t.Fatal(err)
				}
				if m.evictor == nil || m.masker != nil { // the fast table's policies
					if pa.Chunks > 1 && a.deltaCommits == 0 {
						t.Fatalf("chunk %d: no prefill commit sent only the changed slots (commitDelta): the test does not exercise it", C)
					}
				}
				for b := range prompt {
					for i := 0; i < P; i++ {
						if d := maxDiff(pa.Logits[(b*P+i)*V:(b*P+i+1)*V], ref.logits[b][i]); d > 1e-4 {
							t.Fatalf("row %d position %d: prefill (chunk %d) vs model.Decoder max |Δlogit| = %g", b, i, C, d)
						}
					}
				}
				for li, l := range a.Table() {
					for b := 0; b < l.B; b++ {
						for h := 0; h < l.H; h++ {
							got := rowPositions(a.tab, (li*l.B+b)*l.H+h)
							want := ref.kept[li][b*l.H+h]
							if fmt.Sprint(got) != fmt.Sprint(want) {
								t.Fatalf("layer %d b %d h %d: engine keeps %v, kvcache %v", li, b, h, got, want)
							}
						}
					}
				}
			}
		})
	}
}

type refResult struct {
	logits [][][]float32 // [b][pos][vocab]
	kept   [][][]int32   // [layer][b·H+h] sorted positions
}

// refDecode feeds the prompt token by token through model.Decoder with a kvcache.Cache (the evaluate package's
// protocol), keeping every step's logits.
func refDecode(t *testing.T, backend compute.Backend, cfg model.Config, m method, params *model.Params, prompt [][]int32) refResult {
	t.Helper()
	B, P := len(prompt), len(prompt[0])
	L, H := cfg.NLayers, cfg.KVHeads()
	dec := model.NewDecoder(backend, cfg, m.masker, params)
	capacity := P
	if m.evictor != nil {
		capacity = m.evictor.Capacity(P)
	}
	capacity = kvcache.Bucket(capacity)
	kv, err := kvcache.New(L, B, H, capacity, m.evictor)
	if err != nil {
		t.Fatal(err)
	}
	dc := dec.NewCache(B, capacity)
	valid := make([]bool, L*B*H*capacity)
	res := refResult{logits: make([][][]float32, B)}
	tok := make([]int32, B)
	for i := 0; i < P; i++ {
		for b := range prompt {
			tok[b] = prompt[b][i]
		}
		slots, err := kv.Begin()
		if err != nil {
			t.Fatal(err)
		}
		for l, layer := range kv.Layers {
			layer.ValidBool(valid[l*B*H*capacity : (l+1)*B*H*capacity])
		}
		out, err := dec.StepTargets(dc, tok, nil, i, slots, valid)
		if err != nil {
			t.Fatal(err)
		}
		st := kv.Stats()
		for l := range st.Attn {
			copy(st.Attn[l], out.Attn[l*B*H*capacity:(l+1)*B*H*capacity])
		}
		for l := range st.Roles {
			for k := range st.Roles[l] {
				st.Roles[l][k] = uint8(out.Roles[l*B*H+k])
			}
		}
		if err := kv.End(); err != nil {
			t.Fatal(err)
		}
		V := cfg.VocabSize
		for b := range prompt {
			res.logits[b] = append(res.logits[b], out.Logits[b*V:(b+1)*V])
		}
	}
	res.kept = make([][][]int32, L)
	for li, l := range kv.Layers {
		for b := 0; b < B; b++ {
			for h := 0; h < H; h++ {
				var ps []int32
				for _, p := range l.View(b, h).Pos {
					if p >= 0 {
						ps = append(ps, p)
					}
				}
				sortInt32(ps)
				res.kept[li] = append(res.kept[li], ps)
			}
		}
	}
	return res
}

// TestH2OChunkedPrefill: with chunk > 1 H2O and TOVA run (the documented approximation), respect their budget
// after every token, and decode afterwards.
func TestH2OChunkedPrefill(t *testing.T) {
	cfg := tiny()
	backend := testBackend(t)
	for _, ev := range []kvcache.Evictor{policy.H2O{Budget: 6, Recent: 3}, policy.TOVA{Budget: 5}} {
		params := testParams(cfg, nil, 6)
		e, err := New(backend, cfg, nil, ev, params, Options{Staging: 4})
		if err != nil {
			t.Fatal(err)
		}
		prompt := randTokens(rand.New(rand.NewPCG(3, 3)), 2, 23, cfg.VocabSize)
		if _, err := e.Prefill(prompt, 8); err != nil {
			t.Fatal(err)
		}
		if _, err := e.Decode(12); err != nil {
			t.Fatal(err)
		}
		budget := ev.Capacity(1 << 20)
		for _, l := range e.Table() {
			for b := 0; b < l.B; b++ {
				for h := 0; h < l.H; h++ {
					if n := l.Occupied(b, h); n > budget-1 {
						t.Fatalf("%T keeps %d slots after a step, budget %d", ev, n, budget)
					}
				}
			}
		}
		if e.Cap() != kvcache.Bucket(budget) {
			t.Fatalf("%T: capacity %d, want %d", ev, e.Cap(), kvcache.Bucket(budget))
		}
	}
}

// TestBadInput: clear errors before any work.
func TestBadInput(t *testing.T) {
	cfg := tiny()
	backend := testBackend(t)
	params := testParams(cfg, nil, 1)
	e, err := New(backend, cfg, nil, nil, params, Options{})
	if err != nil {
		t.Fatal(err)
	}
	long := randTokens(rand.New(rand.NewPCG(1, 1)), 1, cfg.MaxSeqLen+1, cfg.VocabSize)
	if _, err := e.Prefill(long, 8); err == nil || !strings.Contains(err.Error(), "max_seq_len") {
		t.Fatalf("long prompt: %v", err)
	}
	if _, err := e.Prefill([][]int32{{1, 2}, {1}}, 8); err == nil || !strings.Contains(err.Error(), "equal length") {
		t.Fatalf("ragged batch: %v", err)
	}
	if _, err := e.Prefill([][]int32{{1, 99}}, 8); err == nil || !strings.Contains(err.Error(), "vocabulary") {
		t.Fatalf("token out of range: %v", err)
	}
	if _, err := e.Prefill([][]int32{{1, 2}}, 0); err == nil || !strings.Contains(err.Error(), "chunk") {
		t.Fatalf("chunk 0: %v", err)
	}
	if _, err := e.Decode(3); err == nil || !strings.Contains(err.Error(), "before Prefill") {
		t.Fatalf("decode before prefill: %v", err)
	}
	for _, ev := range []kvcache.Evictor{policy.StreamingLLM{Sinks: 0, Budget: 0}, policy.H2O{Budget: 0, Recent: 0}, policy.TOVA{Budget: -1}} {
		if _, err := New(backend, cfg, nil, ev, params, Options{}); err == nil || !strings.Contains(err.Error(), "Budget") {
			t.Fatalf("%T with a budget ≤ 0: %v", ev, err)
		}
	}
	nm := mustNAtS(t, nats.Config{Window: 4, Chunk: 2})
	if _, err := New(backend, cfg, nm, policy.NAtS{Window: 8, Chunk: 2}, testParams(cfg, nm, 1), Options{}); err == nil || !strings.Contains(err.Error(), "disagrees") {
		t.Fatalf("mismatched NAtS window: %v", err)
	}
	if _, err := New(backend, cfg, nil, policy.NAtS{Window: 4}, params, Options{}); err == nil || !strings.Contains(err.Error(), "masker") {
		t.Fatalf("NAtS without masker: %v", err)
	}
	if _, err := New(backend, cfg, nm, nil, params, Options{}); err == nil || !strings.Contains(err.Error(), "parameter") {
		t.Fatalf("params without scorers: %v", err)
	}
	en, _ := New(backend, cfg, nm, policy.NAtS{Window: 4, Chunk: 2}, testParams(cfg, nm, 1), Options{})
	if _, err := en.Prefill([][]int32{{1, 2, 3}}, 3); err == nil || !strings.Contains(err.Error(), "multiple") {
		t.Fatalf("NAtS chunk not a multiple of C: %v", err)
	}
	eh, _ := New(backend, cfg, nil, policy.H2O{Budget: 8, Recent: 4}, params, Options{})
	if _, err := eh.Prefill(randTokens(rand.New(rand.NewPCG(1, 3)), 1, 4, cfg.VocabSize), 1<<20); err != nil {
		t.Fatalf("H2O prefill with a chunk longer than the prompt: %v", err)
	}
	cfg2 := cfg
	cfg2.MaxSeqLen = 1 << 16
	eh2, _ := New(backend, cfg2, nil, policy.H2O{Budget: 8, Recent: 4}, params, Options{})
	if _, err := eh2.Prefill(randTokens(rand.New(rand.NewPCG(1, 3)), 1, 1<<15, cfg.VocabSize), 1<<15); err == nil || !strings.Contains(err.Error(), "smaller chunk") {
		t.Fatalf("H2O prefill with a huge chunk: %v", err)
	}
	// Memory: full attention over 40 tokens needs a 64-slot cache, twice while a commit copies it.
	lim := 2*e.cacheBytes(1, 64) - 1
	em, _ := New(backend, cfg, nil, nil, params, Options{MemLimitBytes: lim, MaxNewTokens: 20})
	if _, err := em.Prefill(randTokens(rand.New(rand.NewPCG(1, 2)), 1, 20, cfg.VocabSize), 8); err == nil || !strings.Contains(err.Error(), "MemLimitBytes") {
		t.Fatalf("memory limit: %v", err)
	}
	if err := em.CheckFits(1, 20, 8); err == nil || !strings.Contains(err.Error(), "MemLimitBytes") {
		t.Fatalf("CheckFits over the memory limit: %v", err)
	}
	if err := em.CheckFits(1, cfg.MaxSeqLen, 8); err == nil || !strings.Contains(err.Error(), "max_seq_len") {
		t.Fatalf("CheckFits past max_seq_len: %v", err)
	}
	if err := em.CheckFits(0, 20, 8); err == nil {
		t.Fatal("CheckFits with batch 0: no error")
	}
	// The same limit is enough for StreamingLLM (budget 7: a 16-slot cache).
	es, _ := New(backend, cfg, nil, policy.StreamingLLM{Sinks: 2, Budget: 7}, params, Options{MemLimitBytes: lim, MaxNewTokens: 20})
	if err := es.CheckFits(1, 20, 8); err != nil {
		t.Fatalf("CheckFits for StreamingLLM under the limit: %v", err)
	}
	if _, err := es.Prefill(randTokens(rand.New(rand.NewPCG(1, 2)), 1, 20, cfg.VocabSize), 8); err != nil {
		t.Fatal(err)
	}
	if _, err := es.Decode(cfg.MaxSeqLen); err == nil || !strings.Contains(err.Error(), "max_seq_len") {
		t.Fatalf("decode past max_seq_len: %v", err)
	}
	// NAtS grows on demand: a limit below the first growth is reported when the growth is needed.
	enm, _ := New(backend, cfg, nm, policy.NAtS{Window: 4, Chunk: 2}, globalParams(cfg, nm), Options{MemLimitBytes: 2*e.cacheBytes(1, 16) + 2*2*2*2*4*4})
	if _, err := enm.Prefill(randTokens(rand.New(rand.NewPCG(4, 2)), 1, 40, cfg.VocabSize), 2); err == nil || !errors.Is(err, err) || !strings.Contains(err.Error(), "growing") {
		t.Fatalf("NAtS growth over the limit: %v", err)
	}
}

// globalParams makes every NAtS token Global (scorer zero: the Global bonus decides).
func globalParams(cfg model.Config, m model.Masker) *model.Params {
	p := model.NewParams(model.Specs(cfg, m), 1)
	for i, s := range p.Specs {
		if strings.HasSuffix(s.Name, "nats/scorer") {
			p.Values[i] = tensors.FromFlatDataAndDimensions(make([]float32, s.Size()), s.Dims...)
		}
	}
	return p
}

// TestEOS: decoding stops when every row has emitted an EOS token.
func TestEOS(t *testing.T) {
	cfg := tiny()
	backend := testBackend(t)
	params := testParams(cfg, nil, 2)
	e, _ := New(backend, cfg, nil, nil, params, Options{})
	prompt := randTokens(rand.New(rand.NewPCG(7, 7)), 1, 5, cfg.VocabSize)
	if _, err := e.Prefill(prompt, 4); err != nil {
		t.Fatal(err)
	}
	free, err := e.Decode(6)
	if err != nil {
		t.Fatal(err)
	}
	eos := free.Tokens[0][2]
	e.Options.EOS = []int32{eos}
	if _, err := e.Prefill(prompt, 4); err != nil {
		t.Fatal(err)
	}
	got, err := e.Decode(6)
	if err != nil {
		t.Fatal(err)
	}
	k := 0
	for free.Tokens[0][k] != eos {
		k++
	}
	if len(got.Tokens[0]) != k+1 || len(got.StepSeconds) != k {
		t.Fatalf("EOS %d: got tokens %v (%d steps), free run %v", eos, got.Tokens[0], len(got.StepSeconds), free.Tokens[0])
	}
}

func maxDiff(a, b []float32) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	m := 0.0
	for i := range a {
		m = max(m, math.Abs(float64(a[i]-b[i])))
	}
	return m
}

func argmax(x []float32) int32 {
	k := 0
	for i, v := range x {
		if v > x[k] {
			k = i
		}
	}
	return int32(k)
}

func sortInt32(x []int32) {
	for i := 1; i < len(x); i++ {
		for j := i; j > 0 && x[j] < x[j-1]; j-- {
			x[j], x[j-1] = x[j-1], x[j]
		}
	}
}

// TestFullCapacityIsTight: full attention sizes its buffers to prompt + MaxNewTokens rounded up to 1024 slots (a
// power of two would nearly double them past 1024 tokens), decoding through such a capacity still equals the
// forward pass, and a memory limit that holds exactly those buffers (plus a prefill chunk) lets Prefill and Decode
// run (Decode's check once assumed a power of two).
func TestFullCapacityIsTight(t *testing.T) {
	for _, c := range []struct{ n, want int }{{1, 16}, {1000, 1024}, {1024, 1024}, {1025, 2048}, {3000, 3072}, {32832, 33792}} {
		if got := boundCap(c.n); got != c.want {
			t.Errorf("boundCap(%d) = %d, want %d", c.n, got, c.want)
		}
	}
	cfg := tiny()
	cfg.NLayers, cfg.MaxSeqLen = 1, 2200
	backend := testBackend(t)
	params := testParams(cfg, nil, 5)
	const P, N, chunk = 2100, 4, 512 // 2104 tokens: 3072 slots, where a power of two gives 4096
	seq := randTokens(rand.New(rand.NewPCG(4, 2)), 1, P+N, cfg.VocabSize)
	logits, _, err := model.NewInference(backend, cfg, nil, params).Forward(seq[0], 1, P+N)
	if err != nil {
		t.Fatal(err)
	}
	probe, err := New(backend, cfg, nil, nil, params, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := probe.init(); err != nil {
		t.Fatal(err)
	}
	lim := 2*probe.cacheBytes(1, 3072) + 2*int64(cfg.NLayers)*int64(cfg.KVHeads())*chunk*int64(cfg.HeadDim())*probe.elemBytes()
	e, err := New(backend, cfg, nil, nil, params, Options{MaxNewTokens: N, MemLimitBytes: lim})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.CheckFits(1, P, chunk); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Prefill([][]int32{seq[0][:P]}, chunk); err != nil {
		t.Fatal(err)
	}
	if e.Cap() != 3072 {
		t.Fatalf("full attention, %d + %d tokens: capacity %d, want 3072", P, N, e.Cap())
	}
	V := cfg.VocabSize
	for i := P; i < P+N-1; i++ {
		so, err := e.Step([]int32{seq[0][i]})
		if err != nil {
			t.Fatal(err)
		}
		if d := maxDiff(so.Logits, logits[i*V:(i+1)*V]); d > 1e-4 {
			t.Fatalf("position %d: max |Δlogit| = %g", i, d)
		}
	}
	dr, err := e.Decode(1) // the last of the MaxNewTokens
	if err != nil {
		t.Fatalf("Decode within MaxNewTokens under a limit that holds the buffers: %v", err)
	}
	if dr.CommitSeconds != 0 {
		t.Fatalf("a step without a commit reports %g s of committing", dr.CommitSeconds)
	}
	if e.Cap() != 3072 {
		t.Fatalf("capacity grew to %d while decoding within MaxNewTokens", e.Cap())
	}
	checkTable(t, e, nil)
}

// TestNAtSGrowthSteps: a NAtS cache grows in kvcache.BucketSteps buckets. With every token Global (only the
// Global role enabled) 1100 + 4 tokens need 1104 slots: 1280 with the default 4 steps per doubling, 2048 with
// powers of two (GrowthSteps 1). Both decode the masked forward pass's logits, and a memory limit that holds
// 1280 slots but not 2048 lets the first run and stops the second with an error naming the growth.
func TestNAtSGrowthSteps(t *testing.T) {
	cfg := tiny()
	cfg.NLayers, cfg.MaxSeqLen = 1, 1200
	backend := testBackend(t)
	m := mustNAtS(t, nats.Config{Window: 4, Chunk: 1, Roles: []string{"global"}})
	params := testParams(cfg, m, 6)
	const P, N, chunk = 1100, 4, 256
	seq := randTokens(rand.New(rand.NewPCG(6, 3)), 1, P+N, cfg.VocabSize)
	logits, _, err := model.NewInference(backend, cfg, m, params).Forward(seq[0], 1, P+N)
	if err != nil {
		t.Fatal(err)
	}
	probe, err := New(backend, cfg, m, policy.NAtS{Window: 4, Chunk: 1}, params, Options{})
	if err != nil {
		t.Fatal(err)
	}
	lim := 2*probe.cacheBytes(1, 1280) + 2*int64(cfg.NLayers)*int64(cfg.KVHeads())*chunk*int64(cfg.HeadDim())*probe.elemBytes()
	V := cfg.VocabSize
	for _, c := range []struct{ steps, want int }{{0, 1280}, {4, 1280}, {1, 2048}, {64, 1104}} {
		e, err := New(backend, cfg, m, policy.NAtS{Window: 4, Chunk: 1}, params, Options{GrowthSteps: c.steps, Staging: 2})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.Prefill([][]int32{seq[0][:P]}, chunk); err != nil {
			t.Fatal(err)
		}
		for i := P; i < P+N; i++ {
			so, err := e.Step([]int32{seq[0][i]})
			if err != nil {
				t.Fatal(err)
			}
			if d := maxDiff(so.Logits, logits[i*V:(i+1)*V]); d > 1e-4 {
				t.Fatalf("GrowthSteps %d, position %d: max |Δlogit| = %g", c.steps, i, d)
			}
		}
		if e.Cap() != c.want {
			t.Fatalf("GrowthSteps %d: %d tokens kept in capacity %d, want %d", c.steps, P+N, e.Cap(), c.want)
		}
		checkTable(t, e, policy.NAtS{Window: 4, Chunk: 1})

		e, err = New(backend, cfg, m, policy.NAtS{Window: 4, Chunk: 1}, params, Options{GrowthSteps: c.steps, MemLimitBytes: lim})
		if err != nil {
			t.Fatal(err)
		}
		_, err = e.Prefill([][]int32{seq[0][:P]}, chunk)
		switch {
		case c.want <= 1280 && err != nil:
			t.Fatalf("GrowthSteps %d under a limit for 1280 slots: %v", c.steps, err)
		case c.want > 1280 && (err == nil || !strings.Contains(err.Error(), "growing the cache to 2048 slots")):
			t.Fatalf("GrowthSteps %d under a limit for 1280 slots: err = %v, want the growth to 2048 refused", c.steps, err)
		}
	}
	if _, err := New(backend, cfg, m, policy.NAtS{Window: 4, Chunk: 1}, params, Options{GrowthSteps: 3}); err == nil || !strings.Contains(err.Error(), "GrowthSteps = 3") {
		t.Fatalf("GrowthSteps 3: err = %v, want it refused by name", err)
	}
}

// TestFullDecodeGrowthCheck: Decode past full attention's first allocation checks the memory limit against what
// growth allocates (kvcache.BucketSteps: 1,280 slots for 1,100 tokens), not a power of two (2,048): under a limit
// for 1,280 slots 100 tokens decode after a 1,000-token prompt, and the capacity is 1,280.
func TestFullDecodeGrowthCheck(t *testing.T) {
	cfg := tiny()
	cfg.NLayers, cfg.MaxSeqLen = 1, 1200
	backend := testBackend(t)
	params := testParams(cfg, nil, 7)
	probe, err := New(backend, cfg, nil, nil, params, Options{})
	if err != nil {
		t.Fatal(err)
	}
	const P, N, chunk = 1000, 100, 250
	lim := 2*probe.cacheBytes(1, 1280) + 2*int64(cfg.NLayers)*int64(cfg.KVHeads())*chunk*int64(cfg.HeadDim())*probe.elemBytes()
	e, err := New(backend, cfg, nil, nil, params, Options{MemLimitBytes: lim})
	if err != nil {
		t.Fatal(err)
	}
	prompt := randTokens(rand.New(rand.NewPCG(7, 1)), 1, P, cfg.VocabSize)
	if _, err := e.Prefill(prompt, chunk); err != nil {
		t.Fatal(err)
	}
	if e.Cap() != 1024 {
		t.Fatalf("first allocation %d slots, want 1024", e.Cap())
	}
	if _, err := e.Decode(N); err != nil {
		t.Fatalf("Decode(%d) under a limit for 1280 slots: %v", N, err)
	}
	if e.Cap() != 1280 {
		t.Fatalf("capacity %d after %d tokens, want 1280", e.Cap(), P+N)
	}
}

// TestPrefillParts: Prefill splits its time into the chunk graphs, their arguments, the host table and the commits:
// disjoint parts of it, each present when there are several chunks.
// prefillCase is a policy of the prefill tests: its masker for the weights and its evictor.
type prefillCase struct {
	name string
	m    model.Masker
	ev   kvcache.Evictor
}

// prefillCases are full attention and NAtS with window 4.
func prefillCases(t testing.TB) []prefillCase {
	return []prefillCase{{"full", nil, nil}, {"nats", mustNAtS(t, nats.Config{Window: 4, Chunk: 1}), policy.NAtS{Window: 4, Chunk: 1}}}
}

func TestPrefillParts(t *testing.T) {
	cfg := tiny()
	backend := testBackend(t)
	for _, c := range prefillCases(t) {
		e, err := New(backend, cfg, c.m, c.ev, model.NewParams(model.Specs(cfg, c.m), 1), Options{})
		if err != nil {
			t.Fatal(err)
		}
		r, err := e.Prefill(randTokens(rand.New(rand.NewPCG(5, 5)), 2, 40, cfg.VocabSize), 16)
		if err != nil {
			t.Fatal(err)
		}
		parts := r.GraphSeconds + r.ArgsSeconds + r.HostSeconds + r.CommitSeconds
		if r.Chunks != 3 || r.GraphSeconds <= 0 || r.ArgsSeconds <= 0 || r.HostSeconds <= 0 || r.CommitSeconds <= 0 || parts > r.Seconds {
			t.Errorf("%s: %d chunks, graphs %v + arguments %v + host %v + commits %v = %v s of %v s", c.name, r.Chunks,
				r.GraphSeconds, r.ArgsSeconds, r.HostSeconds, r.CommitSeconds, parts, r.Seconds)
		}
	}
}

// TestPrefillFreesReplacedCache: by the end of each prefill chunk (its Progress call) the cache that the chunk's commit
// replaced is freed, with the last chunk's state and logits, so that the next chunk's graph never runs beside two caches (full attention at 32k, batch 32 on
// the 8B shape ran out of the H200's memory when the old cache waited for the next chunk's host read).
func TestPrefillFreesReplacedCache(t *testing.T) {
	cfg := tiny()
	backend := testBackend(t)
	for _, c := range append(prefillCases(t), prefillCase{"h2o", nil, policy.H2O{Budget: 12, Recent: 4}}) {
		var e *Engine
		var last []*tensors.Tensor
		calls := 0
		opt := Options{Progress: func(done, total int) {
			calls++
			for i, k := range last {
				if k.Ok() {
					t.Errorf("%s: after the chunk ending at %d of %d, buffer %d of the chunk before (K/V, then state and logits) is still live", c.name, done, total, i)
				}
			}
			last = append(append(last[:0], e.K...), e.V...)
			last = append(last, e.state, e.lastLogits)
		}}
		var err error
		e, err = New(backend, cfg, c.m, c.ev, model.NewParams(model.Specs(cfg, c.m), 1), opt)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.Prefill(randTokens(rand.New(rand.NewPCG(5, 5)), 2, 40, cfg.VocabSize), 8); err != nil {
			t.Fatal(err)
		}
		if calls != 5 {
			t.Fatalf("%s: %d Progress calls, want 5 chunks", c.name, calls)
		}
		if _, err := e.Decode(3); err != nil { // the freed buffers were not in use
			t.Fatalf("%s: decoding after prefill: %v", c.name, err)
		}
	}
}
