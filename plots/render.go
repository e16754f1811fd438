package plots

import (
	"natsbench/results"

	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	_ "gonum.org/v1/plot/vg/vgimg" // png
	_ "gonum.org/v1/plot/vg/vgpdf" // pdf
	_ "gonum.org/v1/plot/vg/vgsvg" // svg
)

// Formats are the file formats Render writes by default.
var Formats = []string{"png", "svg", "pdf"}

// Panel size of one plot.
const (
	panelWidth  = 12 * vg.Centimeter
	panelHeight = 9 * vg.Centimeter
)

// Render draws one figure (one panel per entry of panels, side by side) into dir/<id>.<format> for each
// format ("png", "svg", "pdf"; default Formats) and returns the paths written.
func Render(spec Spec, panels [][]Series, dir string, formats ...string) (paths []string, err error) {
	if len(formats) == 0 {
		formats = Formats
	}
	if len(panels) == 0 {
		return nil, fmt.Errorf("figure %s: nothing to draw", spec.ID)
	}
	defer func() { // gonum/plot panics on some degenerate inputs; report them as errors
		if r := recover(); r != nil {
			err = fmt.Errorf("figure %s: render: %v", spec.ID, r)
		}
	}()
	specs := PanelSpecs(spec)
	if len(specs) != len(panels) {
		return nil, fmt.Errorf("figure %s: %d panels of data for %d panel specs", spec.ID, len(panels), len(specs))
	}
	row := make([]*plot.Plot, len(panels))
	for i, s := range specs {
		if len(panels) == 1 {
			s.Title = spec.Title
			if s.Title == "" {
				s.Title = spec.ID
			}
		}
		p, err := newPlot(s, panels[i])
		if err != nil {
			return nil, err
		}
		row[i] = p
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("figure %s: %w", spec.ID, err)
	}
	w, h := panelWidth*vg.Length(len(row)), panelHeight
	for _, format := range formats {
		c, err := draw.NewFormattedCanvas(w, h, format)
		if err != nil {
			return nil, fmt.Errorf("figure %s: %w", spec.ID, err)
		}
		dc := draw.New(c)
		if len(row) == 1 {
			row[0].Draw(dc)
		} else {
			tiles := draw.Tiles{Rows: 1, Cols: len(row), PadX: vg.Millimeter * 4, PadTop: vg.Millimeter * 2, PadBottom: vg.Millimeter * 2,
				PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 2}
			canvases := plot.Align([][]*plot.Plot{row}, tiles, dc)
			for j, p := range row {
				p.Draw(canvases[0][j])
			}
		}
		path := filepath.Join(dir, spec.ID+"."+format)
		f, err := os.Create(path)
		if err != nil {
			return nil, fmt.Errorf("figure %s: %w", spec.ID, err)
		}
		_, err = c.WriteTo(f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return nil, fmt.Errorf("figure %s: write %s: %w", spec.ID, path, err)
		}
		paths = append(paths, path)
	}
	return paths, nil
}

// errPoints feeds scatter, lines and error bars.
type errPoints struct {
	plotter.XYs
	plotter.YErrors
}

type labelled struct {
	plotter.XYs
	labels []string
}

func (l labelled) Label(i int) string { return l.labels[i] }

