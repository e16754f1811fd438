package plots

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"

	"natsbench/results"
)

// Spec describes one figure (the runner fills it from a sweep's [[figure]] entry).
type Spec struct {
	ID        string   // file stem
	Title     string   // default ID
	Kind      string   // "xy" (default) or "curve" (y against step, every logged step)
	X         string   // metric name, "x" (the row's x column), "step", or a dotted config path
	Y         string   // metric name
	Panels    []string // several y metrics side by side (Y is ignored when set)
	Series    string   // "name" (default), "method", "key", "sweep", "run", or a dotted config path; curves: one per key, or per run with "run"
	Label     string   // dotted config path labelling each point; "a,b": the first the run has ("" = none)
	Task      string   // only rows of this task
	Names     []string // only rows of runs with these names (none = any)
	Split     string   // only rows of this split
	LogX      bool
	LogY      bool
	ErrorBars string // "ci95" (default), "minmax", "none"
	XLabel    string
	YLabel    string
}

// Point is one plotted point: the mean over the seeds of a group of runs, with its error bar.
type Point struct {
	X, Y   float64
	Lo, Hi float64 // error bar (Lo ≤ Y ≤ Hi); equal to Y without one
	N      int     // runs (seeds) averaged
	Label  string  // point label (e.g. λ)
}

// Series is one line of a figure.
type Series struct {
	Name   string
	Points []Point
}

// Configs maps run ID → resolved configuration (results.Collection.Configs).
type Configs map[string]map[string]any

// Data computes the plotted series of a figure (of its first panel when it has several: use PanelSpecs).
func Data(spec Spec, rows []results.Row, configs Configs) ([]Series, error) {
	if spec.Y == "" && len(spec.Panels) > 0 {
		spec.Y = spec.Panels[0]
	}
	if spec.Y == "" {
		return nil, fmt.Errorf("figure %s: no y metric", spec.ID)
	}
	if _, err := results.LookupMetric(spec.Y); err != nil {
		return nil, fmt.Errorf("figure %s: y: %w", spec.ID, err)
	}
	curve := spec.Kind == "curve" || spec.X == "step"
	if spec.Kind != "" && spec.Kind != "xy" && spec.Kind != "curve" {
		return nil, fmt.Errorf("figure %s: kind = %q: want \"xy\" or \"curve\"", spec.ID, spec.Kind)
	}
	var xMetric bool
	if !curve && spec.X != "x" {
		if _, err := results.LookupMetric(spec.X); err == nil {
			xMetric = true
		} else if !strings.Contains(spec.X, ".") {
			return nil, fmt.Errorf("figure %s: x = %q: not \"x\", \"step\", a dotted config path, nor a metric: %w", spec.ID, spec.X, err)
		}
	}
	keep := func(r results.Row) bool {
		return (spec.Task == "" || r.Task == spec.Task) && (spec.Split == "" || r.Split == spec.Split) &&
			(len(spec.Names) == 0 || slices.Contains(spec.Names, r.Name))
	}
	// Final step per (run, metric) unless plotting a curve.
	type rm struct{ run, metric string }
	last := map[rm]int64{}
	for _, r := range rows {
		if keep(r) {
			k := rm{r.RunID, r.Metric}
			if s, ok := last[k]; !ok || r.Step > s {
				last[k] = r.Step
			}
		}
	}
	// Mean value per (run, metric, x column[, step]).
	type cell struct {
		run, metric string
		x           string
		step        int64
	}
	type acc struct {
		sum float64
		n   int
		row results.Row
	}
	cells := map[cell]*acc{}
	var order []cell
	for _, r := range rows {
		if !keep(r) || (r.Metric != spec.Y && !(xMetric && r.Metric == spec.X)) {
			continue
		}
		if !curve && r.Step != last[rm{r.RunID, r.Metric}] {
			continue
		}
		c := cell{run: r.RunID, metric: r.Metric, x: xkey(r.X)}
		if curve {
			c.step = r.Step
		}
		a := cells[c]
		if a == nil {
			a = &acc{row: r}
			cells[c] = a
			order = append(order, c)
		}
		if !math.IsNaN(r.Value) {
			a.sum += r.Value
			a.n++
		}
	}
	mean := func(a *acc) float64 {
		if a.n == 0 {
			return math.NaN()
		}
		return a.sum / float64(a.n)
	}
	// Points per group (series, key without seed, x column, step).
	type group struct {
		series, key, x string
		step           int64
	}
	type samples struct {
		xs, ys []float64
		runs   []results.Row
	}
	groups := map[group]*samples{}
	var gorder []group
	for _, c := range order {
		if c.metric != spec.Y {
			continue
		}
		a := cells[c]
		y := mean(a)
		var x float64
		switch {
		case curve:
			x = float64(c.step)
		case spec.X == "x":
			x = a.row.X
		case xMetric:
			xa := cells[cell{run: c.run, metric: spec.X, x: c.x}]
			if xa == nil { // the x metric may be stored without the same x column: take its only final value
				for _, c2 := range order {
					if c2.run == c.run && c2.metric == spec.X {
						xa = cells[c2]
						break
					}
				}
			}
			if xa == nil {
				continue
			}
			x = mean(xa)
		default:
			v, ok := getPath(configs[c.run], spec.X)
			if !ok {
				continue
			}
			if x, ok = toFloat(v); !ok {
				return nil, fmt.Errorf("figure %s: x = %q: run %s has non-numeric value %v", spec.ID, spec.X, a.row.Key, v)
			}
		}
		if math.IsNaN(x) || math.IsNaN(y) {
			continue
		}
		g := group{series: seriesName(spec.Series, a.row, configs), key: keyNoSeed(a.row.Key), x: c.x, step: c.step}
		if curve { // one curve per key without seed (mean over seeds), or per run with series = "run"
			g.series = g.key
			if spec.Series == "run" {
				g.series, g.key = a.row.Key, a.row.Key
			}
		}
		s := groups[g]
		if s == nil {
			s = &samples{}
			groups[g] = s
			gorder = append(gorder, g)
		}
		s.xs, s.ys, s.runs = append(s.xs, x), append(s.ys, y), append(s.runs, a.row)
	}
	bySeries := map[string][]Point{}
	for _, g := range gorder {
		s := groups[g]
		p := Point{X: meanOf(s.xs), N: len(s.ys)}
		p.Y, p.Lo, p.Hi = spread(s.ys, spec.ErrorBars)
		for _, lp := range strings.Split(spec.Label, ",") { // the first path the run's config has
			if v, ok := getPath(configs[s.runs[0].RunID], strings.TrimSpace(lp)); ok && lp != "" {
				p.Label = formatValue(v)
				break
			}
		}
		bySeries[g.series] = append(bySeries[g.series], p)
	}
	names := make([]string, 0, len(bySeries))
	for n := range bySeries {
		names = append(names, n)
	}
	sort.Strings(names)
	out := make([]Series, 0, len(names))
	for _, n := range names {
		pts := bySeries[n]
		sort.SliceStable(pts, func(i, j int) bool {
			if pts[i].X != pts[j].X {
				return pts[i].X < pts[j].X
			}
			return pts[i].Y < pts[j].Y
		})
		out = append(out, Series{Name: n, Points: pts})
	}
	return out, nil
}

