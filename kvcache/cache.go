package kvcache

import (
	"errors"
	"fmt"
)

// Evictor is an inference-time eviction policy (STYLE.md §B3). After the token at position pos has
// been placed and has attended over the valid slots, [Cache.End] calls After once per
// (layer, batch, KV head); After frees the slots the next query must not see by setting
// s.Pos[k] = [Free] (or [Slots.Evict]). Implementations are pure and deterministic: no tensors, no
// I/O, no allocation per call.
//
// Implementations live in package policy: Full, StreamingLLM, H2O, TOVA and NAtS.
type Evictor interface {
	// Needs returns the statistics the decode graph must emit for this policy.
	Needs() Stat
	// Capacity returns the most slots one (layer, batch, head) can occupy while decoding n tokens,
	// counting the token being attended; the engine sizes its buffers with Bucket(Capacity(n)).
	Capacity(n int) int
	// After frees slots of s once the token at pos has attended. role is the token's NAtS role for
	// this KV head when Needs includes Roles, else Pending. The new token's slot is the one with
	// s.Pos[k] == pos; its Acc and Last already include the current query's attention.
	After(layer int, s Slots, pos int32, role Role)
}

// Stats is what the decode graph returns for one token, in buffers owned by the [Cache] and sized
// to its current capacity. A field is nil when the evictor does not need it.
type Stats struct {
	// Attn[layer] is `[B, H, Cap]`: the current query's attention probability for each slot of each
	// KV head, combined over the query heads of the GQA group (sum or mean: policies only compare
	// values within one (layer, b, h), so any fixed positive scaling is equivalent). Free slots are
	// ignored. Present when Needs has AccAttn or LastAttn.
	Attn [][]float32
	// Roles[layer] is `[B, H]`: the NAtS Role (as uint8) of the current token per KV head. In the
	// chunk variant only the value given at a chunk's last token is used. Present when Needs has
	// Roles.
	Roles [][]uint8
}

// Cache is the slot tables of all layers plus the shared step counter: the position of the next
// token. It runs the host protocol of one decoding step ([Cache.Begin], device, [Cache.End], or
// [Cache.Step]) without allocating.
type Cache struct {
	// Layers holds one table per transformer layer; all share B, H and Cap.
	Layers []*Layer

	ev    Evictor
	needs Stat
	pos   int32 // position of the next token
	open  bool  // between Begin and End
	b, h  int

	slots []int32 // [L, B, H] slots of the token being decoded
	occ   []int32 // [L, B, H] occupancy during the attention of the last begun step
	kv    int     // sum of occ
	stats Stats
}

// New returns an empty cache of layers layers, each with batch b, h KV heads and cp slots per
// (b, h). ev may be nil, meaning keep everything (full attention). If ev has a
// `Validate() error` method it is called. Errors name the offending field.
func New(layers, b, h, cp int, ev Evictor) (*Cache, error) {
	switch {
	case layers < 1:
		return nil, fmt.Errorf("kvcache.New: layers must be ≥ 1, got %d", layers)
	case b < 1:
		return nil, fmt.Errorf("kvcache.New: batch must be ≥ 1, got %d", b)
	case h < 1:
		return nil, fmt.Errorf("kvcache.New: heads must be ≥ 1, got %d", h)
	case cp < 0:
		return nil, fmt.Errorf("kvcache.New: capacity must be ≥ 0, got %d", cp)
	}
	if v, ok := ev.(interface{ Validate() error }); ok {
		if err := v.Validate(); err != nil {
			return nil, fmt.Errorf("kvcache.New: %w", err)
		}
	}
	c := &Cache{ev: ev, b: b, h: h}
	if ev != nil {
		c.needs = ev.Needs()
	}
	c.Layers = make([]*Layer, layers)
	for i := range c.Layers {
		c.Layers[i] = NewLayer(b, h, cp)
	}
	c.slots = make([]int32, layers*b*h)
	c.occ = make([]int32, layers*b*h)
	if c.needs&(AccAttn|LastAttn) != 0 {
		c.stats.Attn = make([][]float32, layers)
	}
	if c.needs.Has(Roles) {
		c.stats.Roles = make([][]uint8, layers)
		for i := range c.stats.Roles {
			c.stats.Roles[i] = make([]uint8, b*h)
		}
	}
	c.allocStats()
	return c, nil
}