func newPlot(spec Spec, series []Series) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = spec.Title
	p.X.Label.Text = firstNonEmpty(spec.XLabel, spec.X, "step")
	p.Y.Label.Text = firstNonEmpty(spec.YLabel, spec.Y)
	p.X.Tick.Marker, p.Y.Tick.Marker = linearTicks{}, linearTicks{}
	if spec.LogX {
		p.X.Scale = plot.LogScale{}
		p.X.Tick.Marker = logTicks{}
	}
	if spec.LogY {
		p.Y.Scale = plot.LogScale{}
		p.Y.Tick.Marker = logTicks{}
	}
	p.Add(plotter.NewGrid())
	p.Legend.Top = true
	drawn := false
	for i, s := range series {
		var ep errPoints
		var lab labelled
		for _, pt := range s.Points {
			// Log axes cannot show non-positive values: leave such points out.
			if (spec.LogX && pt.X <= 0) || (spec.LogY && pt.Y <= 0) || !finite(pt.X) || !finite(pt.Y) {
				continue
			}
			lo, hi := pt.Y-pt.Lo, pt.Hi-pt.Y
			if spec.LogY && pt.Lo <= 0 || !finite(lo) || !finite(hi) {
				lo, hi = 0, 0
			}
			ep.XYs = append(ep.XYs, plotter.XY{X: pt.X, Y: pt.Y})
			ep.YErrors = append(ep.YErrors, struct{ Low, High float64 }{lo, hi})
			lab.XYs = append(lab.XYs, plotter.XY{X: pt.X, Y: pt.Y})
			lab.labels = append(lab.labels, pt.Label)
		}
		if len(ep.XYs) == 0 {
			continue
		}
		drawn = true
		line, pts, err := plotter.NewLinePoints(ep.XYs)
		if err != nil {
			return nil, fmt.Errorf("figure %s: series %s: %w", spec.ID, s.Name, err)
		}
		line.Color = plotutil.Color(i)
		line.Dashes = plotutil.Dashes(i)
		pts.Color = plotutil.Color(i)
		pts.Shape = plotutil.Shape(i)
		if spec.Kind == "curve" {
			pts.Radius = 0
		}
		p.Add(line, pts)
		p.Legend.Add(s.Name, line, pts)
		if spec.ErrorBars != "none" && hasBars(ep.YErrors) {
			eb, err := plotter.NewYErrorBars(ep)
			if err != nil {
				return nil, fmt.Errorf("figure %s: series %s: %w", spec.ID, s.Name, err)
			}
			eb.Color = plotutil.Color(i)
			p.Add(eb)
		}
		if hasLabels(lab.labels) {
			l, err := plotter.NewLabels(lab)
			if err != nil {
				return nil, fmt.Errorf("figure %s: series %s: %w", spec.ID, s.Name, err)
			}
			for k := range l.TextStyle {
				l.TextStyle[k].Font.Size = vg.Points(7)
				l.TextStyle[k].XAlign = draw.XLeft
			}
			l.Offset = vg.Point{X: vg.Points(3), Y: vg.Points(2)}
			p.Add(l)
		}
	}
	placeLegend(p, spec, series)
	if !drawn {
		p.Title.Text += " (no data)"
		p.X.Scale, p.Y.Scale = plot.LinearScale{}, plot.LinearScale{}
		p.X.Tick.Marker, p.Y.Tick.Marker = linearTicks{}, linearTicks{}
	}
	return p, nil
}

// logTicks labels powers of ten, or falls back to linear ticks (positive ones) when the axis spans less
// than two labelled powers of ten (e.g. prompt lengths 2048…32768).
type logTicks struct{}

func (logTicks) Ticks(min, max float64) []plot.Tick {
	if min > 0 && max/min >= 10 {
		ticks := plot.LogTicks{Prec: -1}.Ticks(min, max)
		labelled := 0
		for _, t := range ticks {
			if t.Label != "" && t.Value >= min && t.Value <= max {
				labelled++
			}
		}
		if labelled >= 2 {
			return ticks
		}
	}
	var out []plot.Tick
	for _, t := range (linearTicks{}).Ticks(min, max) {
		if t.Value > 0 {
			out = append(out, t)
		}
	}
	return out
}

// linearTicks are gonum's default ticks relabelled with the fewest significant digits that keep the
// labels distinct (gonum rounds 10.6 and 10.7 both to "11" on narrow ranges).
type linearTicks struct{}

