package kvcache_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"natsbench/kvcache"
)

const F = kvcache.Free

func TestBucket(t *testing.T) {
	for _, tc := range []struct{ n, want int }{
		{0, 16}, {1, 16}, {16, 16}, {17, 32}, {32, 32}, {33, 64}, {1000, 1024}, {1024, 1024}, {1025, 2048},
	} {
		if got := kvcache.Bucket(tc.n); got != tc.want {
			t.Errorf("Bucket(%d) = %d, want %d", tc.n, got, tc.want)
		}
	}
}

// TestBucketSteps: literal buckets for 1, 4 and 64 steps per doubling, and over a range of n: the bucket holds n,
// wastes less than one step (≤ n/steps slots), is a multiple of 16, never decreases with n, and equals Bucket for
// one step or up to FineFrom slots.
func TestBucketSteps(t *testing.T) {
	for _, tc := range []struct{ n, steps, want int }{
		{0, 4, 16}, {1000, 4, 1024}, {1024, 4, 1024}, {1025, 4, 1280}, {1280, 4, 1280}, {1281, 4, 1536},
		{2047, 4, 2048}, {2048, 4, 2048}, {2049, 4, 2560}, {4097, 4, 5120}, {6000, 4, 6144}, {8192, 4, 8192},
		{1025, 1, 2048}, {4097, 1, 8192}, {1025, 64, 1040}, {33000, 2, 49152}, {33000, 8, 36864},
	} {
		if got := kvcache.BucketSteps(tc.n, tc.steps); got != tc.want {
			t.Errorf("BucketSteps(%d, %d) = %d, want %d", tc.n, tc.steps, got, tc.want)
		}
	}
	for _, steps := range []int{1, 2, 4, 8, 64} {
		if !kvcache.ValidSteps(steps) {
			t.Errorf("ValidSteps(%d) = false", steps)
		}
		prev := 0
		for n := 0; n <= 70000; n += 7 {
			c := kvcache.BucketSteps(n, steps)
			if c < n || c%16 != 0 || c < prev {
				t.Fatalf("BucketSteps(%d, %d) = %d (previous %d)", n, steps, c, prev)
			}
			if n > kvcache.FineFrom && c-n >= max(n/steps, 1) {
				t.Fatalf("BucketSteps(%d, %d) = %d wastes %d slots, ≥ n/steps", n, steps, c, c-n)
			}
			if (steps == 1 || n <= kvcache.FineFrom) && c != kvcache.Bucket(n) {
				t.Fatalf("BucketSteps(%d, %d) = %d, Bucket = %d", n, steps, c, kvcache.Bucket(n))
			}
			prev = c
		}
	}
	for _, bad := range []int{0, 3, 6, 128, -2} {
		if kvcache.ValidSteps(bad) {
			t.Errorf("ValidSteps(%d) = true", bad)
		}
	}
}

func TestRoleAndStatString(t *testing.T) {
	if got := []string{kvcache.Global.String(), kvcache.Local.String(), kvcache.Window.String(), kvcache.Pending.String(), kvcache.Role(9).String()}; !slices.Equal(got, []string{"Global", "Local", "Window", "Pending", "Role(9)"}) {
		t.Errorf("Role strings %q", got)
	}
	s := kvcache.AccAttn | kvcache.Roles
	if s.String() != "AccAttn|Roles" || !s.Has(kvcache.Roles) || s.Has(kvcache.LastAttn) || kvcache.Stat(0).String() != "0" {
		t.Errorf("Stat %v", s)
	}
}