func (c *Cache) allocStats() {
	for i := range c.stats.Attn {
		c.stats.Attn[i] = make([]float32, c.b*c.h*c.Cap())
	}
}

// Evictor returns the policy the cache was built with (nil: keep everything).
func (c *Cache) Evictor() Evictor { return c.ev }

// Needs returns the statistics the device must fill in [Cache.Stats] each step.
func (c *Cache) Needs() Stat { return c.needs }

// Len returns the number of tokens decoded so far, which is the position of the next token.
func (c *Cache) Len() int { return int(c.pos) }

// Cap returns the number of slots per (layer, b, h).
func (c *Cache) Cap() int { return c.Layers[0].Cap }

// MaxOccupied returns the largest occupancy over all (layer, b, h).
func (c *Cache) MaxOccupied() int {
	m := 0
	for _, l := range c.Layers {
		m = max(m, l.MaxOccupied())
	}
	return m
}

// NextCap returns the capacity needed to place one more token: Cap when every (layer, b, h) has a
// free slot, else Bucket(MaxOccupied()+1). After [ErrFull] from [Cache.Begin], grow the device
// buffers and the cache ([Cache.Grow]) to NextCap and begin again.
func (c *Cache) NextCap() int {
	if m := c.MaxOccupied(); m >= c.Cap() {
		return Bucket(m + 1)
	}
	return c.Cap()
}

// Grow enlarges every layer to newCap slots (see [Layer.Grow]) and reallocates the attention
// buffers of [Cache.Stats]. newCap ≤ Cap is a no-op. It must not be called between Begin and End.
func (c *Cache) Grow(newCap int) {
	if newCap <= c.Cap() {
		return
	}
	for _, l := range c.Layers {
		l.Grow(newCap)
	}
	c.allocStats()
}

// Reset frees every slot and sets the step counter to 0, keeping the capacity.
func (c *Cache) Reset() {
	for _, l := range c.Layers {
		l.Reset()
	}
	c.pos, c.open, c.kv = 0, false, 0
	clear(c.occ)
}

// Begin places the token at position Len() in the lowest free slot of every (layer, b, h) and
// returns the slot indices, `[layers, B, H]` flat (index (layer·B + b)·H + h), valid until the next
// Begin. It also records the occupancy each query sees ([Cache.Occupancy]). If some (layer, b, h)
// is full, nothing is placed and the error wraps [ErrFull]. The device writes the token's K/V at the
// returned slots, attends with [Layer.ValidMask], fills [Cache.Stats] and the caller calls
// [Cache.End].
func (c *Cache) Begin() ([]int32, error) {
	if c.open {
		return nil, errors.New("kvcache: Begin called twice without End")
	}
	pos := c.pos
	kv := 0
	i := 0
	for li, l := range c.Layers {
		cp := l.Cap
		for r := 0; r < c.b*c.h; r++ {
			row := l.Pos[r*cp : (r+1)*cp]
			free := firstFree(row)
			if free < 0 {
				c.unplace(i)
				return nil, fmt.Errorf("%w (layer: %d, b: %d, h: %d, cap: %d, pos: %d)", ErrFull, li, r/c.h, r%c.h, cp, pos)
			}
			n := cp - countFree(row[free:]) // occupied before placing
			l.set(r*cp+free, pos)
			c.slots[i] = int32(free)
			c.occ[i] = int32(n + 1)
			kv += n + 1
			i++
		}
	}
	c.kv = kv
	c.open = true
	return c.slots, nil
}

// unplace frees the first n slots recorded in c.slots.
func (c *Cache) unplace(n int) {
	for i := 0; i < n; i++ {
		l := c.Layers[i/(c.b*c.h)]
		r := i % (c.b * c.h)
		l.Pos[r*l.Cap+int(c.slots[i])] = Free
	}
}

// Abort undoes the last [Cache.Begin] (frees the slots it placed) when the device step failed.
func (c *Cache) Abort() {
	if c.open {
		c.unplace(len(c.slots))
		c.open = false
		c.kv = 0
		clear(c.occ)
	}
}

