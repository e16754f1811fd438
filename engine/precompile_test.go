package engine

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"natsbench/kvcache"
	"natsbench/nats"
	"natsbench/policy"
)

// TestPrecompileMatchesPrefill: a NAtS prefill whose cache grows through several buckets gives the same logits with
// graphs compiled ahead as without, and the graphs compiled ahead are the ones its chunks run: the prefill builds
// one prefill graph for its first capacity and one per bucket up to the prompt's bound, one growth commit per
// bucket, and commitDelta graphs for the two list lengths per bucket compiled ahead plus one per (capacity, length)
// a chunk used that was not among them; nothing else (a shape that differed from what a chunk passes would make the
// chunk build its own). No compile is running when Prefill returns; a second prefill on the same engine queues
// nothing, a longer one only the buckets above; a prefill that ends first drops the compiles not yet started, and
// the next prefill queues them again.
func TestPrecompileMatchesPrefill(t *testing.T) {
	cfg := tiny()
	cfg.MaxSeqLen = 512
	backend := testBackend(t)
	m := method{"nats-token", mustNAtS(t, nats.Config{Window: 3, Chunk: 1, GlobalBonus: 0.1}), policy.NAtS{Window: 3, Chunk: 1}, nil}
	params := testParams(cfg, m.masker, 7)
	const P, chunk = 200, 8
	r := rand.New(rand.NewPCG(3, 9))
	prompt, long := randTokens(r, 2, P, cfg.VocabSize), randTokens(r, 2, 400, cfg.VocabSize)
	run := func(e *Engine, prompt [][]int32) PrefillResult {
		res, err := e.Prefill(prompt, chunk)
		if err != nil {
			t.Fatal(err)
		}
		if n := e.compiling.Load(); n != 0 {
			t.Fatalf("%d compiles ahead still running when Prefill returned", n)
		}
		return res
	}
	engine := func(workers int) *Engine {
		e, err := New(backend, cfg, m.masker, m.evictor, params, Options{AllLogits: true, PrecompileWorkers: workers})
		if err != nil {
			t.Fatal(err)
		}
		e.checkSlots = true
		e.deltaShapes = map[[2]int]bool{}
		return e
	}
	plain, ahead := engine(-1), engine(3)
	ahead.drainPrecompile = true // every bucket's graphs get compiled, reached or not: the counts below are exact
	want, got := run(plain, prompt), run(ahead, prompt)
	if n := plain.precompiled.Load(); n != 0 {
		t.Fatalf("PrecompileWorkers < 0 compiled %d graphs ahead", n)
	}
	if plain.Cap() <= kvcache.Bucket(0) || plain.prefillBuilds.Load() < 3 {
		t.Fatalf("the cache grew to %d slots through %d prefill graphs: the test needs a cache that grows through several buckets",
			plain.Cap(), plain.prefillBuilds.Load())
	}
	if d := maxDiff(got.Logits, want.Logits); d > 1e-6 {
		t.Fatalf("logits with graphs compiled ahead differ by %g", d)
	}
	if ahead.Cap() != plain.Cap() {
		t.Fatalf("capacity %d with graphs compiled ahead, %d without", ahead.Cap(), plain.Cap())
	}
	first := kvcache.Bucket(0)
	buckets := 0 // the buckets above the first capacity up to the bound, as precompile lists them
	for c := first; c < kvcache.BucketSteps(P, 4); c = kvcache.BucketSteps(c+1, 4) {
		buckets++
	}
	if n := int(ahead.precompiled.Load()); n != 4*buckets {
		t.Fatalf("%d compiles ahead started, want 4 per bucket (%d buckets)", n, buckets)
	}
	if b := int(ahead.prefillBuilds.Load()); b != 1+buckets {
		t.Fatalf("%d prefill graphs built with %d buckets compiled ahead, want %d (the first capacity's and the buckets'): a chunk built a graph the precompile did not",
			b, buckets, 1+buckets)
	}
	if b := int(ahead.commitBuilds.Load()); b != buckets {
		t.Fatalf("%d growth commits built, want the %d compiled ahead", b, buckets)
	}
	rows := cfg.NLayers * len(prompt) * cfg.KVHeads()
	own := 0 // (capacity, length) pairs the chunks used that were not compiled ahead
	for k := range ahead.deltaShapes {
		if k[0] == first || (k[1] != deltaLen(2*rows*chunk) && k[1] != deltaLen(4*rows*chunk)) {
			own++
		}
	}
	if b := int(ahead.deltaBuilds.Load()); b != 2*buckets+own {
		t.Fatalf("%d commitDelta graphs built, want %d: 2 per bucket compiled ahead and the %d the chunks needed besides (used: %v)",
			b, 2*buckets+own, own, ahead.deltaShapes)
	}
	before := ahead.precompiled.Load()
	run(ahead, prompt)
	if n := ahead.precompiled.Load(); n != before {
		t.Fatalf("the second prefill compiled %d more graphs ahead", n-before)
	}
	run(ahead, long) // a longer prompt: the buckets above the first prompt's bound only
	above := 0
	for c := kvcache.BucketSteps(P, 4); c < kvcache.BucketSteps(400, 4); c = kvcache.BucketSteps(c+1, 4) {
		above++
	}
	if n := ahead.precompiled.Load() - before; int(n) != 4*above {
		t.Fatalf("a longer prompt compiled %d graphs ahead, want 4 for each of the %d buckets above the first one's", n, above)
	}
	// Without draining, the compiles not started when the prefill ends are dropped (and none runs after it: run's
	// check); the result is the same.
	quick := engine(1)
	quick.precompileDelay = 50 * time.Millisecond // compiles far slower than chunks: most are not started at the end
	if d := maxDiff(run(quick, prompt).Logits, want.Logits); d > 1e-6 {
		t.Fatalf("logits differ by %g when the compiles ahead are cut short", d)
	}
	cut := quick.precompiled.Load()
	if int(cut) >= 4*buckets {
		t.Fatalf("all %d compiles ahead started though the prefill ended first", cut)
	}
	// The dropped ones are queued again by the next prefill with the same batch and chunk (a latency run's next
	// prompt length on the same engine), not taken as done.
	quick.drainPrecompile = true
	run(quick, prompt)
	if n := quick.precompiled.Load(); int(n) < 4*buckets {
		t.Fatalf("after a prefill that dropped compiles, the same prompt again started %d more (%d in all), want the rest of the %d",
			n-cut, n, 4*buckets)
	}
}

