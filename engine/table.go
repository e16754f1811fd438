package engine

import (
	"fmt"
	"slices"
	"sync"

	"natsbench/kvcache"
)

// table is the host slot table of the engine: per (layer, batch row, KV head) — a "row", index
// (layer·B + b)·H + h — Cap slots, each free or holding one position. It has the semantics of
// kvcache.Cache driven token by token (Begin/End): a new token takes the lowest free slot of every row, then
// the policy frees slots. evict reports every freed slot, so that the engine can update the device's
// validity mask incrementally.
type table interface {
	// Cap returns the slots per row.
	Cap() int
	// Layers returns the slot tables, `[B, H, Cap]` per layer (Pos, Role; Acc and Last only for the generic table).
	Layers() []*kvcache.Layer
	// Place puts position pos in the lowest free slot of every row; an error wrapping kvcache.ErrFull places
	// nothing.
	Place(pos int32) error
	// Slots returns the slots of the last Place, `[rows]`.
	Slots() []int32
	// End applies the policy after the token at pos has attended. roles is `[rows]` (NAtS; nil otherwise), attn
	// is per layer `[B·H·Cap]` (H2O, TOVA; nil otherwise).
	End(pos int32, roles []uint8, attn [][]float32, evict func(row, slot int, pos int32)) error
	// Expire frees, before End(pos), the slots End(pos) frees whatever the token's roles and attention (NAtS and
	// StreamingLLM tokens leaving their window), reporting each to evict; End(pos) then frees only the rest. It needs
	// nothing the step at pos computes, so the engine runs it while the device runs that step. The table ends the
	// same with or without it: its frees only add holes to heaps, whose order does not matter, and concern no token
	// End(pos) adds to a window. A table with no such slots (full attention, kvcache.Cache) does nothing.
	Expire(pos int32, evict func(row, slot int, pos int32))
	// Grow enlarges every row to newCap slots, keeping slot indices.
	Grow(newCap int)
	// NextCap is the capacity needed to place one more token.
	NextCap() int
	// Occupied returns the occupied slots of a row.
	Occupied(row int) int
	// PeakOccupied is the most slots any row has held at once since the table was made (right after a Place,
	// before the policy's evictions): the occupancy that sets the capacity.
	PeakOccupied() int
	// PeakRow is the row that first held PeakOccupied slots.
	PeakRow() int
}

// newTable returns the table for a policy: the fast table for Full, StreamingLLM and NAtS (O(log holes) per row and
// token; growing in kvcache.BucketSteps(·, steps) buckets, its rows split over workers goroutines), kvcache.Cache
// for any other evictor (bounded by its budget; powers of two).
func newTable(s spec, ev kvcache.Evictor, layers, b, h, capacity, steps, workers int) (table, error) {
	if s.kind == kindGeneric {
		c, err := kvcache.New(layers, b, h, capacity, ev)
		if err != nil {
			return nil, err
		}
		return &genericTable{c: c, b: b, h: h, slots: make([]int32, layers*b*h)}, nil
	}
	t := newFastTable(s, layers, b, h, capacity)
	t.steps, t.workers = steps, workers
	return t, nil
}

// posSlot is a cached token of a row.
type posSlot struct{ pos, slot int32 }

// fastRow is the bookkeeping of one row of the fast table.
type fastRow struct {
	holes   []int32   // min-heap of the freed slots below fresh
	fresh   int32     // slots [fresh, Cap) have never held a token since the table was made
	fifo    []posSlot // StreamingLLM window tokens / NAtS Window tokens, in position order (from head)
	head    int
	locals  []posSlot // NAtS Local tokens
	pending []posSlot // NAtS tokens of the current, incomplete chunk
}

