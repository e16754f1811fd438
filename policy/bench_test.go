package policy_test

import (
	"errors"
	"math/rand/v2"
	"testing"

	"natsbench/kvcache"
	"natsbench/policy"
)

// stepper drives a Cache as the engine would, with a fake device that fills the statistics from
// fixed pseudo-random tables, resetting the cache when it fills up (Full, NAtS with many Globals).
type stepper struct {
	c      *kvcache.Cache
	attn   []float32 // [B·H·Cap] pattern copied into Stats.Attn
	roles  []uint8   // role pattern
	filled []float32 // Stats.Attn[0] last filled
	run    func([]int32, *kvcache.Stats) error
}

func newStepper(tb testing.TB, ev kvcache.Evictor, L, B, H, cp int) *stepper {
	c, err := kvcache.New(L, B, H, cp, ev)
	if err != nil {
		tb.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	s := &stepper{c: c, attn: make([]float32, B*H*cp), roles: make([]uint8, 4096), filled: []float32{0}}
	for k := range s.attn {
		s.attn[k] = r.Float32()
	}
	for k := range s.roles { // mostly Local/Window, a Global every ~50 tokens
		s.roles[k] = uint8(kvcache.Local) + uint8(r.IntN(2))
		if r.IntN(50) == 0 {
			s.roles[k] = uint8(kvcache.Global)
		}
	}
	s.run = func(_ []int32, st *kvcache.Stats) error {
		pos := s.c.Len()
		if len(st.Attn) > 0 && &st.Attn[0][0] != &s.filled[0] { // fill once: the device's writes are not host cost
			for l := range st.Attn {
				copy(st.Attn[l], s.attn)
			}
			s.filled = st.Attn[0]
		}
		for l := range st.Roles {
			for k := range st.Roles[l] {
				st.Roles[l][k] = s.roles[(pos+k+l)%len(s.roles)]
			}
		}
		return nil
	}
	return s
}

func (s *stepper) step(tb testing.TB) {
	err := s.c.Step(s.run)
	if errors.Is(err, kvcache.ErrFull) {
		s.c.Reset()
		err = s.c.Step(s.run)
	}
	if err != nil {
		tb.Fatal(err)
	}
}

var benchPolicies = []struct {
	name string
	ev   kvcache.Evictor
}{
	{"full", policy.Full{}},
	{"streamingllm", policy.StreamingLLM{Sinks: 4, Budget: 1024}},
	{"h2o", policy.H2O{Budget: 1024, Recent: 512}},
	{"tova", policy.TOVA{Budget: 1024}},
	{"nats", policy.NAtS{Window: 64}},
	{"nats_chunk", policy.NAtS{Window: 64, Chunk: 16}},
}

// TestPoliciesNoAllocs: the host step allocates nothing per token for any policy, in the steady
// state (evicting every step, no cache reset).
func TestPoliciesNoAllocs(t *testing.T) {
	for _, ev := range []kvcache.Evictor{
		policy.Full{},
		policy.StreamingLLM{Sinks: 4, Budget: 32},
		policy.H2O{Budget: 32, Recent: 8},
		policy.TOVA{Budget: 32},
		policy.NAtS{Window: 8},
		policy.NAtS{Window: 8, Chunk: 4},
	} {
		s := newStepper(t, ev, 2, 2, 2, kvcache.Bucket(ev.Capacity(600)))
		for i := 0; i < 200; i++ {
			s.step(t)
		}
		if a := testing.AllocsPerRun(300, func() { s.step(t) }); a != 0 {
			t.Errorf("%T: %v allocations per token", ev, a)
		}
		if s.c.Len() != 501 {
			t.Errorf("%T: cache was reset (len %d)", ev, s.c.Len())
		}
	}
}

// BenchmarkStep is the per-token host step (Begin, fake device filling Stats, End with eviction)
// for 8 layers, batch 8, 8 KV heads, capacity 1024, in the steady state (cache about full).
func BenchmarkStep(b *testing.B) {
	const L, B, H, cp = 8, 8, 8, 1024
	for _, p := range benchPolicies {
		b.Run(p.name, func(b *testing.B) {
			s := newStepper(b, p.ev, L, B, H, cp)
			for i := 0; i < cp+100; i++ {
				s.step(b)
			}
			if p.name == "full" { // keep Full near capacity instead of resetting on every benchmark run
				s.c.Reset()
				for i := 0; i < cp-64; i++ {
					s.step(b)
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				s.step(b)
			}
		})
	}
}
