package sweeps

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"sort"
	"strings"

	"github.com/BurntSushi/toml"
)

// Run is one expanded run of a sweep: a resolved configuration at one seed.
type Run struct {
	Sweep     string         // sweep name
	SweepFile string         // sweep file the run came from
	Name      string         // [[run]] name (the sweep name when the file has no [[run]])
	Kind      string         // run kind: "lm", "longbench", "latency"
	Key       string         // canonical key: name[,path=value…],seed=N
	ID        string         // content ID: 12 hex characters
	Seed      int64          // seed
	Config    map[string]any // resolved config tables (base ⊕ run ⊕ grid values ⊕ smoke; [model] of `from`)
	Grid      map[string]any // this run's grid values, dotted path → value
	From      string         // `from` as written ("" when the run trains its own model)
	FromKey   string         // canonical key of the source run (with seed)
	FromID    string         // ID of the source run
	FromSweep string         // sweep name of the source run
	Smoke     bool           // the sweep's smoke overrides were applied

	prov map[string]int // dotted config path → line in SweepFile where its value was written
}

// KeyNoSeed returns the key without its trailing ",seed=N": the form `from` references and figures use.
func (r Run) KeyNoSeed() string { return KeyNoSeed(r.Key) }

// KeyNoSeed strips the trailing ",seed=N" of a canonical key.
func KeyNoSeed(key string) string {
	if i := strings.LastIndex(key, ",seed="); i >= 0 {
		return key[:i]
	}
	return key
}

// Get returns the resolved config value at a dotted path ("method.lambda").
func (r Run) Get(path string) (any, bool) { return getPath(r.Config, path) }

// Line returns the line of the sweep file where the value at a dotted config path (or its closest
// enclosing table) was written, or 0 when unknown.
func (r Run) Line(path string) int {
	for p := path; p != ""; {
		if l, ok := r.prov[p]; ok {
			return l
		}
		i := strings.LastIndex(p, ".")
		if i < 0 {
			break
		}
		p = p[:i]
	}
	return 0
}

// Decode decodes the run's resolved config strictly into dst, a pointer to a struct with `toml` tags
// (typically pre-filled with defaults: keys absent from the config keep their value). An unknown key or a
// type mismatch is an error naming the sweep file, its line, the run key and the dotted key path.
func (r Run) Decode(dst any) error {
	var buf bytes.Buffer
	if err := toml.NewEncoder(&buf).Encode(r.Config); err != nil {
		return r.errAt("", fmt.Errorf("cannot encode the resolved config: %w", err))
	}
	md, err := toml.Decode(buf.String(), dst)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return r.errAt(pe.LastKey, fmt.Errorf("key %q: %s", pe.LastKey, pe.Message))
		}
		if m := decodeErrRE.FindStringSubmatch(err.Error()); m != nil {
			return r.errAt(m[1], fmt.Errorf("key %q: %s", m[1], err.Error()[len(m[0]):]))
		}
		return r.errAt("", err)
	}
	und := md.Undecoded()
	if len(und) == 0 {
		return nil
	}
	// Report only the outermost unknown keys (an unknown table implies its children).
	bad := map[string]bool{}
	for _, k := range und {
		bad[k.String()] = true
	}
	var top []string
	for p := range bad {
		outer := false
		for q := parentPath(p); q != ""; q = parentPath(q) {
			if bad[q] {
				outer = true
				break
			}
		}
		if !outer {
			top = append(top, p)
		}
	}
	sort.Strings(top)
	known := knownPaths(reflect.TypeOf(dst), "")
	var errs []error
	for _, p := range top {
		errs = append(errs, r.errAt(p, fmt.Errorf("unknown key %q%s", p, suggest(p, known))))
	}
	return errors.Join(errs...)
}

var decodeErrRE = regexp.MustCompile(`^toml: (?:line \d+ )?\(last key "([^"]*)"\): `)

func parentPath(p string) string {
	if i := strings.LastIndex(p, "."); i >= 0 {
		return p[:i]
	}
	return ""
}

func (r Run) errAt(path string, err error) error {
	line := 0
	if path != "" {
		line = r.Line(path)
	}
	return fmt.Errorf("%s: run %s: %w", where(r.SweepFile, line), r.Key, err)
}

// knownPaths lists the dotted toml paths a struct type accepts, for "did you mean" hints.
func knownPaths(t reflect.Type, prefix string) []string {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil || t.Kind() != reflect.Struct || len(prefix) > 200 {
		return nil
	}
	var out []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		p := name
		if prefix != "" {
			p = prefix + "." + name
		}
		out = append(out, p)
		out = append(out, knownPaths(f.Type, p)...)
	}
	return out
}

// ConfigTOML returns the run's resolved configuration as TOML, preceded by comments naming the run (the
// config.toml the runner stores in the run folder).
func (r Run) ConfigTOML() ([]byte, error) {
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "# run %s (id %s) of sweep %s (%s), kind %s, seed %d\n", r.Key, r.ID, r.Sweep, r.SweepFile, r.Kind, r.Seed)
	if r.FromKey != "" {
		fmt.Fprintf(&buf, "# from %s:%s (id %s)\n", r.FromSweep, r.FromKey, r.FromID)
	}
	if r.Smoke {
		buf.WriteString("# smoke overrides applied\n")
	}
	buf.WriteString("\n")
	if err := toml.NewEncoder(&buf).Encode(r.Config); err != nil {
		return nil, fmt.Errorf("run %s: encode config: %w", r.Key, err)
	}
	return buf.Bytes(), nil
}