// fastTable reproduces kvcache.Cache with policy.Full, policy.StreamingLLM or policy.NAtS exactly (same slots,
// same roles) at O(log holes) per token and row instead of O(Cap): the lowest free slot is the lowest hole an
// eviction left (a heap) or else the lowest never-used slot (a counter), and the tokens a policy evicts next sit
// at the head of a queue (window tokens, in position order) or in a list (NAtS Local tokens, all evicted by the
// next Global decision).
type fastTable struct {
	s       spec
	b, h    int
	layers  []*kvcache.Layer
	rows    []fastRow
	slots   []int32
	steps   int // capacity buckets per doubling (kvcache.BucketSteps); 0 or 1 = powers of two
	workers int // Options.TableWorkers
	peak    int // PeakOccupied
	peakAt  int // PeakRow
	// decided counts the NAtS decisions per layer and kvcache.Role (Global, Local, Window) since the table was made,
	// the forced-Global first chunk left out (as CalibrateRoles counts them).
	decided [][3]int64
	parts   []rowPart // per run of rows (see each), what Place and End found there
}

// rowPart is what Place or End found in one contiguous run of rows: the slots freed, in row order, the NAtS
// decisions per layer, and the fullest row placed.
type rowPart struct {
	freed        []freedSlot
	decided      [][3]int64
	peak, peakAt int
	_            [64]byte // parts are written from different goroutines: none shares a cache line
}

type freedSlot struct{ row, slot, pos int32 }

// minPartRows is the fewest rows a run of rows gets when Options.TableWorkers splits them (a variable for tests).
// A row's work is ~50–100 ns on the H200 machine's CPU (a few writes to the [L, B, KV, Cap] slot arrays, mostly
// cache misses, and a small heap operation when evictions left holes): 8 layers × batch 32 × 8 KV heads took 0.46 ms
// of a 5.1 ms decoding step there, in one pass (results/latency32k).
var minPartRows = 256

// each runs f over the rows split into contiguous runs (Options.TableWorkers of them, each of at least minPartRows
// rows), one per element of t.parts, on as many goroutines, and returns when all have returned. f must touch only
// its rows and its part; each part's freed list starts empty.
func (t *fastTable) each(f func(p *rowPart, lo, hi int)) {
	n := len(t.rows)
	g := 1
	if t.workers > 1 {
		g = max(1, min(t.workers, n/minPartRows))
	}
	if len(t.parts) != g {
		t.parts = make([]rowPart, g)
		for j := range t.parts {
			t.parts[j].decided = make([][3]int64, len(t.layers))
		}
	}
	for j := range t.parts { // what report passes on is this call's
		t.parts[j].freed = t.parts[j].freed[:0]
	}
	if g == 1 {
		f(&t.parts[0], 0, n)
		return
	}
	var wg sync.WaitGroup
	wg.Add(g - 1)
	for j := 1; j < g; j++ {
		go func() {
			defer wg.Done()
			f(&t.parts[j], j*n/g, (j+1)*n/g)
		}()
	}
	f(&t.parts[0], 0, n/g)
	wg.Wait()
}

func newFastTable(s spec, layers, b, h, capacity int) *fastTable {
	t := &fastTable{s: s, b: b, h: h}
	t.layers = make([]*kvcache.Layer, layers)
	for i := range t.layers {
		t.layers[i] = kvcache.NewLayer(b, h, capacity)
	}
	t.rows = make([]fastRow, layers*b*h)
	// Every row starts with all slots fresh: the lowest free slot is the lowest hole if there is one (holes are
	// below fresh), else fresh. A row that never evicts (full attention) then places in O(1) without a heap, and
	// the heap holds only the holes evictions left (NAtS: about its window), not all free slots.
	t.slots = make([]int32, layers*b*h)
	t.decided = make([][3]int64, layers)
	return t
}

func (t *fastTable) Cap() int                 { return t.layers[0].Cap }
func (t *fastTable) Layers() []*kvcache.Layer { return t.layers }
func (t *fastTable) Slots() []int32           { return t.slots }
func (t *fastTable) Occupied(row int) int     { return int(t.rows[row].fresh) - len(t.rows[row].holes) }
func (t *fastTable) PeakOccupied() int        { return t.peak }
func (t *fastTable) PeakRow() int             { return t.peakAt }

