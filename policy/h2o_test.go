package policy_test

import (
	"maps"
	"math/rand/v2"
	"slices"
	"testing"

	"natsbench/kvcache"
	"natsbench/policy"
)

// evictStep is one decoding step of a hand-computed eviction trace on a single (layer, b, head).
type evictStep struct {
	attn map[int32]float32 // attention of this query per visible position (exactly the valid slots)
	want []int32           // Pos per slot after eviction (kvcache.Free = −1)
}

// runTrace decodes len(steps) tokens with ev on one head of capacity ev.Capacity(len(steps)),
// checks that each query sees exactly the positions its attn map names, and compares the slot
// table after every step.
func runTrace(t *testing.T, ev kvcache.Evictor, steps []evictStep) {
	t.Helper()
	simulate(t, ev, 1, 1, 1, len(steps), device{
		cap0: ev.Capacity(len(steps)),
		attn: func(_, _, _, i int, pos int32) float32 {
			a, ok := steps[i].attn[pos]
			if !ok {
				t.Fatalf("step %d: position %d is valid but has no attention in the trace", i, pos)
			}
			return a
		},
		visit: func(st step) {
			want := slices.Sorted(maps.Keys(steps[st.i].attn))
			if got := positions(st.s); !slices.Equal(got, want) {
				t.Fatalf("step %d: query sees %v, trace says %v", st.i, got, want)
			}
		},
		after: func(i int, c *kvcache.Cache) {
			if got := c.Layers[0].View(0, 0).Pos; !slices.Equal(got, steps[i].want) {
				t.Fatalf("after step %d: slots %v, want %v", i, got, steps[i].want)
			}
		},
	})
}

func TestH2OTrace(t *testing.T) {
	const F = kvcache.Free
	t.Run("budget=3 recent=2", func(t *testing.T) {
		// Recent = 2: query i+1 always sees i; one heavy hitter among j ≤ i−1 survives.
		// Acc (accumulated attention) after each step is in the comment; values are group sums.
		runTrace(t, policy.H2O{Budget: 3, Recent: 2}, []evictStep{
			{map[int32]float32{0: 1}, []int32{0, F, F}},                   // Acc 0:1
			{map[int32]float32{0: .25, 1: .75}, []int32{0, 1, F}},         // Acc 0:1.25 1:.75
			{map[int32]float32{0: 0, 1: .25, 2: .75}, []int32{0, F, 2}},   // Acc 0:1.25 1:1 2:.75 → drop 1
			{map[int32]float32{0: 0, 2: .75, 3: .25}, []int32{F, 3, 2}},   // 3 reuses slot 1; Acc 0:1.25 2:1.5 → drop 0
			{map[int32]float32{2: .5, 3: .25, 4: .25}, []int32{4, F, 2}},  // Acc 2:2 3:.5 → drop 3
			{map[int32]float32{2: 0, 4: 1.75, 5: .25}, []int32{F, 5, 2}},  // Acc 2:2 4:2 tie → keep older 2
			{map[int32]float32{2: .5, 5: 1, 6: .5}, []int32{6, F, 2}},     // Acc 2:2.5 5:1.5 → drop 5
			{map[int32]float32{2: .25, 6: .25, 7: 1.5}, []int32{F, 7, 2}}, // Acc 2:2.75 6:.75 → drop 6
		})
	})
	t.Run("budget=1", func(t *testing.T) {
		// Each query sees only itself; everything is dropped after its step.
		runTrace(t, policy.H2O{Budget: 1, Recent: 1}, []evictStep{
			{map[int32]float32{0: 1}, []int32{F}},
			{map[int32]float32{1: 1}, []int32{F}},
			{map[int32]float32{2: 1}, []int32{F}},
		})
	})
	t.Run("budget=3 recent=1", func(t *testing.T) {
		// Recent = 1: no protected window; the newest token competes and can be dropped.
		runTrace(t, policy.H2O{Budget: 3, Recent: 1}, []evictStep{
			{map[int32]float32{0: 1}, []int32{0, F, F}},                  // Acc 0:1
			{map[int32]float32{0: .5, 1: .5}, []int32{0, 1, F}},          // Acc 0:1.5 1:.5
			{map[int32]float32{0: .25, 1: .25, 2: .5}, []int32{0, 1, F}}, // Acc 0:1.75 1:.75 2:.5 → drop newest 2
			{map[int32]float32{0: 0, 1: 0, 3: .75}, []int32{0, 1, F}},    // Acc 1:.75 3:.75 tie → keep older 1
			{map[int32]float32{0: 0, 1: 0, 4: 1}, []int32{0, F, 4}},      // Acc 1:.75 4:1 → drop 1
		})
	})
}

// TestH2OFullRecentIsWindow: with Recent = Budget H2O is a sliding window of Budget tokens whatever
// the attention, i.e. StreamingLLM without sinks.
func TestH2OFullRecentIsWindow(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	for bud := 1; bud < 8; bud++ {
		const n = 30
		m := policy.StreamingLLMMask(n, 0, bud)
		simulate(t, policy.H2O{Budget: bud, Recent: bud}, 2, 2, 2, n, device{
			cap0: bud,
			attn: func(_, _, _, _ int, _ int32) float32 { return r.Float32() },
			visit: func(st step) {
				if got, want := positions(st.s), rowPositions(m, st.i); !slices.Equal(got, want) {
					t.Fatalf("budget %d step %d: %v, want %v", bud, st.i, got, want)
				}
			},
		})
	}
}

// TestH2ORecentKept: over random attention the Recent−1 predecessors are always visible, and each
// query sees min(i+1, Budget) keys.
func TestH2ORecentKept(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 9))
	for _, p := range []policy.H2O{{Budget: 8, Recent: 3}, {Budget: 5, Recent: 1}, {Budget: 6, Recent: 6}} {
		simulate(t, p, 1, 2, 3, 40, device{
			cap0: p.Budget,
			attn: func(_, _, _, _ int, _ int32) float32 { return r.Float32() },
			visit: func(st step) {
				got := positions(st.s)
				if len(got) != min(st.i+1, p.Budget) {
					t.Fatalf("%+v step %d: sees %d keys %v", p, st.i, len(got), got)
				}
				for j := max(0, st.i-p.Recent+1); j <= st.i; j++ {
					if _, ok := slices.BinarySearch(got, int32(j)); !ok {
						t.Fatalf("%+v step %d: recent key %d missing from %v", p, st.i, j, got)
					}
				}
			},
		})
	}
}
