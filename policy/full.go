package policy

import "natsbench/kvcache"

// Full is full causal attention: every token stays in the cache for good.
type Full struct{}

var _ kvcache.Evictor = Full{}

// Validate always succeeds.
func (Full) Validate() error { return nil }

// Needs returns 0: full attention needs no statistics.
func (Full) Needs() kvcache.Stat { return 0 }

// Capacity returns n: every token is kept.
func (Full) Capacity(n int) int { return n }

// After evicts nothing.
func (Full) After(int, kvcache.Slots, int32, kvcache.Role) {}

// FullMask returns the n×n causal mask: m[i][j] = j ≤ i.
func FullMask(n int) [][]bool {
	m := newMask(n)
	for i := 0; i < n; i++ {
		for j := 0; j <= i; j++ {
			m[i][j] = true
		}
	}
	return m
}
