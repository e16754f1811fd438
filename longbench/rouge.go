package longbench

import "strings"

// Python's default recursion limit and the number of Python frames on the
// stack below the first _recon call of pltrdy rouge's _recon_lcs when
// LongBench's eval.py is run as a script:
//
//	<module> → scorer/scorer_e → rouge_score → Rouge.get_scores →
//	_get_avg_scores → <lambda> → rouge_l_summary_level → _union_lcs →
//	_recon_lcs → _recon …
//
// That is 9 frames for rouge_score and 10 for rouge_zh_score (which calls
// rouge_score). The recursive backtrack uses one frame per step plus one for
// the final base case, so a sentence pair whose LCS backtrack takes s steps
// raises RecursionError (caught by rouge_score, score 0) exactly when
// base + s + 1 > 1000. Calibrated against CPython 3.11 running the official
// metrics.py with rouge 1.0.1: identical single-sentence texts of 990 words
// score 1 and of 991 words score 0 with rouge_score; 989 / 990 with
// rouge_zh_score.
const (
	pyRecursionLimit = 1000
	rougeBaseDepthEN = 9
	rougeBaseDepthZH = 10
)

// rougeSentences mirrors rouge 1.0.1's preprocessing:
// [" ".join(p.split()) for p in text.split(".") if len(p) > 0].
func rougeSentences(text string) []string {
	var out []string
	for _, p := range strings.Split(text, ".") {
		if len(p) > 0 {
			out = append(out, strings.Join(pySplit(p), " "))
		}
	}
	return out
}

// rougeLF is Rouge().get_scores([hyp], [ref], avg=True)["rouge-l"]["f"]
// with every exception mapped to 0, as LongBench's rouge_score does.
// baseDepth is the Python stack depth used to emulate RecursionError.
func rougeLF(hyp, ref string, baseDepth int) float64 {
	hs := rougeSentences(hyp)
	rs := rougeSentences(ref)
	// rouge-1 is computed first and raises "Hypothesis is empty." /
	// "Reference is empty."; nothing else in rouge-1/2 can raise.
	if len(hs) == 0 || len(rs) == 0 {
		return 0
	}
	ids := map[string]int32{}
	toIDs := func(sent string) []int32 {
		ws := strings.Split(sent, " ")
		out := make([]int32, len(ws))
		for i, w := range ws {
			id, ok := ids[w]
			if !ok {
				id = int32(len(ids))
				ids[w] = id
			}
			out[i] = id
		}
		return out
	}
	refIDs := make([][]int32, len(rs))
	hypIDs := make([][]int32, len(hs))
	for i, s := range rs {
		refIDs[i] = toIDs(s)
	}
	for i, s := range hs {
		hypIDs[i] = toIDs(s)
	}
	countSet := func(sents [][]int32) int {
		seen := make([]bool, len(ids))
		n := 0
		for _, s := range sents {
			for _, w := range s {
				if !seen[w] {
					seen[w] = true
					n++
				}
			}
		}
		return n
	}
	m := countSet(refIDs) // |set(reference words)|, always >= 1
	n := countSet(hypIDs) // |set(hypothesis words)|, always >= 1

	maxSteps := pyRecursionLimit - baseDepth - 1
	inUnion := make([]bool, len(ids))
	llcs := 0
	var table []int32
	for _, r := range refIDs {
		for _, c := range hypIDs {
			// The backtrack ends when i or j reaches 0, so it takes at
			// least min(len(r), len(c)) steps.
			if min(len(r), len(c)) > maxSteps {
				return 0
			}
			var ok bool
			table, ok = lcsUnion(r, c, table, inUnion, &llcs, maxSteps)
			if !ok {
				return 0
			}
		}
	}
	rl := float64(llcs) / float64(m)
	pl := float64(llcs) / float64(n)
	return 2.0 * ((pl * rl) / (pl + rl + 1e-8))
}

// lcsUnion fills the LCS table of x (reference words) and y (hypothesis
// words), walks rouge's _recon backtrack (on a mismatch go up when
// T[i-1][j] > T[i][j-1], else left) and adds the collected words to the
// union. It returns false when the walk needs more than maxSteps steps
// (Python would raise RecursionError).
func lcsUnion(x, y []int32, table []int32, inUnion []bool, llcs *int, maxSteps int) ([]int32, bool) {
	nx, ny := len(x), len(y)
	w := ny + 1
	size := (nx + 1) * w
	if cap(table) < size {
		table = make([]int32, size)
	}
	table = table[:size]
	for j := 0; j <= ny; j++ {
		table[j] = 0
	}
	for i := 1; i <= nx; i++ {
		row, prev := table[i*w:(i+1)*w], table[(i-1)*w:i*w]
		row[0] = 0
		xi := x[i-1]
		for j := 1; j <= ny; j++ {
			switch {
			case xi == y[j-1]:
				row[j] = prev[j-1] + 1
			case prev[j] >= row[j-1]:
				row[j] = prev[j]
			default:
				row[j] = row[j-1]
			}
		}
	}
	// First pass: count the steps without touching the union, so a failing
	// pair leaves no trace (the caller returns 0 anyway).
	steps := 0
	for i, j := nx, ny; i > 0 && j > 0; steps++ {
		switch {
		case x[i-1] == y[j-1]:
			i, j = i-1, j-1
		case table[(i-1)*w+j] > table[i*w+j-1]:
			i--
		default:
			j--
		}
	}
	if steps > maxSteps {
		return table, false
	}
	for i, j := nx, ny; i > 0 && j > 0; {
		switch {
		case x[i-1] == y[j-1]:
			if !inUnion[x[i-1]] {
				inUnion[x[i-1]] = true
				*llcs++
			}
			i, j = i-1, j-1
		case table[(i-1)*w+j] > table[i*w+j-1]:
			i--
		default:
			j--
		}
	}
	return table, true
}

// RougeScore is LongBench's rouge_score(prediction, ground_truth): the
// ROUGE-L F of pltrdy rouge 1.0.1 (summary level, exclusive=True set
// semantics, F = 2PR/(P+R+1e-8)), 0 when either text has no sentence, and 0
// where Python would hit its recursion limit in the LCS backtrack (see
// rougeBaseDepthEN).
func RougeScore(pred, gt string) float64 {
	return rougeLF(pred, gt, rougeBaseDepthEN)
}

// RougeZHScore is LongBench's rouge_zh_score: both texts are segmented with
// jieba (precise mode, see jiebaCut), joined with spaces and scored with
// RougeScore (one more Python frame deep, see rougeBaseDepthZH).
func RougeZHScore(pred, gt string) float64 {
	p := strings.Join(jiebaCut(pred), " ")
	g := strings.Join(jiebaCut(gt), " ")
	return rougeLF(p, g, rougeBaseDepthZH)
}
