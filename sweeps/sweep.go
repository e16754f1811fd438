package sweeps

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// SchemaVersion is the only sweep schema this package reads (the top-level key `schema`).
const SchemaVersion = 1

// Sweep is a loaded, checked sweep file. Expand turns it into runs.
type Sweep struct {
	Path    string         // the file it was read from, as given to Load
	Name    string         // top-level `name`, equal to the file stem
	Kind    string         // default run kind ("lm", "longbench", "latency")
	Seeds   []int64        // seeds every run is repeated with; default [0]
	Smoke   map[string]any // dotted path → value applied with -smoke ("seeds" replaces Seeds)
	Figures []Figure       // figures drawn from the sweep's results
	Base    map[string]any // the [base] tables
	Grid    map[string][]any
	Runs    []RunSpec

	lines map[string]int // key path (pathKey) → line in Path
	plain map[string]int // key path with array indices removed → first line
}

// RunSpec is one [[run]] entry before expansion.
type RunSpec struct {
	Name   string
	Kind   string           // "" means the sweep's kind
	From   string           // "" or "<key without seed>" or "<sweep>:<key without seed>"
	Grid   map[string][]any // the run's own grid (dotted path → values)
	Seeds  []int64          // the run's own seeds (nil: the sweep's seeds); -smoke's "seeds" replaces both
	Config map[string]any   // the run's config tables (data, model, method, …)
	Index  int              // position among the file's runs (-1: the implicit run of a sweep without [[run]])
}

// Figure is one entry of the `figure` array: a plot drawn from the sweep's result rows.
type Figure struct {
	ID        string   `toml:"id"`        // file stem of the figure (required, unique)
	Title     string   `toml:"title"`     // plot title; default the ID
	Kind      string   `toml:"kind"`      // "xy" (default): one point per run and x; "curve": y against step per run
	X         string   `toml:"x"`         // metric name, "x" (the row's x column), "step", or a dotted config path
	Y         string   `toml:"y"`         // metric name (required unless panels is set)
	Panels    []string `toml:"panels"`    // several y metrics drawn side by side (plot.Align)
	Series    string   `toml:"series"`    // "name" (default), "method", "key", "sweep" or a dotted config path
	Label     string   `toml:"label"`     // dotted config path labelling each point; "a,b": the first one the run has
	Task      string   `toml:"task"`      // only rows of this task ("" = any)
	Names     []string `toml:"names"`     // only runs of these names (none = any)
	Split     string   `toml:"split"`     // only rows of this split ("" = any)
	LogX      bool     `toml:"logx"`      // logarithmic x axis
	LogY      bool     `toml:"logy"`      // logarithmic y axis
	ErrorBars string   `toml:"errorbars"` // "ci95" (mean ± 1.96·s/√n over seeds, default), "minmax" or "none"
	XLabel    string   `toml:"xlabel"`    // axis label; default x
	YLabel    string   `toml:"ylabel"`    // axis label; default y
}

// fileSchema is the strict shape of a sweep file.
type fileSchema struct {
	Schema *int64           `toml:"schema"`
	Name   string           `toml:"name"`
	Kind   string           `toml:"kind"`
	Seeds  []int64          `toml:"seeds"`
	Smoke  map[string]any   `toml:"smoke"`
	Figure []Figure         `toml:"figure"`
	Base   map[string]any   `toml:"base"`
	Grid   map[string]any   `toml:"grid"`
	Run    []map[string]any `toml:"run"`
}

var topKeys = []string{"schema", "name", "kind", "seeds", "smoke", "figure", "base", "grid", "run"}
var figureKeys = []string{"id", "title", "kind", "x", "y", "panels", "series", "label", "task", "names", "split", "logx", "logy", "errorbars", "xlabel", "ylabel"}
var runKeys = []string{"name", "kind", "from", "grid", "seeds"}

// Load reads and checks a sweep file. Errors name the file, the line when known, and the key.
func Load(path string) (*Sweep, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("sweep: %w", err)
	}
	return Parse(path, src)
}

