package policy

import (
	"fmt"

	"natsbench/kvcache"
)

// TOVA is Token Omission Via Attention (Oren et al. 2024): each query attends to at most Budget
// keys, itself included, and after every step the keys the current query attended to least are
// dropped.
//
// Exact rule, after token i has attended: while more than Budget − 1 slots are occupied, evict the
// occupied slot with the smallest attention from query i (Last: the decode graph's [kvcache.Stats]
// Attn, combined over the GQA group; per (layer, b, KV head)); on equal attention evict the older
// position. The new token i itself is a candidate, as in the original TOVA. Data dependent: no
// equivalent mask.
type TOVA struct {
	// Budget is the most keys a query attends to, itself included (≥ 1).
	Budget int `toml:"budget"`
}

var _ kvcache.Evictor = TOVA{}

// Validate checks Budget ≥ 1.
func (p TOVA) Validate() error {
	if p.Budget < 1 {
		return fmt.Errorf("policy.TOVA: Budget must be ≥ 1, got %d", p.Budget)
	}
	return nil
}

// Needs returns LastAttn.
func (TOVA) Needs() kvcache.Stat { return kvcache.LastAttn }

// Capacity returns min(n, Budget).
func (p TOVA) Capacity(n int) int { return min(n, p.Budget) }

// After evicts by the rule in the type comment.
func (p TOVA) After(_ int, s kvcache.Slots, _ int32, _ kvcache.Role) {
	v, n := tovaVictim(s)
	for n > p.Budget-1 && v >= 0 {
		s.Evict(v)
		if n--; n > p.Budget-1 {
			v, _ = tovaVictim(s)
		}
	}
}

// tovaVictim returns the slot TOVA evicts next (−1 if none) and the occupancy, in one pass.
func tovaVictim(s kvcache.Slots) (v, n int) {
	v = -1
	var va float32 // Last of the current victim
	var vp int32   // its position
	last := s.Last[:len(s.Pos)]
	for k, j := range s.Pos {
		if j < 0 {
			continue
		}
		n++
		if a := last[k]; v < 0 || a < va || (a == va && j < vp) {
			v, va, vp = k, a, j
		}
	}
	return v, n
}
