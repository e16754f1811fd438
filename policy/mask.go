package policy

import (
	"fmt"

	"natsbench/kvcache"
)

// newMask returns an n×n all-false mask.
func newMask(n int) [][]bool {
	if n < 0 {
		panic(fmt.Errorf("policy: mask size must be ≥ 0, got %d", n))
	}
	m := make([][]bool, n)
	for i := range m {
		m[i] = make([]bool, n)
	}
	return m
}

// MaskRows renders a mask as one string per query row, ollama style: '.' where the query attends
// (additive bias 0) and 'x' where it is masked (bias −∞). Useful in test failure messages.
func MaskRows(m [][]bool) []string {
	rows := make([]string, len(m))
	for i, r := range m {
		b := make([]byte, len(r))
		for j, v := range r {
			b[j] = 'x'
			if v {
				b[j] = '.'
			}
		}
		rows[i] = string(b)
	}
	return rows
}

// RowSum returns the number of keys query i sees in m: the KV-size measure of step i.
func RowSum(m [][]bool, i int) int {
	n := 0
	for _, v := range m[i] {
		if v {
			n++
		}
	}
	return n
}

// isGlobal reports whether r acts as Global: anything but Local and Window (so Pending, an undecided
// role, is kept like Global).
func isGlobal(r kvcache.Role) bool { return r != kvcache.Local && r != kvcache.Window }
