package main

import (
	"fmt"
	"io"
	"path/filepath"
	"sort"

	"natsbench/results"
	"natsbench/sweeps"
)

// printMetrics prints the metric rows of every DONE run of runs (key, task, split, metric, step, x, value, n),
// sorted, one a line and without times, so that two output folders of one sweep diff equal when their results
// are equal; a run that is not DONE is named on stderr and makes the exit status 1.
func printMetrics(runs []sweeps.Run, out string, stdout, stderr io.Writer) int {
	var lines []string
	code := exitOK
	for _, r := range runs {
		dir := runDir(out, r)
		if !results.IsDone(dir) {
			fmt.Fprintf(stderr, "runner status: run %s (id %s) is not DONE in %s\n", r.Key, r.ID, dir)
			code = exitFailed
			continue
		}
		rows, err := results.ReadRows(filepath.Join(dir, results.MetricsFile))
		if err != nil {
			fmt.Fprintf(stderr, "runner status: run %s: %v\n", r.Key, err)
			code = exitFailed
			continue
		}
		for _, w := range rows {
			lines = append(lines, fmt.Sprintf("%s\t%s\t%s\t%s\t%d\t%v\t%v\t%d", w.Key, w.Task, w.Split, w.Metric, w.Step, w.X, w.Value, w.N))
		}
	}
	sort.Strings(lines)
	for _, l := range lines {
		fmt.Fprintln(stdout, l)
	}
	return code
}
