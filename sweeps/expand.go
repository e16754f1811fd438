package sweeps

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Expand resolves every run of the sweep: runs × product(grid) × seeds, ordered so that every run comes
// after the runs it takes a checkpoint `from`. With smoke, the sweep's smoke overrides apply (to this
// sweep and to the sweeps its `from` references load, so IDs agree). Sweeps named in `from` are loaded
// from the folder of s.Path.
func (s *Sweep) Expand(smoke bool) ([]Run, error) {
	e := &expander{smoke: smoke, root: s, sweeps: map[string]*Sweep{s.Name: s}, state: map[string]int{}, runs: map[string][]Run{}}
	for i := range s.Runs {
		if _, err := e.resolve(s, i); err != nil {
			return nil, err
		}
	}
	ids := map[string]string{}
	keys := map[string]bool{}
	var out []Run
	for _, r := range e.out {
		if other, dup := ids[r.ID]; dup {
			if smoke && other == r.Key {
				continue // -smoke collapsed two runs' grids or seeds onto one configuration: run it once
			}
			return nil, fmt.Errorf("%s: runs %s and %s resolve to the same configuration (id %s): make them differ or drop one", s.Path, other, r.Key, r.ID)
		}
		if keys[r.Key] {
			return nil, fmt.Errorf("%s: two runs expand to the key %s: runs sharing a name need different grid values or seeds", s.Path, r.Key)
		}
		ids[r.ID], keys[r.Key] = r.Key, true
		out = append(out, r)
	}
	return out, nil
}

// MaxRuns bounds the runs one [[run]] may expand to (grid product × seeds); larger sweeps are almost
// certainly a mistake (and would take seconds just to expand).
var MaxRuns = 10_000

type expander struct {
	smoke  bool
	root   *Sweep
	sweeps map[string]*Sweep
	state  map[string]int   // "sweep/run" → 1 visiting, 2 done
	runs   map[string][]Run // "sweep/run" → expanded runs
	stack  []string
	out    []Run
}

func (e *expander) resolve(s *Sweep, i int) ([]Run, error) {
	spec := s.Runs[i]
	id := s.Name + ":" + spec.Name + "#" + strconv.Itoa(i)
	switch e.state[id] {
	case 2:
		return e.runs[id], nil
	case 1:
		k := 0
		for k < len(e.stack) && e.stack[k] != id {
			k++
		}
		loop := append(append([]string{}, e.stack[k:]...), id)
		for n := range loop {
			loop[n], _, _ = strings.Cut(loop[n], "#")
		}
		return nil, s.errAt(s.lineOf("run", strconv.Itoa(spec.Index), "from"), "from loop: %s", strings.Join(loop, " → "))
	}
	e.state[id] = 1
	e.stack = append(e.stack, id)
	runs, err := e.expandSpec(s, spec)
	e.stack = e.stack[:len(e.stack)-1]
	if err != nil {
		return nil, err
	}
	e.state[id] = 2
	e.runs[id] = runs
	if s == e.root {
		e.out = append(e.out, runs...)
	}
	return runs, nil
}