func (t *fastTable) NextCap() int {
	for r := range t.rows {
		if t.rows[r].full(t.Cap()) {
			return kvcache.BucketSteps(t.Cap()+1, t.steps)
		}
	}
	return t.Cap()
}

func (t *fastTable) Place(pos int32) error {
	for r := range t.rows {
		if t.rows[r].full(t.Cap()) {
			bh := t.b * t.h
			return fmt.Errorf("%w (layer: %d, b: %d, h: %d, cap: %d, pos: %d)", kvcache.ErrFull, r/bh, r%bh/t.h, r%t.h, t.Cap(), pos)
		}
	}
	cp := t.Cap()
	bh := t.b * t.h
	t.each(func(p *rowPart, lo, hi int) {
		p.peak, p.peakAt = 0, 0
		for r := lo; r < hi; r++ {
			row := &t.rows[r]
			if n := int(row.fresh) - len(row.holes) + 1; n > p.peak {
				p.peak, p.peakAt = n, r
			}
			var s int32
			if len(row.holes) > 0 {
				s = heapPop(&row.holes)
			} else {
				s = row.fresh
				row.fresh++
			}
			t.slots[r] = s
			l := t.layers[r/bh]
			i := (r%bh)*cp + int(s)
			l.Pos[i], l.Role[i] = pos, uint8(kvcache.Pending) // Acc and Last stay 0: no fast-table policy reads them
		}
	})
	for _, p := range t.parts { // in row order: the first row to reach the peak, as one pass over the rows finds it
		if p.peak > t.peak {
			t.peak, t.peakAt = p.peak, p.peakAt
		}
	}
	return nil
}

// free frees a row's slot and records it in the row's part.
func (t *fastTable) free(p *rowPart, r int, e posSlot) {
	bh := t.b * t.h
	l := t.layers[r/bh]
	l.Pos[(r%bh)*l.Cap+int(e.slot)] = kvcache.Free
	heapPush(&t.rows[r].holes, e.slot)
	p.freed = append(p.freed, freedSlot{int32(r), e.slot, e.pos})
}

func (t *fastTable) End(pos int32, roles []uint8, _ [][]float32, evict func(row, slot int, pos int32)) error {
	switch t.s.kind {
	case kindFull:
		return nil
	case kindSink:
		c, last := t.windowEnd(pos)
		t.each(func(p *rowPart, lo, hi int) {
			for r := lo; r < hi; r++ {
				row := &t.rows[r]
				if pos >= int32(t.s.sinks) {
					row.fifo = append(row.fifo, posSlot{pos, t.slots[r]})
				}
				t.expire(p, r, c, last)
			}
		})
	case kindNAtS:
		if roles == nil {
			return fmt.Errorf("engine: NAtS table step at position %d without roles", pos)
		}
		t.each(func(p *rowPart, lo, hi int) { t.endNAtS(p, lo, hi, pos, roles) })
		for _, p := range t.parts {
			for l, n := range p.decided {
				for k := range n {
					t.decided[l][k] += n[k]
				}
			}
		}
	default:
		return fmt.Errorf("engine: fast table has no rule for policy kind %v", t.s.kind)
	}
	t.report(evict)
	return nil
}

func (t *fastTable) Expire(pos int32, evict func(row, slot int, pos int32)) {
	if t.s.kind != kindSink && t.s.kind != kindNAtS {
		return
	}
	c, last := t.windowEnd(pos)
	t.each(func(p *rowPart, lo, hi int) {
		for r := lo; r < hi; r++ {
			t.expire(p, r, c, last)
		}
	})
	t.report(evict)
}

