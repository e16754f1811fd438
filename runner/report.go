package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"natsbench/plots"
	"natsbench/results"
	"natsbench/sweeps"
)

func cmdReport(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("runner report", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sweepFlag := fs.String("sweep", "", "sweep file; a bare name resolves under sweeps/")
	out := fs.String("out", "out", "output root")
	smoke := fs.Bool("smoke", false, "report the smoke runs of the sweep")
	all := fs.Bool("all", false, "report every run folder of the sweep, not only the runs of its current expansion")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if *sweepFlag == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: runner report -sweep FILE [-smoke] [-all] [-out DIR]")
		return exitUsage
	}
	sw, err := sweeps.Load(resolveSweep(*sweepFlag))
	if err != nil {
		fmt.Fprintf(stderr, "runner report: %v\n", err)
		return exitUsage
	}
	if err := report(sw, *out, *smoke, *all, stdout); err != nil {
		fmt.Fprintf(stderr, "runner report: %v\n", err)
		return exitUsage
	}
	return exitOK
}

// report collects a sweep's results and writes runs.parquet, summary.md and the sweep's figures; it prints
// the summary to w.
func report(sw *sweeps.Sweep, out string, smoke, all bool, w io.Writer) error {
	c, err := results.CollectDir(out, sw.Name)
	if err != nil {
		return err
	}
	if !all {
		runs, err := sw.Expand(smoke)
		if err != nil {
			return err
		}
		keep := map[string]bool{}
		for _, r := range runs {
			keep[r.ID] = true
		}
		c = filterCollection(c, func(id string) bool { return keep[id] })
	}
	if err := results.WriteRuns(filepath.Join(c.Dir, results.RunsFile), c.Runs); err != nil {
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# Sweep %s\n\n%s, %d runs with results", sw.Name, sw.Path, len(c.Runs)-len(c.Missing))
	if smoke {
		b.WriteString(" (smoke)")
	}
	fmt.Fprintf(&b, "; generated %s.\n\n", time.Now().UTC().Format(time.RFC3339))
	b.WriteString(statusLine(c.Runs) + "\n\n")
	if len(c.Rows) > 0 {
		b.WriteString("Final values (latency rows: at the longest prompt), mean ± sd over seeds:\n\n")
		var main, passkey []results.Row
		for _, r := range c.Rows {
			if r.Task == "passkey" {
				passkey = append(passkey, r)
			} else {
				main = append(main, r)
			}
		}
		b.WriteString(plots.SummaryTable(main, nil))
		if len(passkey) > 0 {
			b.WriteString("\n## Passkey retrieval after fine-tuning\n\n" + passkeyTable(passkey))
		}
		if lb := plots.LongBenchTable(c.Rows); lb != "" {
			b.WriteString("\n## LongBench\n\n" + lb)
		}
	}
	if len(c.Missing) > 0 {
		b.WriteString("\nRuns without results: " + strings.Join(c.Missing, "; ") + "\n")
	}
	figDir := filepath.Join(c.Dir, "figures")
	if len(c.Rows) > 0 && len(sw.Figures) > 0 {
		b.WriteString("\n## Figures\n\n")
		for _, f := range sw.Figures {
			paths, err := plots.Figure(specOf(f), c.Rows, c.Configs(), figDir)
			if err != nil {
				fmt.Fprintf(&b, "- %s: %v\n", f.ID, err)
				continue
			}
			rel := make([]string, len(paths))
			for i, p := range paths {
				rel[i], _ = filepath.Rel(c.Dir, p)
			}
			fmt.Fprintf(&b, "- %s: %s\n", f.ID, strings.Join(rel, ", "))
		}
	}
	md := b.String()
	if err := results.WriteFileAtomic(filepath.Join(c.Dir, "summary.md"), func(wr io.Writer) error {
		_, err := io.WriteString(wr, md)
		return err
	}); err != nil {
		return err
	}
	_, err = io.WriteString(w, md)
	return err
}

func statusLine(runs []results.Manifest) string {
	counts := map[string]int{}
	for _, m := range runs {
		counts[m.Status]++
	}
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%d %s", counts[k], k)
	}
	return "Run folders: " + strings.Join(parts, ", ") + "."
}

