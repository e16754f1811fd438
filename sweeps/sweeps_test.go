package sweeps

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// TestShippedSweepGoldens pins the keys and IDs of every shipped sweep, normal and smoke: a change to a
// sweep file or to the expansion rules that moves an ID shows here (refresh with -update).
func TestShippedSweepGoldens(t *testing.T) {
	files, err := filepath.Glob("*.toml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no sweeps found: %v", err)
	}
	for _, f := range files {
		t.Run(f, func(t *testing.T) {
			s, err := Load(f)
			if err != nil {
				t.Fatal(err)
			}
			var b strings.Builder
			for _, smoke := range []bool{false, true} {
				runs, err := s.Expand(smoke)
				if err != nil {
					t.Fatal(err)
				}
				fmt.Fprintf(&b, "# %s smoke=%v: %d runs (key id kind from_key from_id)\n", f, smoke, len(runs))
				for _, r := range runs {
					from := "-"
					if r.FromKey != "" {
						from = r.FromSweep + ":" + r.FromKey + " " + r.FromID
					}
					fmt.Fprintf(&b, "%s %s %s %s\n", r.Key, r.ID, r.Kind, from)
				}
			}
			golden := filepath.Join("testdata", strings.TrimSuffix(f, ".toml")+".golden.txt")
			if *update {
				if err := os.WriteFile(golden, []byte(b.String()), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./sweeps -update)", err)
			}
			if got := b.String(); got != string(want) {
				t.Errorf("expansion of %s changed (run go test ./sweeps -update if intended):\n%s", f, diff(string(want), got))
			}
		})
	}
}

func diff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	for i := 0; i < max(len(w), len(g)); i++ {
		var a, c string
		if i < len(w) {
			a = w[i]
		}
		if i < len(g) {
			c = g[i]
		}
		if a != c {
			fmt.Fprintf(&b, "line %d:\n  want %s\n  got  %s\n", i+1, a, c)
		}
	}
	return b.String()
}