func (e *expander) expandSpec(s *Sweep, spec RunSpec) ([]Run, error) {
	idx := strconv.Itoa(spec.Index)
	runLine := s.lineOf("run", idx)
	kind := spec.Kind
	if kind == "" {
		kind = s.Kind
	}
	cfg := copyTable(s.Base)
	merge(cfg, spec.Config)
	prov := map[string]int{}
	s.provenance(prov, s.Base, "", "base")
	if spec.Index >= 0 {
		s.provenance(prov, spec.Config, "", "run", idx)
	}
	grid := map[string][]any{}
	for p, v := range s.Grid {
		grid[p] = v
		prov[p] = s.gridLine([]string{"grid"}, p)
	}
	for p, v := range spec.Grid {
		grid[p] = v
		prov[p] = s.gridLine([]string{"run", idx, "grid"}, p)
	}
	seeds := s.Seeds
	if spec.Seeds != nil {
		seeds = spec.Seeds
	}
	if e.smoke {
		for _, p := range sortedKeys(s.Smoke) {
			v := s.Smoke[p]
			line := s.gridLine([]string{"smoke"}, p)
			if p == "seeds" {
				seeds, _ = toSeeds(v)
				continue
			}
			if _, ok := grid[p]; !ok && s.isGridPath(p) {
				continue // replaces another run's grid; this run does not sweep p
			}
			prov[p] = line
			if _, ok := grid[p]; ok {
				arr, ok := v.([]any)
				if !ok {
					arr = []any{v}
				}
				if len(arr) == 0 {
					return nil, s.errAt(line, "smoke: %q replaces a grid and must not be empty", p)
				}
				grid[p] = arr
				continue
			}
			if err := setPath(cfg, p, v); err != nil {
				return nil, s.errAt(line, "smoke: %v", err)
			}
		}
	}
	var src []Run
	var srcSweep *Sweep
	var ref string
	if spec.From != "" {
		fromLine := s.lineOf("run", idx, "from")
		if _, ok := spec.Config["model"]; ok {
			return nil, s.errAt(s.lineOf("run", idx, "model"), "run %q: from = %q reuses the source's [model]; remove the run's model table", spec.Name, spec.From)
		}
		var err error
		srcSweep, ref, err = e.source(s, spec.From, fromLine)
		if err != nil {
			return nil, err
		}
		srcName, _, _ := strings.Cut(ref, ",")
		found := false
		for k, r := range srcSweep.Runs {
			if r.Name != srcName {
				continue
			}
			found = true
			rs, err := e.resolve(srcSweep, k)
			if err != nil {
				return nil, err
			}
			src = append(src, rs...)
		}
		if !found {
			return nil, s.errAt(fromLine, "run %q: from = %q: sweep %q has no run named %q%s (runs: %s)", spec.Name, spec.From,
				srcSweep.Name, srcName, suggest(srcName, srcSweep.Names()), strings.Join(srcSweep.Names(), ", "))
		}
	}

	paths := sortedKeys(grid)
	total := len(seeds)
	for _, p := range paths {
		total *= len(grid[p])
		if total > MaxRuns {
			return nil, s.errAt(runLine, "run %q expands to more than %d runs", spec.Name, MaxRuns)
		}
	}
	combos := product(paths, grid)
	var out []Run
	for _, combo := range combos {
		keyb := strings.Builder{}
		keyb.WriteString(spec.Name)
		gv := map[string]any{}
		c := copyTable(cfg)
		for k, p := range paths {
			if err := setPath(c, p, combo[k]); err != nil {
				return nil, s.errAt(prov[p], "grid: %v", err)
			}
			gv[p] = combo[k]
			fmt.Fprintf(&keyb, ",%s=%s", p, FormatValue(combo[k]))
		}
		for _, seed := range seeds {
			r := Run{Sweep: s.Name, SweepFile: s.Path, Name: spec.Name, Kind: kind, Seed: seed, Config: copyTable(c), Grid: gv,
				Key: fmt.Sprintf("%s,seed=%d", keyb.String(), seed), From: spec.From, Smoke: e.smoke, prov: prov}
			if spec.From != "" {
				m, err := matchFrom(src, ref, seed)
				if err != nil {
					return nil, s.errAt(s.lineOf("run", idx, "from"), "run %s: from = %q: %v", r.Key, spec.From, err)
				}
				r.FromKey, r.FromID, r.FromSweep = m.Key, m.ID, m.Sweep
				if mm, ok := m.Config["model"]; ok {
					r.Config["model"] = deepCopy(mm)
				}
			}
			id, err := runID(r)
			if err != nil {
				return nil, s.errAt(runLine, "run %s: %v", r.Key, err)
			}
			r.ID = id
			out = append(out, r)
		}
	}
	return out, nil
}

// isGridPath reports whether p is swept by the top-level grid or by any run.
func (s *Sweep) isGridPath(p string) bool {
	if _, ok := s.Grid[p]; ok {
		return true
	}
	for _, r := range s.Runs {
		if _, ok := r.Grid[p]; ok {
			return true
		}
	}
	return false
}

// source finds the sweep a `from` reference points into and the reference without its sweep prefix.
func (e *expander) source(s *Sweep, from string, line int) (*Sweep, string, error) {
	name, ref, cross := strings.Cut(from, ":")
	if !cross || !validName(name) {
		return s, from, nil
	}
	if sw, ok := e.sweeps[name]; ok {
		return sw, ref, nil
	}
	path := filepath.Join(filepath.Dir(s.Path), name+".toml")
	sw, err := Load(path)
	if err != nil {
		return nil, "", s.errAt(line, "from = %q: %w", from, err)
	}
	e.sweeps[name] = sw
	return sw, ref, nil
}