func filterCollection(c *results.Collection, keep func(id string) bool) *results.Collection {
	out := &results.Collection{Dir: c.Dir}
	keys := map[string]bool{}
	for _, m := range c.Runs {
		if keep(m.RunID) {
			out.Runs = append(out.Runs, m)
			keys[m.Key] = true
		}
	}
	for _, r := range c.Rows {
		if keep(r.RunID) {
			out.Rows = append(out.Rows, r)
		}
	}
	for _, k := range c.Missing {
		if keys[k] {
			out.Missing = append(out.Missing, k)
		}
	}
	return out
}

func specOf(f sweeps.Figure) plots.Spec {
	return plots.Spec{ID: f.ID, Title: f.Title, Kind: f.Kind, X: f.X, Y: f.Y, Panels: f.Panels, Series: f.Series, Label: f.Label,
		Task: f.Task, Names: f.Names, Split: f.Split, LogX: f.LogX, LogY: f.LogY, ErrorBars: f.ErrorBars, XLabel: f.XLabel, YLabel: f.YLabel}
}

var idRE = regexp.MustCompile(`^[0-9a-f]{12}$`)

func cmdCompare(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("runner compare", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "out", "output root")
	x := fs.String("x", "kv_fraction", `x of the figure: a metric, "x", "step" or a dotted config path`)
	y := fs.String("y", "ppl", "y of the figure: a metric")
	task := fs.String("task", "", "only rows of this task")
	name := fs.String("name", "", "name of the comparison folder (default: from the selections)")
	smoke := fs.Bool("smoke", false, "select the smoke runs of sweeps")
	logx := fs.Bool("logx", false, "logarithmic x axis")
	label := fs.String("label", "method.lambda,method.budget", "config paths labelling points (the first one a run has)")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if fs.NArg() < 2 {
		fmt.Fprintln(stderr, "usage: runner compare [-x M] [-y M] [-task T] [-name N] [-smoke] SEL SEL...  (at least two selections)")
		return exitUsage
	}
	md, paths, err := compare(fs.Args(), *out, *name, *smoke, plots.Spec{X: *x, Y: *y, Task: *task, LogX: *logx, Label: *label})
	if err != nil {
		fmt.Fprintf(stderr, "runner compare: %v\n", err)
		return exitUsage
	}
	fmt.Fprint(stdout, md)
	fmt.Fprintf(stdout, "\nwritten: %s\n", strings.Join(paths, ", "))
	return exitOK
}

