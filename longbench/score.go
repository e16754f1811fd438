package longbench

import (
	"math"
	"strings"
)

// FirstLine is eval.py's cut for trec, triviaqa, samsum and lsht:
// pred.lstrip('\n').split('\n')[0].
func FirstLine(pred string) string {
	s := strings.TrimLeft(pred, "\n")
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// ScoreSample is eval.py's per-sample score for task (a LongBench-E name
// such as "qasper_e" is accepted): the first-line cut where the task has
// one, then the maximum of the task's metric over answers, starting from 0
// (no answers scores 0). An unknown task scores NaN so that it cannot pass
// for a real score; use Task to validate names first.
func ScoreSample(task, pred string, answers []string, allClasses []string) float64 {
	base, _ := SplitE(task)
	info, err := Task(base)
	if err != nil {
		return math.NaN()
	}
	f := metricFuncs[info.Metric]
	if info.FirstLineCut {
		pred = FirstLine(pred)
	}
	score := 0.0
	for _, gt := range answers {
		if v := f(pred, gt, allClasses); v > score {
			score = v
		}
	}
	return score
}

// Prediction is one line of a pred/<model>/<task>.jsonl file as written by
// pred.py.
type Prediction struct {
	// Pred is the model output.
	Pred string
	// Answers holds the gold answers.
	Answers []string
	// AllClasses is the label set (nil for null).
	AllClasses []string
	// Length is the sample length used for the LongBench-E buckets.
	Length int
}

// ScoreTask scores every prediction with ScoreSample and returns the
// per-sample scores and 100 × their mean, unrounded and computed as eval.py's
// scorer does (sequential sum, then 100*total/n). Each prediction uses its
// own AllClasses (EvalDir applies eval.py's last-line quirk before calling
// this). An empty list gives NaN.
func ScoreTask(task string, preds []Prediction) (score float64, perSample []float64) {
	perSample = make([]float64, len(preds))
	total := 0.0
	for i, p := range preds {
		perSample[i] = ScoreSample(task, p.Pred, p.Answers, p.AllClasses)
		total += perSample[i]
	}
	if len(preds) == 0 {
		return math.NaN(), perSample
	}
	return 100 * total / float64(len(preds)), perSample
}

// LongBench-E length buckets (keys of eval.py's scorer_e).
const (
	Bucket0to4k = "0-4k"
	Bucket4to8k = "4-8k"
	Bucket8kUp  = "8k+"
)

// Buckets lists the LongBench-E bucket names in eval.py's order.
var Buckets = []string{Bucket0to4k, Bucket4to8k, Bucket8kUp}

// BucketOf returns the LongBench-E bucket of a sample length: "0-4k" below
// 4000, "4-8k" for 4000..7999, "8k+" from 8000.
func BucketOf(length int) string {
	switch {
	case length < 4000:
		return Bucket0to4k
	case length < 8000:
		return Bucket4to8k
	default:
		return Bucket8kUp
	}
}

// ScoreTaskE is eval.py's scorer_e without the final rounding: per-sample
// scores and, per bucket, 100 × np.mean(scores of the bucket) (NumPy
// pairwise summation; NaN for an empty bucket, as np.mean([]) gives).
// Round the values with NumpyRound2 to get result.json's numbers.
func ScoreTaskE(task string, preds []Prediction) (buckets map[string]float64, counts map[string]int, perSample []float64) {
	_, perSample = ScoreTask(task, preds)
	groups := map[string][]float64{}
	for i, p := range preds {
		b := BucketOf(p.Length)
		groups[b] = append(groups[b], perSample[i])
	}
	buckets = make(map[string]float64, 3)
	counts = make(map[string]int, 3)
	for _, b := range Buckets {
		buckets[b] = 100 * npMean(groups[b])
		counts[b] = len(groups[b])
	}
	return buckets, counts, perSample
}

// Summary aggregates task scores the two usual ways.
type Summary struct {
	// CategoryEN maps each category to the mean of its English and code
	// tasks present in the input; categories with none are absent.
	CategoryEN map[Category]float64
	// CategoryZH is the same for the Chinese and code tasks.
	CategoryZH map[Category]float64
	// AvgEN is the LongBench README "Avg" of the English table: the mean of
	// the CategoryEN values (NaN when empty).
	AvgEN float64
	// AvgZH is the README "Avg" of the Chinese table: the mean of the
	// CategoryZH values (code is shared with English).
	AvgZH float64
	// Mean16 is the plain mean over the present tasks of the 16 English and
	// code tasks, the average most KV-cache papers report (NaN when none).
	Mean16 float64
	// N16 is how many of the 16 tasks were present.
	N16 int
	// Missing lists the tasks of the 21 that were absent from the input.
	Missing []string
}

// Summarize aggregates per-task scores (task name → score, e.g. the rounded
// values of result.json); names outside the 21 tasks are ignored.
func Summarize(scores map[string]float64) Summary {
	s := Summary{CategoryEN: map[Category]float64{}, CategoryZH: map[Category]float64{}}
	type acc struct {
		sum float64
		n   int
	}
	en, zh := map[Category]*acc{}, map[Category]*acc{}
	add := func(m map[Category]*acc, c Category, v float64) {
		if m[c] == nil {
			m[c] = &acc{}
		}
		m[c].sum += v
		m[c].n++
	}
	sum16 := 0.0
	for _, t := range taskTable {
		v, ok := scores[t.Name]
		if !ok {
			s.Missing = append(s.Missing, t.Name)
			continue
		}
		if t.Language != Chinese {
			add(en, t.Category, v)
			sum16 += v
			s.N16++
		}
		if t.Language != English {
			add(zh, t.Category, v)
		}
	}
	avg := func(m map[Category]*acc, out map[Category]float64) float64 {
		sum, n := 0.0, 0
		for _, c := range Categories {
			if a := m[c]; a != nil {
				out[c] = a.sum / float64(a.n)
				sum += out[c]
				n++
			}
		}
		if n == 0 {
			return math.NaN()
		}
		return sum / float64(n)
	}
	s.AvgEN = avg(en, s.CategoryEN)
	s.AvgZH = avg(zh, s.CategoryZH)
	s.Mean16 = math.NaN()
	if s.N16 > 0 {
		s.Mean16 = sum16 / float64(s.N16)
	}
	return s
}