// matchFrom finds the run of src at seed whose key (without seed) matches ref: the same name and, for every
// path=value in ref, the same grid value (numbers compare by value: "5e-7" matches "5e-07").
func matchFrom(src []Run, ref string, seed int64) (Run, error) {
	parts := strings.Split(ref, ",")
	want := map[string]string{}
	for _, p := range parts[1:] {
		k, v, ok := strings.Cut(p, "=")
		if !ok {
			return Run{}, fmt.Errorf("bad reference part %q (want path=value)", p)
		}
		want[k] = v
	}
	var hits []Run
	var keys []string
	haveSeed := false
	for _, r := range src {
		if r.Seed != seed {
			continue
		}
		haveSeed = true
		keys = append(keys, r.KeyNoSeed())
		ok := true
		for k, v := range want {
			gv, has := r.Grid[k]
			if !has || !sameValue(v, FormatValue(gv)) {
				ok = false
				break
			}
		}
		if ok && (len(hits) == 0 || hits[len(hits)-1].ID != r.ID) { // -smoke may collapse two runs onto one
			hits = append(hits, r)
		}
	}
	switch {
	case !haveSeed && len(src) > 0:
		return Run{}, fmt.Errorf("the source %s has no run at seed %d (its seeds must include this sweep's)", src[0].Name, seed)
	case len(hits) == 0:
		return Run{}, fmt.Errorf("no run matches%s (candidates: %s)", suggest(ref, keys), strings.Join(keys, "; "))
	case len(hits) > 1:
		var amb []string
		for _, h := range hits {
			amb = append(amb, h.KeyNoSeed())
		}
		return Run{}, fmt.Errorf("ambiguous: matches %s; name the grid values", strings.Join(amb, "; "))
	}
	return hits[0], nil
}

// product lists every combination of the grid values, the first path varying slowest.
func product(paths []string, grid map[string][]any) [][]any {
	out := [][]any{{}}
	for _, p := range paths {
		var next [][]any
		for _, prefix := range out {
			for _, v := range grid[p] {
				c := append(append([]any{}, prefix...), v)
				next = append(next, c)
			}
		}
		out = next
	}
	return out
}

// runID hashes the canonical JSON of {kind, config, seed, from}.
func runID(r Run) (string, error) {
	js, err := CanonicalJSON(r.Kind, r.Config, r.Seed, r.FromID)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(js)
	return hex.EncodeToString(sum[:])[:12], nil
}

// CanonicalJSON is the byte string run IDs hash: JSON with sorted keys of
// {"kind", "config", "seed", "from"}; NaN and ±Inf floats are written as the strings "nan", "+inf", "-inf".
func CanonicalJSON(kind string, config map[string]any, seed int64, fromID string) ([]byte, error) {
	v := struct {
		Kind   string `json:"kind"`
		Config any    `json:"config"`
		Seed   int64  `json:"seed"`
		From   string `json:"from"`
	}{kind, jsonSafe(config), seed, fromID}
	return json.Marshal(v)
}

func jsonSafe(v any) any {
	switch t := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, x := range t {
			out[k] = jsonSafe(x)
		}
		return out
	case []any:
		out := make([]any, len(t))
		for i, x := range t {
			out[i] = jsonSafe(x)
		}
		return out
	case []map[string]any:
		out := make([]any, len(t))
		for i, x := range t {
			out[i] = jsonSafe(x)
		}
		return out
	case float64:
		switch {
		case math.IsNaN(t):
			return "nan"
		case math.IsInf(t, 1):
			return "+inf"
		case math.IsInf(t, -1):
			return "-inf"
		}
	case time.Time:
		return t.Format(time.RFC3339Nano)
	}
	return v
}

// provenance records the line of every table and value of m (a config subtree written at keys).
func (s *Sweep) provenance(prov map[string]int, m map[string]any, prefix string, keys ...string) {
	for k, v := range m {
		p := k
		if prefix != "" {
			p = prefix + "." + k
		}
		kk := append(append([]string{}, keys...), k)
		if l := s.lineOf(kk...); l > 0 {
			prov[p] = l
		}
		if sub, ok := v.(map[string]any); ok && len(kk) < 64 {
			s.provenance(prov, sub, p, kk...)
		}
	}
}

// gridLine finds the line of a dotted path written under keys, quoted ("method.lambda" = …) or as
// nested keys (method.lambda = …).
func (s *Sweep) gridLine(keys []string, p string) int {
	if l := s.lineOf(append(append([]string{}, keys...), p)...); l > 0 {
		return l
	}
	if l := s.lineOf(append(append([]string{}, keys...), strings.Split(p, ".")...)...); l > 0 {
		return l
	}
	return s.lineOf(keys...)
}