// Parse checks a sweep from its bytes; path names it in errors and fixes the expected name (its stem) and
// the folder where `from = "<sweep>:…"` looks for other sweeps.
func Parse(path string, src []byte) (s *Sweep, err error) {
	defer func() { // the TOML decoder must not take the process down on hostile input
		if r := recover(); r != nil {
			s, err = nil, fmt.Errorf("%s: cannot parse: %v", path, r)
		}
	}()
	var raw fileSchema
	md, err := toml.Decode(string(src), &raw)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, fmt.Errorf("%s:%d: %s", path, pe.Position.Line, pe.Message)
		}
		line, msg := cleanTOMLError(err)
		return nil, fmt.Errorf("%s: %s", where(path, line), msg)
	}
	s = &Sweep{Path: path, lines: keyLines(src), Grid: map[string][]any{}, Smoke: map[string]any{}}
	s.plain = map[string]int{}
	for k, line := range s.lines {
		pk := stripIndices(k)
		if old, ok := s.plain[pk]; !ok || line < old {
			s.plain[pk] = line
		}
	}
	var und []toml.Key
	for _, k := range md.Undecoded() {
		switch k[0] {
		case "base", "grid", "smoke", "run": // free-form tables, checked below and by Run.Decode
		default:
			und = append(und, k)
		}
	}
	if len(und) > 0 {
		k := und[0]
		switch {
		case len(k) == 1:
			return nil, s.errAt(s.lineOf(k...), "unknown top-level key %q%s (known: %s)", k[0], suggest(k[0], topKeys), strings.Join(topKeys, ", "))
		case k[0] == "figure":
			return nil, s.errAt(s.lineOf(k...), "figure: unknown key %q%s (known: %s)", k[len(k)-1], suggest(k[len(k)-1], figureKeys), strings.Join(figureKeys, ", "))
		}
		return nil, s.errAt(s.lineOf(k...), "unknown key %q", k.String())
	}
	if raw.Schema == nil {
		return nil, s.errAt(0, "missing key \"schema\" (write schema = %d)", SchemaVersion)
	}
	if *raw.Schema != SchemaVersion {
		return nil, s.errAt(s.lineOf("schema"), "schema = %d: this build reads schema %d", *raw.Schema, SchemaVersion)
	}
	stem := strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	if raw.Name != stem {
		return nil, s.errAt(s.lineOf("name"), "name = %q: must equal the file stem %q", raw.Name, stem)
	}
	if !validName(raw.Name) {
		return nil, s.errAt(s.lineOf("name"), "name = %q: use letters, digits, '_' and '-' only", raw.Name)
	}
	s.Name, s.Kind = raw.Name, raw.Kind
	s.Seeds = raw.Seeds
	if md.IsDefined("seeds") && len(s.Seeds) == 0 {
		return nil, s.errAt(s.lineOf("seeds"), "seeds is empty")
	}
	if len(s.Seeds) == 0 {
		s.Seeds = []int64{0}
	}
	if err := checkSeeds(s.Seeds); err != nil {
		return nil, s.errAt(s.lineOf("seeds"), "seeds: %v", err)
	}
	s.Base = raw.Base
	if s.Base == nil {
		s.Base = map[string]any{}
	}
	if s.Grid, err = s.grid(raw.Grid, "grid"); err != nil {
		return nil, err
	}
	flatten("", raw.Smoke, s.Smoke)
	for _, p := range sortedKeys(s.Smoke) {
		if !validPath(p) {
			return nil, s.errAt(s.lineOf("smoke"), "smoke: bad path %q", p)
		}
		if p == "seeds" {
			if _, err := toSeeds(s.Smoke[p]); err != nil {
				return nil, s.errAt(s.lineOf("smoke", "seeds"), "smoke.seeds: %v", err)
			}
		}
	}
	if err := s.figures(raw.Figure); err != nil {
		return nil, err
	}
	if err := s.runs(raw.Run); err != nil {
		return nil, err
	}
	for i, r := range s.Runs {
		if r.Kind == "" && s.Kind == "" {
			return nil, s.errAt(s.lineOf("run", strconv.Itoa(i)), "run %q: no kind (set the top-level kind or the run's kind)", r.Name)
		}
	}
	return s, nil
}