// PanelSpecs splits a figure with panels into one spec per panel (or returns the spec itself).
func PanelSpecs(spec Spec) []Spec {
	if len(spec.Panels) == 0 {
		return []Spec{spec}
	}
	out := make([]Spec, len(spec.Panels))
	for i, y := range spec.Panels {
		s := spec
		s.Panels, s.Y, s.Title, s.YLabel = nil, y, y, ""
		out[i] = s
	}
	return out
}

func xkey(x float64) string {
	if math.IsNaN(x) {
		return "NaN"
	}
	return strconv.FormatFloat(x, 'g', -1, 64)
}

func keyNoSeed(key string) string {
	if i := strings.LastIndex(key, ",seed="); i >= 0 {
		return key[:i]
	}
	return key
}

func seriesName(by string, r results.Row, configs Configs) string {
	switch by {
	case "", "name":
		return r.Name
	case "method":
		return r.Method
	case "key":
		return keyNoSeed(r.Key)
	case "sweep":
		return r.Sweep
	case "run":
		return r.Key
	}
	if v, ok := getPath(configs[r.RunID], by); ok {
		return by + "=" + formatValue(v)
	}
	return r.Name
}

func meanOf(xs []float64) float64 {
	s := 0.0
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}

// spread returns the mean and the error bar of ys.
func spread(ys []float64, kind string) (mean, lo, hi float64) {
	mean = meanOf(ys)
	switch kind {
	case "none":
		return mean, mean, mean
	case "minmax":
		lo, hi = ys[0], ys[0]
		for _, y := range ys {
			lo, hi = math.Min(lo, y), math.Max(hi, y)
		}
		return mean, lo, hi
	}
	if len(ys) < 2 {
		return mean, mean, mean
	}
	ss := 0.0
	for _, y := range ys {
		ss += (y - mean) * (y - mean)
	}
	half := 1.96 * math.Sqrt(ss/float64(len(ys)-1)) / math.Sqrt(float64(len(ys)))
	return mean, mean - half, mean + half
}

func getPath(m map[string]any, path string) (any, bool) {
	var cur any = m
	for _, part := range strings.Split(path, ".") {
		t, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = t[part]; !ok {
			return nil, false
		}
	}
	return cur, true
}

func toFloat(v any) (float64, bool) {
	switch t := v.(type) {
	case float64:
		return t, true
	case int64:
		return float64(t), true
	case int:
		return float64(t), true
	case json.Number:
		f, err := t.Float64()
		return f, err == nil
	case string:
		f, err := strconv.ParseFloat(t, 64)
		return f, err == nil
	}
	return 0, false
}

func formatValue(v any) string {
	switch t := v.(type) {
	case float64:
		return strconv.FormatFloat(t, 'g', -1, 64)
	case json.Number:
		if f, err := t.Float64(); err == nil {
			return strconv.FormatFloat(f, 'g', -1, 64)
		}
		return t.String()
	case []any:
		parts := make([]string, len(t))
		for i, x := range t {
			parts[i] = formatValue(x)
		}
		return "[" + strings.Join(parts, "+") + "]"
	}
	return fmt.Sprint(v)
}

// WriteCSV writes series as CSV (series,x,y,lo,hi,n,label) with full float precision: the golden format.
func WriteCSV(w io.Writer, series []Series) error {
	cw := csv.NewWriter(w)
	cw.Write([]string{"series", "x", "y", "lo", "hi", "n", "label"})
	f := func(x float64) string { return strconv.FormatFloat(x, 'g', -1, 64) }
	for _, s := range series {
		for _, p := range s.Points {
			cw.Write([]string{s.Name, f(p.X), f(p.Y), f(p.Lo), f(p.Hi), strconv.Itoa(p.N), p.Label})
		}
	}
	cw.Flush()
	return cw.Error()
}
