package kvcache_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"natsbench/kvcache"
)

// recorder is a test evictor: it records its calls and evicts positions listed in drop.
type recorder struct {
	needs kvcache.Stat
	roles []kvcache.Role
	drop  map[int32]bool
}

func (r *recorder) Needs() kvcache.Stat { return r.needs }
func (r *recorder) Capacity(n int) int  { return n }
func (r *recorder) Validate() error     { return nil }
func (r *recorder) After(layer int, s kvcache.Slots, pos int32, role kvcache.Role) {
	r.roles = append(r.roles, role)
	for k, p := range s.Pos {
		if p >= 0 && r.drop[p] {
			s.Evict(k)
		}
	}
}

func TestNewErrors(t *testing.T) {
	for _, tc := range []struct {
		l, b, h, c int
		field      string
	}{{0, 1, 1, 1, "layers"}, {1, 0, 1, 1, "batch"}, {1, 1, 0, 1, "heads"}, {1, 1, 1, -1, "capacity"}} {
		_, err := kvcache.New(tc.l, tc.b, tc.h, tc.c, nil)
		if err == nil || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("New(%d,%d,%d,%d): %v, want an error naming %q", tc.l, tc.b, tc.h, tc.c, err, tc.field)
		}
	}
	if _, err := kvcache.New(1, 1, 1, 1, badEvictor{}); err == nil || !strings.Contains(err.Error(), "Field") {
		t.Errorf("New with an invalid evictor: %v", err)
	}
}

type badEvictor struct{ dropper }

func (badEvictor) Validate() error { return errors.New("bad: Field must be ≥ 1") }