func (linearTicks) Ticks(min, max float64) []plot.Tick {
	ticks := plot.DefaultTicks{}.Ticks(min, max)
	for digits := 1; digits <= 12; digits++ {
		seen := map[string]bool{}
		ok := true
		for _, t := range ticks {
			if t.Label == "" {
				continue
			}
			l := roundLabel(t.Value, digits)
			if seen[l] {
				ok = false
				break
			}
			seen[l] = true
		}
		if ok {
			for i := range ticks {
				if ticks[i].Label != "" {
					ticks[i].Label = roundLabel(ticks[i].Value, digits)
				}
			}
			break
		}
	}
	return ticks
}

// placeLegend puts the legend in the corner of the plot with the fewest points.
func placeLegend(p *plot.Plot, spec Spec, series []Series) {
	var xs, ys []float64
	for _, s := range series {
		for _, pt := range s.Points {
			x, y := pt.X, pt.Y
			if spec.LogX {
				if x <= 0 {
					continue
				}
				x = math.Log(x)
			}
			if spec.LogY {
				if y <= 0 {
					continue
				}
				y = math.Log(y)
			}
			if finite(x) && finite(y) {
				xs, ys = append(xs, x), append(ys, y)
			}
		}
	}
	if len(xs) == 0 {
		return
	}
	lo := func(v []float64) (float64, float64) {
		a, b := v[0], v[0]
		for _, x := range v {
			a, b = math.Min(a, x), math.Max(b, x)
		}
		return a, b
	}
	x0, x1 := lo(xs)
	y0, y1 := lo(ys)
	count := [4]int{} // top-right, top-left, bottom-right, bottom-left
	for i := range xs {
		fx, fy := 0.5, 0.5
		if x1 > x0 {
			fx = (xs[i] - x0) / (x1 - x0)
		}
		if y1 > y0 {
			fy = (ys[i] - y0) / (y1 - y0)
		}
		right, top := fx > 0.55, fy > 0.6
		left, bottom := fx < 0.45, fy < 0.4
		if top && right {
			count[0]++
		}
		if top && left {
			count[1]++
		}
		if bottom && right {
			count[2]++
		}
		if bottom && left {
			count[3]++
		}
	}
	best := 0
	for i := range count {
		if count[i] < count[best] {
			best = i
		}
	}
	p.Legend.Top = best < 2
	p.Legend.Left = best == 1 || best == 3
}

// roundLabel rounds v to digits significant digits and writes it shortly ("10", "10.56", "1e+06").
func roundLabel(v float64, digits int) string {
	r, err := strconv.ParseFloat(strconv.FormatFloat(v, 'g', digits, 64), 64)
	if err != nil {
		return strconv.FormatFloat(v, 'g', digits, 64)
	}
	return strconv.FormatFloat(r, 'g', -1, 64)
}

func finite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }

func hasBars(e plotter.YErrors) bool {
	for _, x := range e {
		if x.Low != 0 || x.High != 0 {
			return true
		}
	}
	return false
}

func hasLabels(ls []string) bool {
	for _, l := range ls {
		if l != "" {
			return true
		}
	}
	return false
}

func firstNonEmpty(s ...string) string {
	for _, x := range s {
		if x != "" {
			return x
		}
	}
	return ""
}

// Figure computes the data of every panel of spec, writes it as dir/<id>.csv, and renders the figure.
func Figure(spec Spec, rows []results.Row, configs Configs, dir string, formats ...string) ([]string, error) {
	var panels [][]Series
	for _, ps := range PanelSpecs(spec) {
		s, err := Data(ps, rows, configs)
		if err != nil {
			return nil, err
		}
		panels = append(panels, s)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	csvPath := filepath.Join(dir, spec.ID+".csv")
	f, err := os.Create(csvPath)
	if err != nil {
		return nil, fmt.Errorf("figure %s: %w", spec.ID, err)
	}
	for i, ps := range PanelSpecs(spec) {
		if len(panels) > 1 {
			fmt.Fprintf(f, "# panel %s\n", ps.Y)
		}
		if err := WriteCSV(f, panels[i]); err != nil {
			f.Close()
			return nil, err
		}
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	paths, err := Render(spec, panels, dir, formats...)
	return append([]string{csvPath}, paths...), err
}
