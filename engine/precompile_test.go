package engine

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"natsbench/kvcache"
	"natsbench/nats"
	"natsbench/policy"
)

// TestPrecompileMatchesPrefill: a NAtS prefill whose cache grows through several buckets gives the same logits with
// graphs compiled ahead as without, and the graphs compiled ahead are the ones its chunks run: the prefill builds
// one graph for its first capacity and one per bucket up to the prompt's bound, and no other (a shape that differed
// from what a chunk passes would make the chunk build its own).
func TestPrecompileMatchesPrefill(t *testing.T) {
	cfg := tiny()
	cfg.MaxSeqLen = 256
	backend := testBackend(t)
	m := method{"nats-token", mustNAtS(t, nats.Config{Window: 3, Chunk: 1, GlobalBonus: 0.1}), policy.NAtS{Window: 3, Chunk: 1}, nil}
	params := testParams(cfg, m.masker, 7)
	const P, chunk = 200, 8
	prompt := randTokens(rand.New(rand.NewPCG(3, 9)), 2, P, cfg.VocabSize)
	run := func(workers int) (*Engine, PrefillResult) {
		e, err := New(backend, cfg, m.masker, m.evictor, params, Options{AllLogits: true, PrecompileWorkers: workers})
		if err != nil {
			t.Fatal(err)
		}
		e.checkSlots = true
		res, err := e.Prefill(prompt, chunk)
		if err != nil {
			t.Fatal(err)
		}
		return e, res
	}
	plain, want := run(-1)
	ahead, got := run(3)
	if plain.precompiled != 0 {
		t.Fatalf("PrecompileWorkers < 0 compiled %d graphs ahead", plain.precompiled)
	}
	if plain.Cap() <= kvcache.Bucket(0) || plain.prefillBuilds.Load() < 3 {
		t.Fatalf("the cache grew to %d slots through %d prefill graphs: the test needs a cache that grows through several buckets",
			plain.Cap(), plain.prefillBuilds.Load())
	}
	if d := maxDiff(got.Logits, want.Logits); d > 1e-6 {
		t.Fatalf("logits with graphs compiled ahead differ by %g", d)
	}
	if got.Next == nil || ahead.Cap() != plain.Cap() {
		t.Fatalf("capacity %d with graphs compiled ahead, %d without", ahead.Cap(), plain.Cap())
	}
	buckets := 0 // the buckets above the first capacity up to the bound, as precompile lists them
	for c := kvcache.Bucket(0); c < kvcache.BucketSteps(P, 4); c = kvcache.BucketSteps(c+1, 4) {
		buckets++
	}
	if b := int(ahead.prefillBuilds.Load()); b != 1+buckets {
		t.Fatalf("%d prefill graphs built with %d buckets compiled ahead, want %d (the first capacity's and the buckets'): a chunk built a graph the precompile did not",
			b, buckets, 1+buckets)
	}
	if ahead.precompiled == 0 {
		t.Fatal("nothing was compiled ahead")
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
