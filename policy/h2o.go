package policy

import (
	"fmt"

	"natsbench/kvcache"
)

// H2O is the Heavy-Hitter Oracle (Zhang et al. 2023; `h2o` in the NAtS code, NATS-SPEC §2.5): each
// query attends to at most Budget keys, itself included — the Recent most recent tokens (itself
// included) plus the Budget − Recent earlier tokens with the largest accumulated attention.
//
// Exact rule, after token i has attended (Acc already includes query i's attention):
// while more than Budget − 1 slots are occupied, evict, among the occupied positions
// j ≤ i + 1 − Recent (those outside the next query's recent window), the one with the smallest
// accumulated attention Acc; on equal Acc evict the newer one (the older token is kept). Positions
// j ≥ i + 2 − Recent are never evicted, so query i+1 sees its Recent − 1 predecessors, at most
// Budget − Recent heavy hitters, and itself. Acc sums, per (layer, b, KV head), the attention
// probabilities a slot received from every query since it was placed (the decode graph's [kvcache.Stats]
// Attn, combined over the GQA group). Data dependent: no equivalent mask.
type H2O struct {
	// Budget is the most keys a query attends to, itself included (≥ 1).
	Budget int `toml:"budget"`
	// Recent is the size of the recent window, the query itself included (1 ≤ Recent ≤ Budget).
	// NAtS code default: recent_size 64 with num_hh_tokens 64, i.e. Budget 128, Recent 64.
	Recent int `toml:"recent"`
}

var _ kvcache.Evictor = H2O{}

// Validate checks Budget ≥ 1 and 1 ≤ Recent ≤ Budget.
func (p H2O) Validate() error {
	switch {
	case p.Budget < 1:
		return fmt.Errorf("policy.H2O: Budget must be ≥ 1, got %d", p.Budget)
	case p.Recent < 1:
		return fmt.Errorf("policy.H2O: Recent must be ≥ 1 (it counts the query itself), got %d", p.Recent)
	case p.Recent > p.Budget:
		return fmt.Errorf("policy.H2O: Recent (%d) must be ≤ Budget (%d)", p.Recent, p.Budget)
	}
	return nil
}

// Needs returns AccAttn.
func (H2O) Needs() kvcache.Stat { return kvcache.AccAttn }

// Capacity returns min(n, Budget).
func (p H2O) Capacity(n int) int { return min(n, p.Budget) }

// After evicts by the rule in the type comment.
func (p H2O) After(_ int, s kvcache.Slots, pos int32, _ kvcache.Role) {
	last := pos + 1 - int32(p.Recent) // newest evictable position
	v, n := h2oVictim(s, last)
	for n > p.Budget-1 && v >= 0 {
		s.Evict(v)
		if n--; n > p.Budget-1 {
			v, _ = h2oVictim(s, last)
		}
	}
}

// h2oVictim returns the slot H2O evicts next (−1 if none is evictable) and the occupancy, in one
// pass.
func h2oVictim(s kvcache.Slots, last int32) (v, n int) {
	v = -1
	var va float32 // Acc of the current victim
	var vp int32   // its position
	acc := s.Acc[:len(s.Pos)]
	for k, j := range s.Pos {
		if j < 0 {
			continue
		}
		n++
		if j <= last {
			if a := acc[k]; v < 0 || a < va || (a == va && j > vp) {
				v, va, vp = k, a, j
			}
		}
	}
	return v, n
}
