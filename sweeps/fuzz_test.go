package sweeps

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzLoad: arbitrary bytes never panic the parser, and whatever parses expands without panicking.
func FuzzLoad(f *testing.F) {
	files, _ := filepath.Glob("*.toml")
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte(small))
	f.Add([]byte("schema = 1\nname = \"fuzz\"\nkind = \"lm\"\nrun = [{name = \"a\", grid = {\"x.y\" = [1, 2.5, \"s\"]}}]\n"))
	f.Add([]byte("schema = 1\nname = \"fuzz\"\n[[run]]\nname='a'\nkind='lm'\nfrom='a'\n"))
	f.Add([]byte("a = \"\"\"\nmulti\n\"\"\"\n[x]\n[[y.z]]\n'q'.\"r\" = [ {a=1}, [2, 3] ] # c\n"))
	f.Add([]byte("[[figure]]\nid = 'a'\n[[run]]\n[run.method]\n"))
	defer func(n int) { MaxRuns = n }(MaxRuns)
	MaxRuns = 256 // keep each input fast: the expansion limit is tested, not the speed of huge grids
	f.Fuzz(func(t *testing.T, data []byte) {
		_ = keyLines(data) // the line scanner must terminate on anything
		s, err := Parse("fuzz.toml", data)
		if err != nil {
			if !strings.Contains(err.Error(), "fuzz.toml") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		for _, smoke := range []bool{false, true} {
			runs, err := s.Expand(smoke)
			if err != nil {
				continue
			}
			for _, r := range runs {
				var c struct {
					Model testModel `toml:"model"`
				}
				_ = r.Decode(&c)
			}
		}
	})
}

// FuzzExpand builds sweeps from fuzzed names and values and checks the invariants of expansion: keys and
// IDs are unique and stable, every `from` source comes before its dependents.
func FuzzExpand(f *testing.F) {
	f.Add("nats", "method.lambda", "1e-7", "5e-7", int64(2), true)
	f.Add("a-b", "x", "1", "\"s\"", int64(1), false)
	f.Add("r", "a.b.c", "true", "false", int64(3), true)
	f.Add("full", "method.budget", "64", "64", int64(1), true)
	f.Fuzz(func(t *testing.T, name, path, v1, v2 string, nseeds int64, from bool) {
		if nseeds < 1 || nseeds > 4 || strings.ContainsAny(name+path+v1+v2, "\n\r") {
			return
		}
		var b strings.Builder
		fmt.Fprintf(&b, "schema = 1\nname = \"x\"\nkind = \"lm\"\nseeds = [")
		for i := int64(0); i < nseeds; i++ {
			fmt.Fprintf(&b, "%d,", i)
		}
		fmt.Fprintf(&b, "]\n[[run]]\nname = \"base\"\n[[run]]\nname = %q\ngrid = { %q = [%s, %s] }\n", name, path, v1, v2)
		if from {
			fmt.Fprintf(&b, "[[run]]\nname = \"dep\"\nfrom = \"base\"\nmethod = { x = 1 }\n")
		}
		s, err := Parse("x.toml", []byte(b.String()))
		if err != nil {
			return
		}
		runs, err := s.Expand(false)
		if err != nil {
			return
		}
		again, err := s.Expand(false)
		if err != nil {
			t.Fatalf("second expansion failed: %v", err)
		}
		keys, ids, pos := map[string]bool{}, map[string]bool{}, map[string]int{}
		for i, r := range runs {
			if keys[r.Key] || ids[r.ID] {
				t.Fatalf("duplicate key or id: %s %s", r.Key, r.ID)
			}
			keys[r.Key], ids[r.ID], pos[r.ID] = true, true, i
			if again[i].ID != r.ID || again[i].Key != r.Key {
				t.Fatalf("unstable expansion: %s/%s vs %s/%s", r.Key, r.ID, again[i].Key, again[i].ID)
			}
			if r.FromID != "" {
				if j, ok := pos[r.FromID]; !ok || j >= i {
					t.Fatalf("%s comes before its source %s", r.Key, r.FromKey)
				}
			}
			if !strings.HasSuffix(r.Key, fmt.Sprintf(",seed=%d", r.Seed)) {
				t.Fatalf("key %q does not end with its seed", r.Key)
			}
		}
	})
}
