package kvcache

import (
	"errors"
	"fmt"
)

// ErrFull is returned, wrapped with the layer/batch/head and capacity, when a token cannot be
// placed because every slot is occupied. The caller grows the device buffers and the table
// ([Cache.NextCap], [Cache.Grow]) and retries.
var ErrFull = errors.New("kvcache: cache full")

// Free is the [Slots.Pos] value of an unoccupied slot.
const Free int32 = -1

// Bucket returns the capacity bucket for n tokens: the smallest power of two ≥ n, and at least 16.
// One decode graph is compiled per bucket.
func Bucket(n int) int {
	c := 16
	for c < n {
		c <<= 1
	}
	return c
}

// FineFrom is the capacity above which [BucketSteps] divides a doubling into steps.
const FineFrom = 1024

// BucketSteps returns the capacity bucket for n tokens with steps buckets per doubling above FineFrom slots:
// [Bucket](n) up to FineFrom (or when steps ≤ 1), else the smallest c ≥ n of the form p + k·p/steps, with p the
// power of two below Bucket(n) and 1 ≤ k ≤ steps. The buffers are then at most (1 + 1/steps)× what the fullest
// row needs instead of up to 2× (powers of two), at the price of up to steps compiled graphs per doubling and
// more growth copies (still geometric: each growth adds at least 1/(2·steps) of the capacity). steps must be a
// power of two in [1, 64] (so that every bucket is a multiple of 16 slots).
func BucketSteps(n, steps int) int {
	b := Bucket(n)
	if steps <= 1 || b <= FineFrom {
		return b
	}
	half := b / 2
	step := half / steps
	return half + (n-half+step-1)/step*step
}

// ValidSteps reports whether steps is a power of two in [1, 64] (see [BucketSteps]).
func ValidSteps(steps int) bool { return steps >= 1 && steps <= 64 && steps&(steps-1) == 0 }

// Slots is the slot table of one (layer, batch, KV head): four parallel slices of length Cap that
// alias the owning [Layer]. An [Evictor] frees slot k by setting Pos[k] = [Free] (or [Slots.Evict]).
type Slots struct {
	// Pos is the sequence position held by each slot, or Free (−1).
	Pos []int32
	// Role is the NAtS [Role] of each slot; [Pending] until an evictor decides it.
	Role []uint8
	// Acc is the attention each slot received, summed over all queries since it was placed
	// (only maintained when the evictor needs [AccAttn]; meaningless for free slots).
	Acc []float32
	// Last is the attention each slot received from the most recent query (only maintained when
	// the evictor needs [LastAttn]; meaningless for free slots).
	Last []float32
}

// Evict frees slot k.
func (s Slots) Evict(k int) { s.Pos[k] = Free }

// Occupied returns the number of occupied slots.
func (s Slots) Occupied() int { return len(s.Pos) - countFree(s.Pos) }

// Layer is the host slot table of one transformer layer: per (batch b, KV head h) Cap slots, each
// holding one cached token or free. All per-slot slices are laid out `[B, H, Cap]` flat, i.e. slot k
// of (b, h) is at index (b·H + h)·Cap + k — the layout of the device's K/V buffers
// `[batch, kv_heads, capacity, head_dim]` without head_dim.
type Layer struct {
	// B is the batch size, H the number of KV heads, Cap the number of slots per (b, h).
	B, H, Cap int
	// Pos is the position held by each slot, Free (−1) when the slot is unoccupied. `[B, H, Cap]`.
	Pos []int32
	// Role is each slot's NAtS Role (as uint8). `[B, H, Cap]`.
	Role []uint8
	// Acc is each slot's accumulated attention. `[B, H, Cap]`.
	Acc []float32
	// Last is each slot's attention from the latest query. `[B, H, Cap]`.
	Last []float32
}

// NewLayer returns an empty table with b batch rows, h KV heads and capacity cp slots per (b, h).
// It panics if b < 1, h < 1 or cp < 0.
func NewLayer(b, h, cp int) *Layer {
	if b < 1 || h < 1 || cp < 0 {
		panic(fmt.Errorf("kvcache.NewLayer: need b ≥ 1, h ≥ 1, cap ≥ 0, got b=%d h=%d cap=%d", b, h, cp))
	}
	l := &Layer{B: b, H: h}
	l.alloc(cp)
	l.Reset()
	return l
}