func checkSeeds(seeds []int64) error {
	seen := map[int64]bool{}
	for _, x := range seeds {
		if x < 0 {
			return fmt.Errorf("seed %d: must be ≥ 0", x)
		}
		if seen[x] {
			return fmt.Errorf("seed %d listed twice", x)
		}
		seen[x] = true
	}
	return nil
}

func toSeeds(v any) ([]int64, error) {
	arr, ok := v.([]any)
	if !ok || len(arr) == 0 {
		return nil, fmt.Errorf("want a non-empty array of integers, got %s", typeName(v))
	}
	out := make([]int64, len(arr))
	for i, x := range arr {
		n, ok := x.(int64)
		if !ok {
			return nil, fmt.Errorf("want integers, got %s", typeName(x))
		}
		out[i] = n
	}
	return out, checkSeeds(out)
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

func validName(s string) bool { return nameRE.MatchString(s) }

// grid flattens and checks a grid table; where names its place ("grid", "run.3.grid") for errors.
func (s *Sweep) grid(raw map[string]any, where string) (map[string][]any, error) {
	flat := map[string]any{}
	flatten("", raw, flat)
	out := map[string][]any{}
	wparts := strings.Split(where, ".")
	for _, p := range sortedKeys(flat) {
		line := s.lineOf(append(wparts, p)...)
		if line == 0 {
			line = s.lineOf(append(wparts, strings.Split(p, ".")...)...)
		}
		if !validPath(p) || p == "seeds" {
			return nil, s.errAt(line, "%s: bad grid path %q (sweep seeds with the top-level seeds)", where, p)
		}
		arr, ok := flat[p].([]any)
		if !ok {
			if tab, ok2 := flat[p].([]map[string]any); ok2 {
				for _, t := range tab {
					arr = append(arr, t)
				}
				ok = true
			}
		}
		if !ok || len(arr) == 0 {
			return nil, s.errAt(line, "%s: %q must be a non-empty array of values, got %s", where, p, typeName(flat[p]))
		}
		seen := map[string]bool{}
		for _, v := range arr {
			f := FormatValue(v)
			if seen[f] {
				return nil, s.errAt(line, "%s: %q lists %s twice", where, p, f)
			}
			seen[f] = true
		}
		out[p] = arr
	}
	return out, nil
}

func (s *Sweep) figures(figs []Figure) error {
	seen := map[string]bool{}
	for i, f := range figs {
		line := s.lineOf("figure", strconv.Itoa(i))
		switch {
		case f.ID == "" || !validName(f.ID):
			return s.errAt(line, "figure %d: id = %q: want a file stem of letters, digits, '_' and '-'", i, f.ID)
		case seen[f.ID]:
			return s.errAt(line, "figure %d: id %q used twice", i, f.ID)
		case f.Y == "" && len(f.Panels) == 0:
			return s.errAt(line, "figure %q: set y (or panels)", f.ID)
		case f.X == "" && f.Kind != "curve":
			return s.errAt(line, "figure %q: set x", f.ID)
		}
		seen[f.ID] = true
		switch f.Kind {
		case "", "xy", "curve":
		default:
			return s.errAt(line, "figure %q: kind = %q: want \"xy\" or \"curve\"", f.ID, f.Kind)
		}
		switch f.ErrorBars {
		case "", "ci95", "minmax", "none":
		default:
			return s.errAt(line, "figure %q: errorbars = %q: want \"ci95\", \"minmax\" or \"none\"", f.ID, f.ErrorBars)
		}
	}
	s.Figures = figs
	return nil
}

func (s *Sweep) runs(raw []map[string]any) error {
	if len(raw) == 0 {
		s.Runs = []RunSpec{{Name: s.Name, Config: map[string]any{}, Grid: map[string][]any{}, Index: -1}}
		return nil
	}
	names := map[string]int{}
	for i, m := range raw {
		idx := strconv.Itoa(i)
		line := s.lineOf("run", idx)
		r := RunSpec{Config: map[string]any{}, Index: i}
		for _, k := range sortedKeys(m) {
			v := m[k]
			kl := s.lineOf("run", idx, k)
			if kl == 0 {
				kl = line
			}
			str := func() (string, error) {
				x, ok := v.(string)
				if !ok {
					return "", s.errAt(kl, "run %d: %s must be a string, got %s", i, k, typeName(v))
				}
				return x, nil
			}
			var err error
			switch k {
			case "name":
				r.Name, err = str()
			case "kind":
				r.Kind, err = str()
			case "from":
				r.From, err = str()
				if err == nil && r.From == "" {
					err = s.errAt(kl, "run %d: from is empty", i)
				}
			case "seeds":
				var e error
				if r.Seeds, e = toSeeds(v); e != nil {
					err = s.errAt(kl, "run %d: seeds: %v", i, e)
				}
			case "grid":
				t, ok := v.(map[string]any)
				if !ok {
					return s.errAt(kl, "run %d: grid must be a table, got %s", i, typeName(v))
				}
				r.Grid, err = s.grid(t, "run."+idx+".grid")
			default:
				if _, ok := v.(map[string]any); !ok {
					return s.errAt(kl, "run %d: unknown key %q%s: a run has %s and config tables such as [run.method]",
						i, k, suggest(k, runKeys), strings.Join(runKeys, ", "))
				}
				r.Config[k] = v
			}
			if err != nil {
				return err
			}
		}
		if r.Name == "" {
			return s.errAt(line, "run %d: missing name", i)
		}
		if !validName(r.Name) {
			return s.errAt(s.lineOf("run", idx, "name"), "run %d: name = %q: use letters, digits, '_' and '-' only", i, r.Name)
		}
		// Several runs may share a name (one series in figures, e.g. a λ grid at one seed plus extra seeds of one λ);
		// their expanded keys must still differ, which Expand checks.
		names[r.Name] = i
		for p := range r.Grid {
			if _, clash := s.Grid[p]; clash {
				return s.errAt(s.lineOf("run", idx, "grid"), "run %q: grid path %q is also in the top-level [grid]", r.Name, p)
			}
		}
		if r.Grid == nil {
			r.Grid = map[string][]any{}
		}
		s.Runs = append(s.Runs, r)
	}
	return nil
}

// lineOf returns the line where a key path is written (0 when unknown). Pieces are TOML key pieces; array
// indices are decimal pieces. Without indices, the first matching element is used.
func (s *Sweep) lineOf(parts ...string) int {
	if s == nil {
		return 0
	}
	if l, ok := s.lines[pathKey(parts)]; ok {
		return l
	}
	if l, ok := s.plain[stripIndices(pathKey(parts))]; ok {
		return l
	}
	return 0
}

func stripIndices(k string) string {
	parts := strings.Split(k, "\x00")
	out := parts[:0:0]
	for _, p := range parts {
		if _, err := strconv.Atoi(p); err == nil {
			continue
		}
		out = append(out, p)
	}
	return pathKey(out)
}

func (s *Sweep) errAt(line int, format string, args ...any) error {
	return fmt.Errorf("%s: %w", where(s.Path, line), fmt.Errorf(format, args...))
}

func where(path string, line int) string {
	if line > 0 {
		return fmt.Sprintf("%s:%d", path, line)
	}
	return path
}

var lastKeyRE = regexp.MustCompile(`^toml: (?:line (\d+) )?\(last key "([^"]*)"\): `)

// cleanTOMLError splits BurntSushi's "toml: line N (last key …): msg" into the line (0 if absent) and
// "key "k": msg".
func cleanTOMLError(err error) (int, string) {
	msg := err.Error()
	if m := lastKeyRE.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return line, fmt.Sprintf("key %q: %s", m[2], msg[len(m[0]):])
	}
	return 0, strings.TrimPrefix(msg, "toml: ")
}

// Names returns the run names of a sweep in file order.
func (s *Sweep) Names() []string {
	var out []string
	seen := map[string]bool{}
	for _, r := range s.Runs {
		if !seen[r.Name] {
			out, seen[r.Name] = append(out, r.Name), true
		}
	}
	sort.Strings(out)
	return out
}