// windowEnd is what End(pos) frees from a row's window queue (StreamingLLM, NAtS): the tokens whose chunk of c
// tokens ends at or before last.
func (t *fastTable) windowEnd(pos int32) (c, last int32) {
	if t.s.kind == kindSink {
		return 1, pos + 1 - int32(t.s.budget-t.s.sinks) // newest position leaving the window
	}
	return int32(t.s.chunk), pos - int32(t.s.window)
}

// expire frees the head of a row's window queue while its token's chunk of c tokens ends at or before last: the
// tokens that have left the window.
func (t *fastTable) expire(p *rowPart, r int, c, last int32) {
	row := &t.rows[r]
	for row.head < len(row.fifo) && (row.fifo[row.head].pos/c)*c+c-1 <= last {
		t.free(p, r, row.fifo[row.head])
		row.head++
	}
	row.compact()
}

// report passes the slots the last Expire or End freed to evict, in row order.
func (t *fastTable) report(evict func(row, slot int, pos int32)) {
	if evict == nil {
		return
	}
	for _, p := range t.parts {
		for _, f := range p.freed {
			evict(int(f.row), int(f.slot), f.pos)
		}
	}
}

// endNAtS is End for NAtS over rows [lo, hi).
func (t *fastTable) endNAtS(p *rowPart, lo, hi int, pos int32, roles []uint8) {
	clear(p.decided)
	c, last := t.windowEnd(pos)
	complete := pos%c == c-1
	bh := t.b * t.h
	for r := lo; r < hi; r++ {
		row := &t.rows[r]
		row.pending = append(row.pending, posSlot{pos, t.slots[r]})
		if complete {
			role := kvcache.Role(roles[r])
			if pos < c || (role != kvcache.Local && role != kvcache.Window) {
				role = kvcache.Global
			}
			if pos >= c {
				p.decided[r/bh][role]++ // role is Global, Local or Window here: 0, 1, 2
			}
			l := t.layers[r/bh]
			base := (r % bh) * l.Cap
			for _, e := range row.pending {
				l.Role[base+int(e.slot)] = uint8(role)
			}
			switch role {
			case kvcache.Global:
				for _, e := range row.locals {
					t.free(p, r, e)
				}
				row.locals = row.locals[:0]
			case kvcache.Local:
				row.locals = append(row.locals, row.pending...)
			case kvcache.Window:
				row.fifo = append(row.fifo, row.pending...)
			}
			row.pending = row.pending[:0]
		}
		t.expire(p, r, c, last)
	}
}

// full reports whether the row has no free slot at capacity cp.
func (row *fastRow) full(cp int) bool { return len(row.holes) == 0 && int(row.fresh) >= cp }

// compact drops the consumed head of the queue once it is at least half of it.
func (row *fastRow) compact() {
	if row.head > 0 && row.head*2 >= len(row.fifo) {
		n := copy(row.fifo, row.fifo[row.head:])
		row.fifo = row.fifo[:n]
		row.head = 0
	}
}

func (t *fastTable) Grow(newCap int) {
	old := t.Cap()
	if newCap <= old {
		return
	}
	for _, l := range t.layers {
		l.Grow(newCap) // the new slots are fresh in every row
	}
}

// RoleRates returns the NAtS decision rates per layer since the table was made (nil for other policies, or before
// any decision after the first chunk).
func (t *fastTable) RoleRates() []RoleRates {
	if t.s.kind != kindNAtS {
		return nil
	}
	out := make([]RoleRates, len(t.decided))
	for l, n := range t.decided {
		tot := float64(n[0] + n[1] + n[2])
		if tot == 0 {
			return nil
		}
		out[l] = RoleRates{Global: float64(n[0]) / tot, Local: float64(n[1]) / tot, Window: float64(n[2]) / tot}
	}
	return out
}

func heapPush(h *[]int32, v int32) {
	a := append(*h, v)
	i := len(a) - 1
	for i > 0 {
		p := (i - 1) / 2
		if a[p] <= a[i] {
			break
		}
		a[p], a[i] = a[i], a[p]
		i = p
	}
	*h = a
}