func (l *Layer) alloc(cp int) {
	n := l.B * l.H * cp
	l.Cap = cp
	l.Pos = make([]int32, n)
	l.Role = make([]uint8, n)
	l.Acc = make([]float32, n)
	l.Last = make([]float32, n)
}

// Reset frees every slot and clears the statistics, keeping the capacity.
func (l *Layer) Reset() {
	for k := range l.Pos {
		l.Pos[k] = Free
		l.Role[k] = uint8(Pending)
		l.Acc[k] = 0
		l.Last[k] = 0
	}
}

func (l *Layer) row(b, h int) (lo, hi int) {
	if b < 0 || b >= l.B || h < 0 || h >= l.H {
		panic(fmt.Errorf("kvcache: (b=%d, h=%d) out of range [%d, %d]", b, h, l.B, l.H))
	}
	lo = (b*l.H + h) * l.Cap
	return lo, lo + l.Cap
}

// View returns the slots of (b, h), aliasing the table. It panics if b or h is out of range.
func (l *Layer) View(b, h int) Slots {
	lo, hi := l.row(b, h)
	return Slots{Pos: l.Pos[lo:hi:hi], Role: l.Role[lo:hi:hi], Acc: l.Acc[lo:hi:hi], Last: l.Last[lo:hi:hi]}
}

// Place stores position pos in the lowest free slot of (b, h), marks it [Pending] with zero
// statistics, and returns the slot index. When every slot is occupied it returns an error wrapping
// [ErrFull].
func (l *Layer) Place(b, h int, pos int32) (slot int, err error) {
	lo, hi := l.row(b, h)
	for k, p := range l.Pos[lo:hi] {
		if p < 0 {
			l.set(lo+k, pos)
			return k, nil
		}
	}
	return -1, fmt.Errorf("%w (b: %d, h: %d, cap: %d, pos: %d)", ErrFull, b, h, l.Cap, pos)
}

func (l *Layer) set(i int, pos int32) {
	l.Pos[i] = pos
	l.Role[i] = uint8(Pending)
	l.Acc[i] = 0
	l.Last[i] = 0
}

// Grow enlarges the capacity to newCap slots per (b, h), keeping every slot at its index; the new
// slots are free. The caller grows the device buffers the same way (pad the capacity axis at the
// end). newCap ≤ Cap is a no-op.
func (l *Layer) Grow(newCap int) {
	if newCap <= l.Cap {
		return
	}
	old := *l
	l.alloc(newCap)
	l.Reset()
	for r := 0; r < l.B*l.H; r++ {
		src, dst := r*old.Cap, r*newCap
		copy(l.Pos[dst:dst+old.Cap], old.Pos[src:src+old.Cap])
		copy(l.Role[dst:dst+old.Cap], old.Role[src:src+old.Cap])
		copy(l.Acc[dst:dst+old.Cap], old.Acc[src:src+old.Cap])
		copy(l.Last[dst:dst+old.Cap], old.Last[src:src+old.Cap])
	}
}

// ValidMask writes the validity mask `[B, H, Cap]` for the device: 1 for an occupied slot, 0 for a
// free one. It panics unless len(dst) == B·H·Cap.
func (l *Layer) ValidMask(dst []float32) {
	l.checkLen(len(dst))
	for k, p := range l.Pos {
		if p >= 0 {
			dst[k] = 1
		} else {
			dst[k] = 0
		}
	}
}

// ValidBool is [Layer.ValidMask] as booleans (true = occupied).
func (l *Layer) ValidBool(dst []bool) {
	l.checkLen(len(dst))
	for k, p := range l.Pos {
		dst[k] = p >= 0
	}
}

func (l *Layer) checkLen(n int) {
	if n != len(l.Pos) {
		panic(fmt.Errorf("kvcache: mask length %d, want B·H·Cap = %d·%d·%d = %d", n, l.B, l.H, l.Cap, len(l.Pos)))
	}
}

// Occupied returns the number of occupied slots of (b, h).
func (l *Layer) Occupied(b, h int) int { return l.View(b, h).Occupied() }

// MaxOccupied returns the largest occupancy over all (b, h).
func (l *Layer) MaxOccupied() int {
	m := 0
	for r := 0; r < l.B*l.H; r++ {
		m = max(m, l.Cap-countFree(l.Pos[r*l.Cap:(r+1)*l.Cap]))
	}
	return m
}