// TestStepProtocol: slots returned by Begin, occupancy measure, Acc/Last folding and roles handed
// to the evictor, over 2 layers × 1 batch × 2 heads.
func TestStepProtocol(t *testing.T) {
	ev := &recorder{needs: kvcache.AccAttn | kvcache.LastAttn | kvcache.Roles, drop: map[int32]bool{1: true}}
	c, err := kvcache.New(2, 1, 2, 4, ev)
	if err != nil {
		t.Fatal(err)
	}
	if c.Needs() != ev.needs || c.Evictor() != ev || c.Stats().Attn == nil || c.Stats().Roles == nil {
		t.Fatal("Needs/Evictor/Stats")
	}
	attn := []float32{.5, .25, .125, .0625} // per slot, same for every (layer, head)
	for i := 0; i < 3; i++ {
		err := c.Step(func(slots []int32, st *kvcache.Stats) error {
			// Step 0 → slot 0; step 1 → slot 1; step 2 → slot 1 again (1 was evicted).
			want := []int32{0, 1, 1}[i]
			for _, s := range slots {
				if s != want {
					t.Fatalf("step %d: slots %v, want all %d", i, slots, want)
				}
			}
			wantOcc := []int32{1, 2, 2}[i]
			if occ := c.Occupancy(); !slices.Equal(occ, []int32{wantOcc, wantOcc, wantOcc, wantOcc}) {
				t.Fatalf("step %d: occupancy %v", i, occ)
			}
			if got, want := c.KVFraction(), float64(wantOcc)/float64(i+1); got != want || c.KVTokens() != 4*int(wantOcc) {
				t.Fatalf("step %d: KVFraction %v (want %v), KVTokens %d", i, got, want, c.KVTokens())
			}
			for l := range st.Attn {
				for r := 0; r < 2; r++ {
					copy(st.Attn[l][r*4:], attn)
					st.Roles[l][r] = uint8(kvcache.Role((l + r + i) % 3))
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if c.Len() != 3 {
		t.Errorf("Len = %d", c.Len())
	}
	s := c.Layers[1].View(0, 1)
	// Slot 0 (pos 0) attended at steps 0, 1, 2; slot 1 holds pos 2, attended once.
	if !slices.Equal(s.Pos, []int32{0, 2, F, F}) || s.Acc[0] != 1.5 || s.Acc[1] != .25 || s.Last[0] != .5 || s.Last[1] != .25 {
		t.Errorf("slots %v acc %v last %v", s.Pos, s.Acc, s.Last)
	}
	// Roles arrive per (layer, head) in order l0h0, l0h1, l1h0, l1h1 each step.
	if want := []kvcache.Role{0, 1, 1, 2, 1, 2, 2, 0, 2, 0, 0, 1}; !slices.Equal(ev.roles, want) {
		t.Errorf("roles %v, want %v", ev.roles, want)
	}
}

// TestBeginFullAndGrow: a full cache refuses atomically; NextCap and Grow fix it.
func TestBeginFullAndGrow(t *testing.T) {
	c, _ := kvcache.New(2, 2, 2, 2, nil)
	noop := func([]int32, *kvcache.Stats) error { return nil }
	for i := 0; i < 2; i++ {
		if err := c.Step(noop); err != nil {
			t.Fatal(err)
		}
	}
	if c.NextCap() != 16 {
		t.Errorf("NextCap = %d, want 16", c.NextCap())
	}
	err := c.Step(noop)
	if !errors.Is(err, kvcache.ErrFull) {
		t.Fatalf("Step on a full cache: %v", err)
	}
	if c.MaxOccupied() != 2 || c.Len() != 2 {
		t.Fatalf("failed Begin left state: max %d len %d", c.MaxOccupied(), c.Len())
	}
	for _, l := range c.Layers {
		if !slices.Equal(l.Pos, []int32{0, 1, 0, 1, 0, 1, 0, 1}) {
			t.Fatalf("failed Begin changed slots: %v", l.Pos)
		}
	}
	c.Grow(c.NextCap())
	if c.Cap() != 16 || c.NextCap() != 16 {
		t.Fatalf("Cap %d NextCap %d", c.Cap(), c.NextCap())
	}
	if err := c.Step(noop); err != nil {
		t.Fatal(err)
	}
	if c.Layers[1].View(1, 1).Pos[2] != 2 || c.Occupancy()[7] != 3 {
		t.Error("token 2 not placed after Grow")
	}
	c.Reset()
	if c.Len() != 0 || c.MaxOccupied() != 0 || c.Cap() != 16 || c.KVFraction() != 0 {
		t.Error("Reset")
	}
}

// TestStepDeviceError: a failing device step undoes the placement.
func TestStepDeviceError(t *testing.T) {
	c, _ := kvcache.New(1, 1, 1, 4, nil)
	boom := errors.New("boom")
	if err := c.Step(func([]int32, *kvcache.Stats) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("err = %v", err)
	}
	if c.MaxOccupied() != 0 || c.Len() != 0 {
		t.Error("failed step left a token")
	}
	if err := c.End(); err == nil {
		t.Error("End without Begin succeeded")
	}
	if _, err := c.Begin(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Begin(); err == nil {
		t.Error("Begin twice succeeded")
	}
}

// TestStepNoAllocs: the per-token host step allocates nothing in the steady state.
func TestStepNoAllocs(t *testing.T) {
	c, _ := kvcache.New(4, 2, 2, 64, dropper{})
	noop := func([]int32, *kvcache.Stats) error { return nil }
	allocs := testing.AllocsPerRun(200, func() {
		if err := c.Step(noop); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("Step allocates %v times per token", allocs)
	}
}

// dropper keeps the last 8 positions and needs every statistic.
type dropper struct{}

func (dropper) Needs() kvcache.Stat { return kvcache.AccAttn | kvcache.LastAttn | kvcache.Roles }
func (dropper) Capacity(n int) int  { return min(n, 9) }
func (dropper) After(_ int, s kvcache.Slots, pos int32, _ kvcache.Role) {
	for k, p := range s.Pos {
		if p >= 0 && p <= pos-8 {
			s.Evict(k)
		}
	}
}