// compare collects the rows of each selection, relabels them by selection, and writes a table and a figure.
func compare(sels []string, out, name string, smoke bool, spec plots.Spec) (string, []string, error) {
	var rows []results.Row
	configs := plots.Configs{}
	for _, sel := range sels {
		rs, cfgs, err := selection(sel, out, smoke)
		if err != nil {
			return "", nil, err
		}
		if len(rs) == 0 {
			return "", nil, fmt.Errorf("selection %q has no results in %s", sel, out)
		}
		for i := range rs {
			rs[i].Name = sel + " " + rs[i].Name
			rs[i].Sweep = sel
			rs[i].RunID = sel + "/" + rs[i].RunID // the same run may appear in two selections
		}
		for id, c := range cfgs {
			configs[sel+"/"+id] = c
		}
		rows = append(rows, rs...)
	}
	if name == "" {
		name = strings.Trim(regexp.MustCompile(`[^A-Za-z0-9_-]+`).ReplaceAllString(strings.Join(sels, "_vs_"), "_"), "_")
	}
	dir := filepath.Join(out, "compare", name)
	spec.ID, spec.Title, spec.Series, spec.ErrorBars = "compare", "comparison: "+strings.Join(sels, " vs "), "name", "ci95"
	metrics := []string{spec.Y}
	if _, err := results.LookupMetric(spec.X); err == nil && spec.X != spec.Y {
		metrics = append(metrics, spec.X)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# Comparison: %s\n\nFinal values, mean ± sd over seeds.\n\n", strings.Join(sels, " vs "))
	b.WriteString(plots.SummaryTable(rows, append(metrics, otherMetrics(rows, metrics)...)))
	paths, err := plots.Figure(spec, rows, configs, dir)
	if err != nil {
		return "", nil, err
	}
	mdPath := filepath.Join(dir, "compare.md")
	md := b.String()
	if err := results.WriteFileAtomic(mdPath, func(w io.Writer) error { _, err := io.WriteString(w, md); return err }); err != nil {
		return "", nil, err
	}
	return md, append([]string{mdPath}, paths...), nil
}

// otherMetrics lists the summary metrics not already in first.
func otherMetrics(rows []results.Row, first []string) []string {
	var out []string
	for _, m := range plots.SummaryMetrics(rows) {
		dup := false
		for _, f := range first {
			dup = dup || f == m
		}
		if !dup {
			out = append(out, m)
		}
	}
	return out
}

// selection resolves one compare argument to rows and configs.
func selection(sel, out string, smoke bool) ([]results.Row, plots.Configs, error) {
	if idRE.MatchString(sel) { // a run ID in any sweep
		matches, _ := filepath.Glob(filepath.Join(out, "*", sel))
		if len(matches) == 0 {
			return nil, nil, fmt.Errorf("run id %s: no folder %s", sel, filepath.Join(out, "*", sel))
		}
		sweep := filepath.Base(filepath.Dir(matches[0]))
		c, err := results.CollectDir(out, sweep)
		if err != nil {
			return nil, nil, err
		}
		c = filterCollection(c, func(id string) bool { return id == sel })
		return c.Rows, c.Configs(), nil
	}
	sweepName, glob, _ := strings.Cut(sel, ":")
	sw, runs, err := loadSweep(sweepName, smoke)
	if err != nil {
		return nil, nil, err
	}
	keep := map[string]bool{}
	for _, r := range runs {
		if glob == "" {
			keep[r.ID] = true
			continue
		}
		if ok, err := filepath.Match(glob, r.KeyNoSeed()); err != nil {
			return nil, nil, fmt.Errorf("selection %q: %w", sel, err)
		} else if ok {
			keep[r.ID] = true
		}
	}
	if len(keep) == 0 {
		return nil, nil, fmt.Errorf("selection %q matches no run of %s", sel, sw.Path)
	}
	c, err := results.CollectDir(out, sw.Name)
	if err != nil {
		if os.IsNotExist(err) {
			return nil, nil, fmt.Errorf("selection %q: no results yet in %s", sel, filepath.Join(out, sw.Name))
		}
		return nil, nil, err
	}
	c = filterCollection(c, func(id string) bool { return keep[id] })
	return c.Rows, c.Configs(), nil
}

// passkeyTable lists the passkey rows of finetune runs: one line per (run, attention pattern scored), mean over
// seeds.
func passkeyTable(rows []results.Row) string {
	type k struct{ key, method string }
	sum := map[k]map[string][]float64{}
	var order []k
	for _, r := range rows {
		kk := k{strings.TrimSuffix(r.Key, fmt.Sprintf(",seed=%d", r.Seed)), r.Method}
		if sum[kk] == nil {
			sum[kk] = map[string][]float64{}
			order = append(order, kk)
		}
		sum[kk][r.Metric] = append(sum[kk][r.Metric], r.Value)
	}
	var b strings.Builder
	b.WriteString("| run | attention | seeds | passkey_accuracy | answer_agreement | kv_fraction |\n|---|---|---|---|---|---|\n")
	for _, kk := range order {
		m := sum[kk]
		mean := func(xs []float64) string {
			if len(xs) == 0 {
				return "–"
			}
			t := 0.0
			for _, x := range xs {
				t += x
			}
			return fmt.Sprintf("%.3f", t/float64(len(xs)))
		}
		fmt.Fprintf(&b, "| %s | %s | %d | %s | %s | %s |\n", kk.key, kk.method, len(m["kv_fraction"]), mean(m["passkey_accuracy"]),
			mean(m["answer_agreement"]), mean(m["kv_fraction"]))
	}
	return b.String()
}
