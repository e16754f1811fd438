package evaluate

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"natsbench/kvcache"
	"natsbench/model"
	"natsbench/nats"
	"natsbench/policy"
)

func tiny() model.Config {
	return model.Config{VocabSize: 40, DModel: 16, NLayers: 2, NHeads: 4, NKVHeads: 2, FFNMult: 2, MaxSeqLen: 64,
		RopeTheta: 500000, RopeScaling: "llama3", DType: "float32"}
}

// params returns random weights; the NAtS scorers are scaled up so that the roles vary.
func params(cfg model.Config, m model.Masker) *model.Params {
	p := model.NewParams(model.Specs(cfg, m), 3)
	for i, s := range p.Specs {
		if strings.HasSuffix(s.Name, "nats/scorer") {
			d := p.Flat(i)
			for k := range d {
				d[k] *= 150
			}
			p.Values[i] = tensorsFrom(d, s.Dims)
		}
	}
	return p
}

func windows(n, ctx, vocab int) [][]int32 {
	r := rand.New(rand.NewPCG(5, 5))
	out := make([][]int32, n)
	for i := range out {
		w := make([]int32, ctx+1)
		for j := range w {
			w[j] = int32(r.IntN(vocab))
		}
		out[i] = w
	}
	return out
}

// TestDecodeEqualsForward: for every method with an equivalent mask, decoding token by token with the real
// cache gives the same per-position NLL as the parallel forward pass with the mask (f32, 1e-4).
func TestDecodeEqualsForward(t *testing.T) {
	cfg := tiny()
	backend, err := model.NewBackend("go")
	if err != nil {
		t.Fatal(err)
	}
	natsTok, _ := nats.New(nats.Config{Window: 3, Chunk: 1, GlobalBonus: 0.1})
	natsChunk, _ := nats.New(nats.Config{Window: 4, Chunk: 2, GlobalBonus: 0.1})
	natsMax, _ := nats.New(nats.Config{Window: 4, Chunk: 4, Merge: "max", GlobalBonus: 0.1})
	methods := []Method{
		{Name: "full"},
		{Name: "streamingllm", Masker: model.SinkWindow{Sinks: 2, Budget: 7}, Evictor: policy.StreamingLLM{Sinks: 2, Budget: 7}},
		{Name: "nats-token", Masker: natsTok, Evictor: policy.NAtS{Window: 3, Chunk: 1}},
		{Name: "nats-chunk2", Masker: natsChunk, Evictor: policy.NAtS{Window: 4, Chunk: 2}},
		{Name: "nats-chunk4-max", Masker: natsMax, Evictor: policy.NAtS{Window: 4, Chunk: 4}},
	}
	ws := windows(3, 24, cfg.VocabSize)
	for _, m := range methods {
		t.Run(m.Name, func(t *testing.T) {
			p := params(cfg, m.Masker)
			dec, err := Streaming(backend, cfg, p, m, ws, Options{Batch: 2})
			if err != nil {
				t.Fatal(err)
			}
			par, err := Parallel(backend, cfg, p, m, ws, 2)
			if err != nil {
				t.Fatal(err)
			}
			for pos := range dec.PerPos {
				if d := math.Abs(dec.PerPos[pos] - par.PerPos[pos]); d > 1e-4 {
					t.Fatalf("position %d: decode NLL %.6f, forward NLL %.6f", pos, dec.PerPos[pos], par.PerPos[pos])
				}
			}
			if m.Evictor == nil && math.Abs(dec.KVFraction-1) > 1e-12 {
				t.Errorf("full attention KV fraction %v, want 1", dec.KVFraction)
			}
			t.Logf("%s: ppl %.3f kv fraction %.3f", m.Name, dec.PPL, dec.KVFraction)
		})
	}
}

// TestOccupancyEqualsMaskRowSums: the KV measure of a NAtS run equals the mean row sum of the mask implied by
// the forward pass's roles.
func TestOccupancyEqualsMaskRowSums(t *testing.T) {
	cfg := tiny()
	cfg.NLayers, cfg.NKVHeads = 1, 1
	backend, _ := model.NewBackend("go")
	nm, _ := nats.New(nats.Config{Window: 3, Chunk: 1, GlobalBonus: 0.1})
	p := params(cfg, nm)
	ws := windows(1, 20, cfg.VocabSize)
	res, err := Streaming(backend, cfg, p, Method{Name: "nats", Masker: nm, Evictor: policy.NAtS{Window: 3, Chunk: 1}}, ws, Options{Batch: 1})
	if err != nil {
		t.Fatal(err)
	}
	_, roles, err := model.NewInference(backend, cfg, nm, p).Forward(ws[0][:20], 1, 20)
	if err != nil {
		t.Fatal(err)
	}
	rs := make([]kvcache.Role, 20)
	kinds := map[int32]int{}
	for i, r := range roles[0] {
		rs[i] = kvcache.Role(r)
		kinds[r]++
	}
	if len(kinds) < 2 {
		t.Fatalf("roles did not vary (%v): test is vacuous", kinds)
	}
	mask := policy.NAtSMask(rs, 3)
	var frac, toks float64
	for i := range mask {
		n := float64(policy.RowSum(mask, i))
		frac += n / float64(i+1)
		toks += n
	}
	if math.Abs(frac/20-res.KVFraction) > 1e-9 || math.Abs(toks/20-res.KVTokens) > 1e-9 {
		t.Fatalf("decode KV fraction %v tokens %v; mask row sums give %v and %v (roles %v)", res.KVFraction, res.KVTokens, frac/20, toks/20, rs)
	}
}