func heapPop(h *[]int32) int32 {
	a := *h
	top := a[0]
	n := len(a) - 1
	a[0] = a[n]
	a = a[:n]
	i := 0
	for {
		l, r, m := 2*i+1, 2*i+2, i
		if l < n && a[l] < a[m] {
			m = l
		}
		if r < n && a[r] < a[m] {
			m = r
		}
		if m == i {
			break
		}
		a[m], a[i] = a[i], a[m]
		i = m
	}
	*h = a
	return top
}

// genericTable drives a kvcache.Cache (any evictor) and finds the freed slots by comparing each row with its
// state before End: O(Cap) per token and row, like the evictors it serves.
type genericTable struct {
	peak  int // PeakOccupied
	at    int // PeakRow
	c     *kvcache.Cache
	b, h  int
	slots []int32
	prev  []int32
}

func (t *genericTable) Cap() int                 { return t.c.Cap() }
func (t *genericTable) Layers() []*kvcache.Layer { return t.c.Layers }
func (t *genericTable) Slots() []int32           { return t.slots }
func (t *genericTable) NextCap() int             { return t.c.NextCap() }
func (t *genericTable) Grow(newCap int)          { t.c.Grow(newCap) }

func (t *genericTable) Occupied(row int) int {
	bh := t.b * t.h
	return t.c.Layers[row/bh].Occupied(row%bh/t.h, row%t.h)
}

func (t *genericTable) Place(pos int32) error {
	if int(pos) != t.c.Len() {
		return fmt.Errorf("engine: table at position %d, asked to place %d", t.c.Len(), pos)
	}
	s, err := t.c.Begin()
	if err != nil {
		return err
	}
	copy(t.slots, s)
	for r, n := range t.c.Occupancy() { // per row, counted by Begin
		if int(n) > t.peak {
			t.peak, t.at = int(n), r
		}
	}
	return nil
}

func (t *genericTable) PeakOccupied() int { return t.peak }
func (t *genericTable) PeakRow() int      { return t.at }

func (t *genericTable) Expire(int32, func(row, slot int, pos int32)) {}

func (t *genericTable) End(pos int32, roles []uint8, attn [][]float32, evict func(row, slot int, pos int32)) error {
	st := t.c.Stats()
	if st.Attn != nil {
		if attn == nil {
			return fmt.Errorf("engine: evictor %T needs attention statistics at position %d", t.c.Evictor(), pos)
		}
		for l := range st.Attn {
			copy(st.Attn[l], attn[l])
		}
	}
	if st.Roles != nil {
		if roles == nil {
			return fmt.Errorf("engine: evictor %T needs roles at position %d", t.c.Evictor(), pos)
		}
		bh := t.b * t.h
		for l := range st.Roles {
			copy(st.Roles[l], roles[l*bh:(l+1)*bh])
		}
	}
	t.prev = t.prev[:0]
	for _, l := range t.c.Layers {
		t.prev = append(t.prev, l.Pos...)
	}
	if err := t.c.End(); err != nil {
		return err
	}
	if evict == nil {
		return nil
	}
	off := 0
	cp := t.c.Cap()
	for li, l := range t.c.Layers {
		for k, p := range l.Pos {
			if q := t.prev[off+k]; q >= 0 && p < 0 {
				evict(li*t.b*t.h+k/cp, k%cp, q)
			}
		}
		off += len(l.Pos)
	}
	return nil
}

// rowPositions returns the sorted positions held by a row (tests and diagnostics).
func rowPositions(t table, row int) []int32 {
	bh := len(t.Layers()[0].Pos) / t.Cap()
	l := t.Layers()[row/bh]
	lo := (row % bh) * l.Cap
	var out []int32
	for _, p := range l.Pos[lo : lo+l.Cap] {
		if p >= 0 {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}
