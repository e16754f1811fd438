package longbench

import "math"

// SequenceMatcherRatio is Python's difflib.SequenceMatcher(None, a, b).ratio()
// on the code points of a and b: 2*M/(len(a)+len(b)), where M is the total
// size of the matching blocks found by difflib's recursive longest-match
// algorithm, and 1.0 when both are empty. Autojunk is on, as in difflib's
// default: when len(b) >= 200, every code point occurring more than
// 1+len(b)/100 times in b is "popular" and cannot start a match (it can still
// extend one). With fuzz.ratio(pred, gt), b is the ground truth.
func SequenceMatcherRatio(a, b string) float64 {
	ra, rb := []rune(a), []rune(b)
	total := len(ra) + len(rb)
	if total == 0 {
		return 1.0
	}
	m := newMatcher(ra, rb)
	return 2.0 * float64(m.matches()) / float64(total)
}

type matcher struct {
	a, b []rune
	b2j  map[rune][]int
	// Scratch rows of find_longest_match's j2len dict, indexed by j+1.
	j2len, newj2len []int
	touched, newT   []int
}

func newMatcher(a, b []rune) *matcher {
	b2j := make(map[rune][]int)
	for j, r := range b {
		b2j[r] = append(b2j[r], j)
	}
	if n := len(b); n >= 200 {
		ntest := n/100 + 1
		for r, idx := range b2j {
			if len(idx) > ntest {
				delete(b2j, r)
			}
		}
	}
	return &matcher{
		a: a, b: b, b2j: b2j,
		j2len:    make([]int, len(b)+1),
		newj2len: make([]int, len(b)+1),
	}
}

// findLongestMatch mirrors SequenceMatcher.find_longest_match with no junk
// function: the longest block a[i:i+k] == b[j:j+k] inside the ranges,
// earliest i then earliest j among the longest, built from non-popular
// elements and then extended with equal (possibly popular) neighbours.
func (m *matcher) findLongestMatch(alo, ahi, blo, bhi int) (int, int, int) {
	a, b := m.a, m.b
	besti, bestj, bestsize := alo, blo, 0
	for i := alo; i < ahi; i++ {
		for _, j := range m.b2j[a[i]] {
			if j < blo {
				continue
			}
			if j >= bhi {
				break
			}
			k := m.j2len[j] + 1 // j2len[j] holds the run ending at b[j-1]
			m.newj2len[j+1] = k
			m.newT = append(m.newT, j+1)
			if k > bestsize {
				besti, bestj, bestsize = i-k+1, j-k+1, k
			}
		}
		for _, t := range m.touched {
			m.j2len[t] = 0
		}
		m.j2len, m.newj2len = m.newj2len, m.j2len
		m.touched, m.newT = m.newT, m.touched[:0]
	}
	for _, t := range m.touched {
		m.j2len[t] = 0
	}
	m.touched = m.touched[:0]
	for besti > alo && bestj > blo && a[besti-1] == b[bestj-1] {
		besti, bestj, bestsize = besti-1, bestj-1, bestsize+1
	}
	for besti+bestsize < ahi && bestj+bestsize < bhi && a[besti+bestsize] == b[bestj+bestsize] {
		bestsize++
	}
	return besti, bestj, bestsize
}

// matches is the sum of the sizes of get_matching_blocks().
func (m *matcher) matches() int {
	type span struct{ alo, ahi, blo, bhi int }
	queue := []span{{0, len(m.a), 0, len(m.b)}}
	total := 0
	for len(queue) > 0 {
		s := queue[len(queue)-1]
		queue = queue[:len(queue)-1]
		i, j, k := m.findLongestMatch(s.alo, s.ahi, s.blo, s.bhi)
		if k == 0 {
			continue
		}
		total += k
		if s.alo < i && s.blo < j {
			queue = append(queue, span{s.alo, i, s.blo, j})
		}
		if i+k < s.ahi && j+k < s.bhi {
			queue = append(queue, span{i + k, s.ahi, j + k, s.bhi})
		}
	}
	return total
}

// FuzzRatio is fuzzywuzzy 0.18.0's fuzz.ratio(s1, s2) without
// python-Levenshtein (LongBench's requirements do not install it): 100 when
// s1 == s2 (checked before emptiness, so ("", "") is 100), 0 when either is
// empty, else int(round(100 * SequenceMatcher(None, s1, s2).ratio())) with
// Python's round-half-to-even (62.5 gives 62).
func FuzzRatio(s1, s2 string) int {
	if s1 == s2 {
		return 100
	}
	if s1 == "" || s2 == "" {
		return 0
	}
	return int(math.RoundToEven(100 * SequenceMatcherRatio(s1, s2)))
}