// writeSweep writes files into a temp folder and returns the folder.
func writeSweeps(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, src := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

const small = `schema = 1
name = "s"
kind = "lm"
seeds = [0, 1]
smoke = { "train.steps" = 2, "method.budget" = [8], seeds = [0] }

[base]
method = { name = "full" }

[base.train]
steps = 100

[[run]]
name = "full"

[[run]]
name = "nats"
method = { name = "nats" }
grid = { "method.lambda" = [1e-7, 5e-7] }

[[run]]
name = "h2o"
from = "full"
method = { name = "h2o" }
grid = { "method.budget" = [64, 128] }
`

func TestExpand(t *testing.T) {
	dir := writeSweeps(t, map[string]string{"s.toml": small})
	s, err := Load(filepath.Join(dir, "s.toml"))
	if err != nil {
		t.Fatal(err)
	}
	runs, err := s.Expand(false)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, r := range runs {
		keys = append(keys, r.Key)
	}
	want := []string{"full,seed=0", "full,seed=1", "nats,method.lambda=1e-07,seed=0", "nats,method.lambda=1e-07,seed=1",
		"nats,method.lambda=5e-07,seed=0", "nats,method.lambda=5e-07,seed=1",
		"h2o,method.budget=64,seed=0", "h2o,method.budget=64,seed=1", "h2o,method.budget=128,seed=0", "h2o,method.budget=128,seed=1"}
	if strings.Join(keys, " ") != strings.Join(want, " ") {
		t.Fatalf("keys:\n got %v\nwant %v", keys, want)
	}
	h := runs[7]
	if h.FromKey != "full,seed=1" || h.FromID != runs[1].ID || h.FromSweep != "s" {
		t.Errorf("from of %s: %s %s %s", h.Key, h.FromSweep, h.FromKey, h.FromID)
	}
	if v, _ := h.Get("method.budget"); v != int64(64) {
		t.Errorf("method.budget = %v", v)
	}
	if v, _ := runs[2].Get("method.name"); v != "nats" {
		t.Errorf("deep merge: method.name = %v", v)
	}
	if v, _ := runs[2].Get("train.steps"); v != int64(100) {
		t.Errorf("base: train.steps = %v", v)
	}
	// IDs are deterministic and differ by seed and config.
	again, _ := s.Expand(false)
	for i := range runs {
		if runs[i].ID != again[i].ID || len(runs[i].ID) != 12 {
			t.Fatalf("id of %s not stable: %s vs %s", runs[i].Key, runs[i].ID, again[i].ID)
		}
	}

	smoke, err := s.Expand(true)
	if err != nil {
		t.Fatal(err)
	}
	keys = keys[:0]
	for _, r := range smoke {
		keys = append(keys, r.Key)
		if v, _ := r.Get("train.steps"); v != int64(2) {
			t.Errorf("smoke %s: train.steps = %v", r.Key, v)
		}
		if !r.Smoke {
			t.Errorf("smoke %s: Smoke not set", r.Key)
		}
	}
	if got := strings.Join(keys, " "); got != "full,seed=0 nats,method.lambda=1e-07,seed=0 nats,method.lambda=5e-07,seed=0 h2o,method.budget=8,seed=0" {
		t.Errorf("smoke keys: %s", got)
	}
	if v, ok := smoke[1].Get("method.budget"); ok {
		// method.budget is a grid path of h2o only: the smoke array replaces that grid and leaves other runs alone.
		t.Errorf("smoke grid path leaked into %s: method.budget = %v", smoke[1].Key, v)
	}
	if smoke[0].ID == runs[0].ID {
		t.Errorf("smoke and normal runs share id %s", smoke[0].ID)
	}
}

func TestCrossSweepFrom(t *testing.T) {
	dir := writeSweeps(t, map[string]string{"s.toml": small, "lat.toml": `schema = 1
name = "lat"
kind = "latency"
run = [
  { name = "full", from = "s:full" },
  { name = "nats", from = "s:nats,method.lambda=5e-7", method = { name = "nats" } },
]
`})
	s, err := Load(filepath.Join(dir, "lat.toml"))
	if err != nil {
		t.Fatal(err)
	}
	runs, err := s.Expand(false)
	if err != nil {
		t.Fatal(err)
	}
	if len(runs) != 2 || runs[1].FromKey != "nats,method.lambda=5e-07,seed=0" || runs[1].FromSweep != "s" {
		t.Fatalf("runs: %+v", runs)
	}
	if v, _ := runs[1].Get("train.steps"); v != nil {
		t.Errorf("latency run inherited train from the source: %v", v)
	}
}

// TestLoadErrors: bad input is an error naming the file, the line and the key.
func TestLoadErrors(t *testing.T) {
	for _, tc := range []struct{ name, src, want string }{
		{"unknown top-level key", "schema = 1\nname = \"x\"\nkind = \"lm\"\nseed = [0]\n", `x.toml:4: unknown top-level key "seed" (did you mean "seeds"?)`},
		{"missing schema", "name = \"x\"\nkind = \"lm\"\n", `missing key "schema"`},
		{"wrong schema", "schema = 2\nname = \"x\"\nkind = \"lm\"\n", `x.toml:1: schema = 2`},
		{"name mismatch", "schema = 1\nname = \"y\"\nkind = \"lm\"\n", `x.toml:2: name = "y": must equal the file stem "x"`},
		{"syntax", "schema = 1\nname = \"x\"\nkind = \n", `x.toml:3:`},
		{"type", "schema = 1\nname = \"x\"\nkind = \"lm\"\nseeds = \"a\"\n", `x.toml:4: key "seeds"`},
		{"figure key", "schema = 1\nname = \"x\"\nkind = \"lm\"\n[[figure]]\nid = \"a\"\ny = \"ppl\"\nx = \"kv_fraction\"\nlogz = true\n", `x.toml:8: figure: unknown key "logz" (did you mean "logx"?)`},
		{"run scalar", "schema = 1\nname = \"x\"\nkind = \"lm\"\n[[run]]\nname = \"a\"\nfrm = \"b\"\n", `x.toml:6: run 0: unknown key "frm" (did you mean "from"?)`},
		{"grid not array", "schema = 1\nname = \"x\"\nkind = \"lm\"\n[grid]\n\"method.lambda\" = 1.0\n", `x.toml:5: grid: "method.lambda" must be a non-empty array`},
		{"grid clash", "schema = 1\nname = \"x\"\nkind = \"lm\"\n[grid]\n\"a.b\" = [1]\n[[run]]\nname = \"r\"\ngrid = { \"a.b\" = [2] }\n", `x.toml:8: run "r": grid path "a.b" is also in the top-level [grid]`},
		{"run seeds", "schema = 1\nname = \"x\"\nkind = \"lm\"\n[[run]]\nname = \"a\"\nseeds = [\"1\"]\n", `x.toml:6: run 0: seeds: want integers, got string`},
		{"no kind", "schema = 1\nname = \"x\"\n[[run]]\nname = \"a\"\n", `x.toml:3: run "a": no kind`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := writeSweeps(t, map[string]string{"x.toml": tc.src})
			_, err := Load(filepath.Join(dir, "x.toml"))
			if err == nil {
				t.Fatalf("no error")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q\ndoes not contain %q", err, tc.want)
			}
			if !strings.Contains(err.Error(), "x.toml") {
				t.Fatalf("error %q does not name the file", err)
			}
		})
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.toml")); err == nil || !strings.Contains(err.Error(), "missing.toml") {
		t.Errorf("missing file: %v", err)
	}
}

