// Package suggest finds the closest known name for "did you mean" hints in error messages (sweep keys, metric
// names, methods). Standard library only, so every package may use it.
package suggest

import "fmt"

// DidYouMean returns ` (did you mean "x"?)` for the known name closest to name by edit distance, when it is
// within 2 edits or a third of the name's length; else "".
func DidYouMean(name string, known []string) string {
	best, bd := "", 1<<30
	for _, k := range known {
		if d := Distance(name, k); d < bd {
			best, bd = k, d
		}
	}
	if best != "" && (bd <= 2 || bd <= len(name)/3) {
		return fmt.Sprintf(" (did you mean %q?)", best)
	}
	return ""
}

// Distance is the Levenshtein distance of two strings (bytes); strings over 200 bytes count as far apart.
func Distance(a, b string) int {
	if len(a) > 200 || len(b) > 200 {
		return 1 << 20
	}
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			c := 1
			if a[i-1] == b[j-1] {
				c = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+c)
		}
		prev = cur
	}
	return prev[len(b)]
}
