package pg19

// Window is one evaluation window of a token stream (NATS-SPEC §2.5): the Context+1 tokens
// stream[Start : Start+Context+1]. Inputs are its first Context tokens, targets its last Context tokens.
type Window struct {
	Index   int // index among all windows of the stream, before any subsampling by maxWindows
	Start   int // stream position of the window's first token
	Context int // tokens fed and tokens predicted
}

// End returns the stream position one past the window's last token (Start + Context + 1).
func (w Window) End() int { return w.Start + w.Context + 1 }

// Inputs returns stream[Start : Start+Context] as int32 (the tokens fed to the model).
func (w Window) Inputs(stream []uint16) []int32 { return toInt32(stream[w.Start : w.Start+w.Context]) }

// Targets returns stream[Start+1 : Start+Context+1] as int32 (the tokens predicted).
func (w Window) Targets(stream []uint16) []int32 {
	return toInt32(stream[w.Start+1 : w.Start+w.Context+1])
}

func toInt32(s []uint16) []int32 {
	out := make([]int32, len(s))
	for i, t := range s {
		out[i] = int32(t)
	}
	return out
}

// Windows plans the PG-19 evaluation of the reference implementation (experiments/eval_model.py) over a
// stream of n tokens (the whole test split, books joined by EOT):
//
//   - The stream is cut into non-overlapping windows of context+1 tokens, starting at position 0; the
//     remainder (n mod (context+1) tokens) is dropped.
//   - Each window is evaluated on its own, from an empty cache: tokens w[0..context-1] are fed one at a time
//     and, after feeding w[i], the model predicts w[i+1]. So each window scores exactly context tokens, with
//     contexts of 0..context-1 previous tokens; its first token is never scored, and nothing crosses window
//     boundaries (a book boundary inside a window is just an EOT token).
//   - Perplexity = exp(mean NLL over every scored token of every window).
//
// Worked example: n = 10 tokens t0..t9, context = 3, so windows of 4 tokens:
//
//	window 0: [t0 t1 t2 t3]  inputs t0 t1 t2  targets t1 t2 t3  (t1 | t0), (t2 | t0 t1), (t3 | t0 t1 t2)
//	window 1: [t4 t5 t6 t7]  inputs t4 t5 t6  targets t5 t6 t7  (t5 | t4), (t6 | t4 t5), (t7 | t4 t5 t6)
//	t8 t9: remainder, dropped
//
// Six tokens are scored; t0, t4 (window starts) and t8, t9 (remainder) are not. Unlike lm-eval's
// loglikelihood_rolling, windows do not overlap and no token is predicted from a previous window's context.
//
// maxWindows > 0 (and fewer than the total T) keeps maxWindows windows evenly spaced over the stream: the
// windows of index floor(k*T/maxWindows) for k = 0..maxWindows-1, always including window 0; the selection
// is deterministic and each kept Window still carries its Index in the full plan. maxWindows <= 0 keeps
// all. Windows returns nil when context < 1 or n < context+1.
func Windows(n int, context int, maxWindows int) []Window {
	if context < 1 || n < context+1 {
		return nil
	}
	size := context + 1
	total := n / size
	keep := total
	if maxWindows > 0 && maxWindows < total {
		keep = maxWindows
	}
	out := make([]Window, keep)
	for k := range out {
		idx := k
		if keep < total {
			idx = int(int64(k) * int64(total) / int64(keep))
		}
		out[k] = Window{Index: idx, Start: idx * size, Context: context}
	}
	return out
}