func TestFromErrors(t *testing.T) {
	head := "schema = 1\nname = \"x\"\nkind = \"lm\"\n"
	for _, tc := range []struct{ name, src, want string }{
		{"nowhere", head + "[[run]]\nname = \"a\"\nfrom = \"ful\"\n[[run]]\nname = \"full\"\n", `x.toml:6: run "a": from = "ful": sweep "x" has no run named "ful" (did you mean "full"?)`},
		{"loop", head + "[[run]]\nname = \"a\"\nfrom = \"b\"\n[[run]]\nname = \"b\"\nfrom = \"a\"\n", `from loop: x:a → x:b → x:a`},
		{"self", head + "[[run]]\nname = \"a\"\nfrom = \"a\"\n", `x.toml:6: from loop: x:a → x:a`},
		{"ambiguous", head + "[[run]]\nname = \"a\"\ngrid = { \"m.l\" = [1, 2] }\n[[run]]\nname = \"b\"\nfrom = \"a\"\n", `ambiguous: matches a,m.l=1; a,m.l=2`},
		{"no match", head + "[[run]]\nname = \"a\"\ngrid = { \"m.l\" = [1, 2] }\n[[run]]\nname = \"b\"\nfrom = \"a,m.l=3\"\n", `no run matches`},
		{"missing sweep", head + "[[run]]\nname = \"a\"\nfrom = \"other:full\"\n", `x.toml:6: from = "other:full": sweep: open`},
		{"model", head + "[[run]]\nname = \"full\"\n[[run]]\nname = \"a\"\nfrom = \"full\"\nmodel = { d_model = 8 }\n", `x.toml:9: run "a": from = "full" reuses the source's [model]`},
		{"seed", head + "seeds = [0, 1]\n[[run]]\nname = \"a\"\nfrom = \"y:full\"\n", `has no run at seed 1`},
		{"duplicate config", head + "[[run]]\nname = \"a\"\n[[run]]\nname = \"b\"\n", `resolve to the same configuration`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := writeSweeps(t, map[string]string{"x.toml": tc.src, "y.toml": "schema = 1\nname = \"y\"\nkind = \"lm\"\n[[run]]\nname = \"full\"\n"})
			s, err := Load(filepath.Join(dir, "x.toml"))
			if err == nil {
				_, err = s.Expand(false)
			}
			if err == nil {
				t.Fatalf("no error")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q\ndoes not contain %q", err, tc.want)
			}
		})
	}
}

type testModel struct {
	DModel  int `toml:"d_model"`
	NLayers int `toml:"n_layers"`
}

type testConfig struct {
	Model  testModel `toml:"model"`
	Method struct {
		Name   string  `toml:"name"`
		Lambda float64 `toml:"lambda"`
	} `toml:"method"`
}

