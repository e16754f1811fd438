package plots

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"

	"natsbench/results"
)

// skipSummary lists metrics left out of the default summary (per-step or diagnostic).
var skipSummary = map[string]bool{"nll_bucket": true, "eval_seconds": true, "lr": true, "grad_norm": true,
	"tokens_per_second": true, "sparsity_loss": true, "mask_density": true}

// SummaryMetrics lists the metrics a summary table shows by default: those present in rows, in registry
// order, without per-step diagnostics.
func SummaryMetrics(rows []results.Row) []string {
	present := map[string]bool{}
	for _, r := range rows {
		present[r.Metric] = true
	}
	var out []string
	for _, m := range results.Metrics() {
		if present[m.Name] && !skipSummary[m.Name] && !strings.HasPrefix(m.Name, "decode_ms_per_token_p") && !strings.HasPrefix(m.Name, "prefill_ms_p") {
			out = append(out, m.Name)
		}
	}
	return out
}

// finalValues returns, per (run, metric), the N-weighted mean of the rows at the run's last step for that
// metric (rows with several x values, such as position buckets, are pooled), except latency rows (task "latency",
// one row per prompt length x): their value at the longest prompt, not a mean over lengths.
func finalValues(rows []results.Row) map[[2]string]float64 {
	type k = [2]string
	last := map[k]int64{}
	longest := map[k]float64{} // latency rows: the longest prompt
	for _, r := range rows {
		kk := k{r.RunID, r.Metric}
		if s, ok := last[kk]; !ok || r.Step > s {
			last[kk] = r.Step
		}
		if r.Task == "latency" {
			if x, ok := longest[kk]; !ok || r.X > x {
				longest[kk] = r.X
			}
		}
	}
	sum, wt := map[k]float64{}, map[k]float64{}
	for _, r := range rows {
		kk := k{r.RunID, r.Metric}
		if r.Step != last[kk] || math.IsNaN(r.Value) {
			continue
		}
		if x, ok := longest[kk]; ok && r.X != x {
			continue
		}
		w := float64(r.N)
		if w <= 0 {
			w = 1
		}
		sum[kk] += w * r.Value
		wt[kk] += w
	}
	out := map[k]float64{}
	for kk, s := range sum {
		out[kk] = s / wt[kk]
	}
	return out
}

type tableRow struct {
	sweep, key string
	runs       map[string]bool
	vals       map[string][]float64
}

// groupRuns groups final values by (sweep, key without seed).
func groupRuns(rows []results.Row, keep func(results.Row) bool) []*tableRow {
	fv := finalValues(rows)
	byGroup := map[[2]string]*tableRow{}
	var order []*tableRow
	seen := map[[2]string]bool{}
	for _, r := range rows {
		if keep != nil && !keep(r) {
			continue
		}
		g := [2]string{r.Sweep, keyNoSeed(r.Key)}
		t := byGroup[g]
		if t == nil {
			t = &tableRow{sweep: r.Sweep, key: g[1], runs: map[string]bool{}, vals: map[string][]float64{}}
			byGroup[g] = t
			order = append(order, t)
		}
		t.runs[r.RunID] = true
		rk := [2]string{r.RunID, r.Metric}
		if seen[rk] {
			continue
		}
		seen[rk] = true
		if v, ok := fv[rk]; ok {
			t.vals[r.Metric] = append(t.vals[r.Metric], v)
		}
	}
	sort.SliceStable(order, func(i, j int) bool {
		if order[i].sweep != order[j].sweep {
			return order[i].sweep < order[j].sweep
		}
		return order[i].key < order[j].key
	})
	return order
}

// cellText formats mean (± sample standard deviation over seeds) with 4 significant digits.
func cellText(vs []float64) string {
	if len(vs) == 0 {
		return "–"
	}
	m := meanOf(vs)
	s := fmtNum(m)
	if len(vs) > 1 {
		ss := 0.0
		for _, v := range vs {
			ss += (v - m) * (v - m)
		}
		s += " ± " + fmtNum(math.Sqrt(ss/float64(len(vs)-1)))
	}
	return s
}

func fmtNum(x float64) string { return strconv.FormatFloat(x, 'g', 4, 64) }

// SummaryTable writes a markdown table: one row per (sweep, key without seed), one column per metric,
// cells "mean ± sd" over seeds of each run's final value. metrics nil means SummaryMetrics(rows).
func SummaryTable(rows []results.Row, metrics []string) string {
	if metrics == nil {
		metrics = SummaryMetrics(rows)
	}
	groups := groupRuns(rows, nil)
	var b strings.Builder
	b.WriteString("| sweep | run | seeds |")
	for _, m := range metrics {
		b.WriteString(" " + m + " |")
	}
	b.WriteString("\n|---|---|---|" + strings.Repeat("---|", len(metrics)) + "\n")
	for _, g := range groups {
		fmt.Fprintf(&b, "| %s | %s | %d |", g.sweep, g.key, len(g.runs))
		for _, m := range metrics {
			b.WriteString(" " + cellText(g.vals[m]) + " |")
		}
		b.WriteString("\n")
	}
	return b.String()
}

// longBenchScore lists the per-task score metrics (KV rows and averages of a longbench run are not columns).
var longBenchScore = map[string]bool{"qa_f1": true, "rouge_l": true, "classification": true, "retrieval": true,
	"count": true, "code_sim": true}

// LongBenchTable writes a markdown table of LongBench scores: one row per (sweep, key without seed), one
// column per dataset (task "longbench/<dataset>", whatever its metric), and the average over datasets.
func LongBenchTable(rows []results.Row) string {
	var lb []results.Row
	dsSet := map[string]bool{}
	for _, r := range rows {
		if strings.HasPrefix(r.Task, "longbench/") && longBenchScore[r.Metric] {
			r.Metric = strings.TrimPrefix(r.Task, "longbench/") // one score per dataset
			lb = append(lb, r)
			dsSet[r.Metric] = true
		}
	}
	if len(lb) == 0 {
		return ""
	}
	var ds []string
	for d := range dsSet {
		ds = append(ds, d)
	}
	sort.Strings(ds)
	// finalValues keys on the metric column, which now holds the dataset.
	groups := groupRuns(lb, nil)
	var b strings.Builder
	b.WriteString("| sweep | run | seeds |")
	for _, d := range ds {
		b.WriteString(" " + d + " |")
	}
	b.WriteString(" avg |\n|---|---|---|" + strings.Repeat("---|", len(ds)+1) + "\n")
	for _, g := range groups {
		fmt.Fprintf(&b, "| %s | %s | %d |", g.sweep, g.key, len(g.runs))
		var avg []float64
		for _, d := range ds {
			b.WriteString(" " + cellText(g.vals[d]) + " |")
			if len(g.vals[d]) > 0 {
				avg = append(avg, meanOf(g.vals[d]))
			}
		}
		if len(avg) == len(ds) {
			b.WriteString(" " + fmtNum(meanOf(avg)) + " |\n")
		} else {
			b.WriteString(" – |\n")
		}
	}
	return b.String()
}