// Stats returns the buffers the device fills between Begin and End. They are reallocated by Grow.
func (c *Cache) Stats() *Stats { return &c.stats }

// End folds the device's attention into the per-slot statistics (Acc += Attn for [AccAttn],
// Last = Attn for [LastAttn]; values of free slots are meaningless and cleared by placement), calls the evictor's After for every
// (layer, b, h) with the token's role (from Stats.Roles when the evictor needs [Roles], else
// [Pending]) and advances the step counter.
func (c *Cache) End() error {
	if !c.open {
		return errors.New("kvcache: End called without Begin")
	}
	acc, last := c.needs.Has(AccAttn), c.needs.Has(LastAttn)
	for li, l := range c.Layers {
		cp := l.Cap
		var attn []float32
		if acc || last {
			attn = c.stats.Attn[li]
		}
		for r := 0; r < c.b*c.h; r++ {
			lo, hi := r*cp, (r+1)*cp
			if acc {
				a, ac := attn[lo:hi], l.Acc[lo:hi]
				for k := range ac {
					ac[k] += a[k] // free slots accumulate garbage; Place clears it
				}
			}
			if last {
				copy(l.Last[lo:hi], attn[lo:hi])
			}
			if c.ev == nil {
				continue
			}
			role := Pending
			if c.stats.Roles != nil {
				role = Role(c.stats.Roles[li][r])
			}
			s := Slots{Pos: l.Pos[lo:hi:hi], Role: l.Role[lo:hi:hi], Acc: l.Acc[lo:hi:hi], Last: l.Last[lo:hi:hi]}
			c.ev.After(li, s, c.pos, role)
		}
	}
	c.pos++
	c.open = false
	return nil
}

// Step runs the whole host protocol for one token: Begin, run (the device step: write K/V at slots,
// attend, fill st), End. If run fails, the placement is undone and the error returned. If the cache
// is full the error wraps [ErrFull] and run is not called (see [Cache.NextCap]).
func (c *Cache) Step(run func(slots []int32, st *Stats) error) error {
	slots, err := c.Begin()
	if err != nil {
		return err
	}
	if err := run(slots, &c.stats); err != nil {
		c.Abort()
		return fmt.Errorf("kvcache: device step at pos %d: %w", c.pos, err)
	}
	return c.End()
}

// Occupancy returns, `[layers, B, H]` flat, the number of keys each query of the last begun step
// attended over (occupied slots after placing the new token, before eviction). By the equivalence
// contract this equals the row sum of the method's mask: the KV-size measure of NATS-SPEC §1.9.
// (The official NAtS code also counts the W slots of its sliding-window ring buffer whether or not
// they hold a visible key; this count does not.)
// The slice is owned by the cache and overwritten by the next Begin.
func (c *Cache) Occupancy() []int32 { return c.occ }

// KVTokens returns the sum of [Cache.Occupancy] over all layers, batch rows and heads.
func (c *Cache) KVTokens() int { return c.kv }

// KVFraction returns the mean over (layer, b, h) of the last begun step's occupancy divided by the
// number of tokens so far (position + 1): the fraction of the full KV cache kept at that step.
// It returns 0 before the first Begin.
func (c *Cache) KVFraction() float64 {
	n := int(c.pos)
	if !c.open {
		n-- // last begun step already ended
	}
	if n < 0 || c.kv == 0 {
		return 0
	}
	return float64(c.kv) / float64(len(c.occ)*(n+1))
}

// firstFree returns the index of the first free slot of row, or −1.
func firstFree(row []int32) int {
	for k, p := range row {
		if p < 0 {
			return k
		}
	}
	return -1
}

// countFree returns the number of free (negative) entries of row, without branches.
func countFree(row []int32) int {
	n := 0
	for len(row) >= 4 {
		n += int(uint32(row[0])>>31 + uint32(row[1])>>31 + uint32(row[2])>>31 + uint32(row[3])>>31)
		row = row[4:]
	}
	for _, p := range row {
		n += int(uint32(p) >> 31)
	}
	return n
}