// TestPrefillProgress: Options.Progress hears of every chunk, in order, ending at the prompt's length.
func TestPrefillProgress(t *testing.T) {
	cfg := tiny()
	var got []int
	e, err := New(testBackend(t), cfg, nil, nil, testParams(cfg, nil, 1), Options{Progress: func(done, total int) {
		if total != 19 {
			t.Errorf("Progress total %d, want the prompt's 19", total)
		}
		got = append(got, done)
	}})
	if err != nil {
		t.Fatal(err)
	}
	res, err := e.Prefill(randTokens(rand.New(rand.NewPCG(1, 1)), 1, 19, cfg.VocabSize), 8)
	if err != nil {
		t.Fatal(err)
	}
	if want := []int{8, 16, 19}; len(got) != res.Chunks || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("Progress heard %v over %d chunks, want %v", got, res.Chunks, want)
	}
}

// TestPrefillAgain: a second prefill on the same engine (another prompt, longer or shorter, with or without a
// Release between) gives what a fresh engine gives, for every policy, with the host table in one pass and split over goroutines: prefill and decoding
// logits, the tokens, the capacity, the KV fraction and the fullest row. Nothing of the first prefill's device slot
// table, update lists or counters carries over (a latency run keeps one engine across its prompt lengths).
func TestPrefillAgain(t *testing.T) {
	cfg := tiny()
	backend := testBackend(t)
	defer func(a int) { minPartRows = a }(minPartRows)
	minPartRows = 1
	for _, m := range methods(t) {
		for _, workers := range []int{1, 3} {
			for _, lens := range [][2]int{{19, 19}, {29, 13}, {13, 29}} {
				release := lens[0] > lens[1] // Release between the two: decoding then needs a prefill
				t.Run(fmt.Sprintf("%s/workers=%d/%d,%d", m.name, workers, lens[0], lens[1]), func(t *testing.T) {
					params := testParams(cfg, m.masker, 5)
					r := rand.New(rand.NewPCG(4, 4))
					first, second := randTokens(r, 2, lens[0], cfg.VocabSize), randTokens(r, 2, lens[1], cfg.VocabSize)
					chunk := m.chunks[len(m.chunks)-1]
					type out struct {
						prefill, decode []float32
						tokens          [][]int32
						cap, maxRow     int
						kv              float64
					}
					run := func(e *Engine, prompt [][]int32) out {
						e.checkSlots = true
						res, err := e.Prefill(prompt, chunk)
						if err != nil {
							t.Fatal(err)
						}
						d, err := e.Decode(3)
						if err != nil {
							t.Fatal(err)
						}
						return out{res.Logits, d.Logits, d.Tokens, e.Cap(), e.MaxRowTokens(), e.KVFraction()}
					}
					mk := func() *Engine {
						e, err := New(backend, cfg, m.masker, m.evictor, params, Options{AllLogits: true, Staging: 2, TableWorkers: workers})
						if err != nil {
							t.Fatal(err)
						}
						return e
					}
					reused := mk()
					run(reused, first)
					if release {
						reused.Release()
						if _, err := reused.Decode(1); err == nil || reused.Cap() != 0 || reused.CacheBytes() != 0 {
							t.Fatalf("after Release: Decode err %v, capacity %d, cache bytes %d", err, reused.Cap(), reused.CacheBytes())
						}
					}
					got, want := run(reused, second), run(mk(), second)
					if d := max(maxDiff(got.prefill, want.prefill), maxDiff(got.decode, want.decode)); d > 1e-6 {
						t.Fatalf("a second prefill on the same engine differs from a fresh engine's by %g", d)
					}
					if fmt.Sprint(got.tokens) != fmt.Sprint(want.tokens) || got.cap != want.cap || got.maxRow != want.maxRow || got.kv != want.kv {
						t.Fatalf("reused engine: tokens %v, capacity %d, fullest row %d, KV fraction %g; fresh: %v, %d, %d, %g",
							got.tokens, got.cap, got.maxRow, got.kv, want.tokens, want.cap, want.maxRow, want.kv)
					}
				})
			}
		}
	}
}