// TestPlace: tokens go to the lowest free slot, a freed slot is reused first, and a full (b, h)
// returns a wrapped ErrFull naming the head.
func TestPlace(t *testing.T) {
	l := kvcache.NewLayer(1, 2, 3)
	for pos := int32(0); pos < 3; pos++ {
		if k, err := l.Place(0, 1, pos); err != nil || k != int(pos) {
			t.Fatalf("Place(pos %d) = %d, %v", pos, k, err)
		}
	}
	s := l.View(0, 1)
	s.Acc[1], s.Last[1], s.Role[1] = 5, 6, uint8(kvcache.Global)
	s.Evict(1)
	k, err := l.Place(0, 1, 7)
	if err != nil || k != 1 {
		t.Fatalf("Place after eviction = %d, %v; want freed slot 1", k, err)
	}
	if s.Acc[1] != 0 || s.Last[1] != 0 || kvcache.Role(s.Role[1]) != kvcache.Pending {
		t.Errorf("reused slot not cleared: acc %v last %v role %v", s.Acc[1], s.Last[1], s.Role[1])
	}
	// Row layout [B, H, Cap]: head 0 untouched, head 1 = {0, 7, 2}.
	if want := []int32{F, F, F, 0, 7, 2}; !slices.Equal(l.Pos, want) {
		t.Errorf("Pos = %v, want %v", l.Pos, want)
	}
	_, err = l.Place(0, 1, 8)
	if !errors.Is(err, kvcache.ErrFull) || !strings.Contains(err.Error(), "h: 1") || !strings.Contains(err.Error(), "cap: 3") {
		t.Errorf("Place on a full head: %v", err)
	}
	if l.Occupied(0, 1) != 3 || l.Occupied(0, 0) != 0 || l.MaxOccupied() != 3 {
		t.Errorf("Occupied = %d, %d, max %d", l.Occupied(0, 1), l.Occupied(0, 0), l.MaxOccupied())
	}
}

func TestValidMask(t *testing.T) {
	l := kvcache.NewLayer(2, 1, 3)
	l.Place(0, 0, 0)
	l.Place(0, 0, 1)
	l.Place(1, 0, 0)
	l.View(0, 0).Evict(0)
	f := make([]float32, 6)
	l.ValidMask(f)
	if want := []float32{0, 1, 0, 1, 0, 0}; !slices.Equal(f, want) {
		t.Errorf("ValidMask = %v, want %v", f, want)
	}
	b := make([]bool, 6)
	l.ValidBool(b)
	if want := []bool{false, true, false, true, false, false}; !slices.Equal(b, want) {
		t.Errorf("ValidBool = %v, want %v", b, want)
	}
	defer func() {
		if recover() == nil {
			t.Error("ValidMask with a short buffer did not panic")
		}
	}()
	l.ValidMask(make([]float32, 5))
}

// TestGrow: contents stay at their slot index, new slots are free, and placement continues in them.
func TestGrow(t *testing.T) {
	l := kvcache.NewLayer(2, 1, 2)
	l.Place(0, 0, 0)
	l.Place(0, 0, 1)
	l.Place(1, 0, 0)
	l.View(1, 0).Acc[0] = 0.5
	l.View(0, 0).Role[1] = uint8(kvcache.Window)
	l.Grow(4)
	if l.Cap != 4 {
		t.Fatalf("Cap = %d", l.Cap)
	}
	if want := []int32{0, 1, F, F, 0, F, F, F}; !slices.Equal(l.Pos, want) {
		t.Errorf("Pos after Grow = %v, want %v", l.Pos, want)
	}
	if l.View(1, 0).Acc[0] != 0.5 || kvcache.Role(l.View(0, 0).Role[1]) != kvcache.Window {
		t.Error("Grow lost Acc or Role")
	}
	if k, err := l.Place(0, 0, 2); err != nil || k != 2 {
		t.Errorf("Place after Grow = %d, %v", k, err)
	}
	l.Grow(3) // no-op
	if l.Cap != 4 {
		t.Errorf("Grow to a smaller capacity changed Cap to %d", l.Cap)
	}
	l.Reset()
	if l.MaxOccupied() != 0 || l.Cap != 4 {
		t.Error("Reset")
	}
}
