package main

import (
	"flag"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"sort"
	"time"

	"natsbench/longbench"
	"natsbench/results"
)

// resultMetric maps a LongBench metric function to the registered result metric.
var resultMetric = map[string]string{
	longbench.MetricQAF1: "qa_f1", longbench.MetricQAF1ZH: "qa_f1", longbench.MetricRouge: "rouge_l",
	longbench.MetricRougeZH: "rouge_l", longbench.MetricClassify: "classification", longbench.MetricCount: "count",
	longbench.MetricRetrieval: "retrieval", longbench.MetricRetrievalZH: "retrieval", longbench.MetricCodeSim: "code_sim",
}

// cmdEval scores a folder of LongBench predictions like THUDM's eval.py: DIR/result.json in the official
// format, plus DIR/metrics.parquet (one row per task, and the averages) and a table on stdout.
func cmdEval(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("runner eval", flag.ContinueOnError)
	fs.SetOutput(stderr)
	pred := fs.String("pred", "", "folder of <task>.jsonl prediction files (lines of pred, answers, all_classes, length)")
	e := fs.Bool("e", false, "LongBench-E: score per length bucket (0-4k, 4-8k, 8k+)")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if *pred == "" {
		fmt.Fprintln(stderr, "runner eval: -pred DIR is required")
		return exitUsage
	}
	res, err := longbench.EvalDir(*pred, *e)
	if err != nil {
		fmt.Fprintln(stderr, "runner eval:", err)
		return exitUsage
	}
	for _, perr := range res.Errors {
		fmt.Fprintln(stderr, "runner eval: warning:", perr)
	}
	now := time.Now()
	var rows []results.Row
	scores := map[string]float64{}
	fmt.Fprintf(stdout, "| task | metric | n | score |\n| --- | --- | --- | --- |\n")
	for _, t := range res.Tasks {
		info, err := longbench.Task(t.Task)
		if err != nil {
			continue
		}
		metric := resultMetric[info.Metric]
		base := results.Row{RunID: "eval", Sweep: "longbench", Key: filepath.Base(*pred), Name: "eval", Task: "longbench/" + t.Task,
			Split: "test", Metric: metric, Step: -1, N: int64(t.Count), Time: now}
		if *e {
			names := make([]string, 0, len(t.Buckets))
			for b := range t.Buckets {
				names = append(names, b)
			}
			sort.Strings(names)
			for i, b := range names {
				r := base
				r.X, r.Value = float64(i), t.Buckets[b]
				rows = append(rows, r)
				fmt.Fprintf(stdout, "| %s %s | %s | | %.2f |\n", t.Task, b, info.Metric, t.Buckets[b])
			}
			continue
		}
		r := base
		r.X, r.Value = math.NaN(), t.Score
		rows = append(rows, r)
		scores[t.Task] = t.Score
		fmt.Fprintf(stdout, "| %s | %s | %d | %.2f |\n", t.Task, info.Metric, t.Count, t.Rounded)
	}
	if !*e && len(scores) > 0 {
		s := longbench.Summarize(scores)
		for _, a := range []struct {
			name string
			v    float64
		}{{"avg_en_categories", s.AvgEN}, {"avg_zh_categories", s.AvgZH}, {"mean_16_en_code", s.Mean16}} {
			if math.IsNaN(a.v) {
				continue
			}
			rows = append(rows, results.Row{RunID: "eval", Sweep: "longbench", Key: filepath.Base(*pred), Name: a.name,
				Task: "longbench/" + a.name, Split: "test", Metric: "longbench_avg", Step: -1, X: math.NaN(), Value: a.v,
				N: int64(len(scores)), Time: now})
			fmt.Fprintf(stdout, "| %s | | | %.2f |\n", a.name, a.v)
		}
	}
	if err := results.WriteRows(filepath.Join(*pred, results.MetricsFile), rows); err != nil {
		fmt.Fprintln(stderr, "runner eval:", err)
		return exitFailed
	}
	fmt.Fprintf(stderr, "wrote %s and %s\n", res.ResultPath, filepath.Join(*pred, results.MetricsFile))
	return exitOK
}