func TestDecodeStrict(t *testing.T) {
	src := "schema = 1\nname = \"x\"\nkind = \"lm\"\n\n[base.model]\nd_model = 8\nn_layer = 2\n\n[[run]]\nname = \"a\"\nmethod = { name = \"nats\", lamda = 1e-7 }\n"
	dir := writeSweeps(t, map[string]string{"x.toml": src})
	s, err := Load(filepath.Join(dir, "x.toml"))
	if err != nil {
		t.Fatal(err)
	}
	runs, err := s.Expand(false)
	if err != nil {
		t.Fatal(err)
	}
	var c testConfig
	err = runs[0].Decode(&c)
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{
		`x.toml:7: run a,seed=0: unknown key "model.n_layer" (did you mean "model.n_layers"?)`,
		`x.toml:11: run a,seed=0: unknown key "method.lamda" (did you mean "method.lambda"?)`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q\ndoes not contain %q", err, want)
		}
	}

	// Type mismatch names the key and line; defaults survive for absent keys.
	src = "schema = 1\nname = \"x\"\nkind = \"lm\"\n[base.model]\nd_model = \"big\"\n"
	dir = writeSweeps(t, map[string]string{"x.toml": src})
	s, _ = Load(filepath.Join(dir, "x.toml"))
	runs, _ = s.Expand(false)
	err = runs[0].Decode(&c)
	if err == nil || !strings.Contains(err.Error(), `x.toml:5: run x,seed=0: key "model.d_model"`) {
		t.Errorf("type mismatch: %v", err)
	}
	src = "schema = 1\nname = \"x\"\nkind = \"lm\"\n[base.model]\nd_model = 16\n"
	dir = writeSweeps(t, map[string]string{"x.toml": src})
	s, _ = Load(filepath.Join(dir, "x.toml"))
	runs, _ = s.Expand(false)
	c = testConfig{Model: testModel{NLayers: 3}}
	if err := runs[0].Decode(&c); err != nil || c.Model.DModel != 16 || c.Model.NLayers != 3 {
		t.Errorf("decode: %v %+v", err, c)
	}
}

func TestKeyValueFormat(t *testing.T) {
	for _, tc := range []struct {
		v    any
		want string
	}{{5e-7, "5e-07"}, {0.0, "0"}, {1e-8, "1e-08"}, {int64(128), "128"}, {"max", "max"}, {true, "true"},
		{[]any{"global", "local"}, "[global+local]"}, {0.1, "0.1"}, {100000.0, "100000"}} {
		if got := FormatValue(tc.v); got != tc.want {
			t.Errorf("FormatValue(%v) = %q, want %q", tc.v, got, tc.want)
		}
	}
	if KeyNoSeed("nats,method.lambda=5e-07,seed=12") != "nats,method.lambda=5e-07" {
		t.Error("KeyNoSeed")
	}
}

// TestSharedNameAndRunSeeds: two [[run]]s may share a name (one figure series) with their own seeds; `from`
// finds the source among all of them; identical keys are refused; -smoke runs a collapsed duplicate once.
func TestSharedNameAndRunSeeds(t *testing.T) {
	dir := t.TempDir()
	src := `schema = 1
name = "x"
kind = "lm"
seeds = [0]
[smoke]
seeds = [0]
"method.lambda" = [1.0, 2.0]
[[run]]
name = "a"
grid = { "method.lambda" = [1.0, 2.0, 3.0] }
[[run]]
name = "a"
seeds = [1, 2]
grid = { "method.lambda" = [2.0] }
[[run]]
name = "b"
from = "a,method.lambda=2"
seeds = [0, 2]
`
	path := filepath.Join(dir, "x.toml")
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	runs, err := s.Expand(false)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, r := range runs {
		keys = append(keys, r.Key)
		if r.Name == "b" && r.FromKey != fmt.Sprintf("a,method.lambda=2,seed=%d", r.Seed) {
			t.Errorf("%s: from key %q", r.Key, r.FromKey)
		}
	}
	want := "a,method.lambda=1,seed=0 a,method.lambda=2,seed=0 a,method.lambda=3,seed=0 a,method.lambda=2,seed=1 a,method.lambda=2,seed=2 b,seed=0 b,seed=2"
	if got := strings.Join(keys, " "); got != want {
		t.Errorf("keys:\n got %s\nwant %s", got, want)
	}
	smoke, err := s.Expand(true)
	if err != nil {
		t.Fatal(err)
	}
	if len(smoke) != 3 { // a λ=1, a λ=2 (the second [[run]] collapses onto it), b
		t.Errorf("smoke: %d runs, want 3", len(smoke))
	}
	dup := strings.Replace(src, "seeds = [1, 2]", "seeds = [0, 2]", 1)
	if err := os.WriteFile(path, []byte(dup), 0o644); err != nil {
		t.Fatal(err)
	}
	if s, err = Load(path); err == nil {
		_, err = s.Expand(false)
	}
	if err == nil || !strings.Contains(err.Error(), "same configuration") {
		t.Errorf("duplicate key: err = %v", err)
	}
}
