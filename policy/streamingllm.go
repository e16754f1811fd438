package policy

import (
	"fmt"

	"natsbench/kvcache"
)

// StreamingLLM keeps the first Sinks tokens (attention sinks) and the most recent tokens, so that
// each query attends to at most Budget keys including itself (Xiao et al. 2023; `att_sink` in the
// NAtS code, NATS-SPEC §2.5, with start_size = Sinks and recent_size = Budget − Sinks).
//
// Query i sees key j ≤ i iff j < Sinks or j > i − (Budget − Sinks): the sinks and the Budget − Sinks
// most recent tokens, itself included ([StreamingLLMMask]).
type StreamingLLM struct {
	// Sinks is the number of leading tokens always kept (≥ 0, < Budget). NAtS code default 4.
	Sinks int `toml:"sinks"`
	// Budget is the most keys a query attends to, itself included (≥ 1).
	Budget int `toml:"budget"`
}

var _ kvcache.Evictor = StreamingLLM{}

// Validate checks 0 ≤ Sinks < Budget.
func (p StreamingLLM) Validate() error {
	switch {
	case p.Budget < 1:
		return fmt.Errorf("policy.StreamingLLM: Budget must be ≥ 1, got %d", p.Budget)
	case p.Sinks < 0:
		return fmt.Errorf("policy.StreamingLLM: Sinks must be ≥ 0, got %d", p.Sinks)
	case p.Sinks >= p.Budget:
		return fmt.Errorf("policy.StreamingLLM: Sinks (%d) must be < Budget (%d)", p.Sinks, p.Budget)
	}
	return nil
}

// Needs returns 0: the policy depends on positions only.
func (StreamingLLM) Needs() kvcache.Stat { return 0 }

// Capacity returns min(n, Budget).
func (p StreamingLLM) Capacity(n int) int { return min(n, p.Budget) }

// After evicts every key that query pos+1 must not see: positions j with
// Sinks ≤ j ≤ pos + 1 − (Budget − Sinks).
func (p StreamingLLM) After(_ int, s kvcache.Slots, pos int32, _ kvcache.Role) {
	sinks := int32(p.Sinks)
	last := pos + 1 - int32(p.Budget-p.Sinks) // newest position that leaves the window
	for k, j := range s.Pos {
		if j >= sinks && j <= last {
			s.Evict(k)
		}
	}
}

// StreamingLLMMask returns the n×n mask m[i][j] = j ≤ i and (j < sinks or j > i − (budget − sinks)).
func StreamingLLMMask(n, sinks, budget int) [][]bool {
	m := newMask(n)
	for i := 0; i < n; i++ {
		for j := 0; j <= i; j++ {
			m[i][j] = j < sinks || j > i-(budget-sinks)
		}
	}
	return m
}
