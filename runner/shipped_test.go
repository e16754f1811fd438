package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"natsbench/experiments"
	"natsbench/results"
)

// TestShippedSweepsDecode: every run of every shipped sweep decodes strictly into experiments' typed
// configuration, and the smoke runs of kinds this build runs pass experiments.Validate (data folders
// included), so `runner -sweep X -smoke` does not stop at validation.
func TestShippedSweepsDecode(t *testing.T) {
	t.Chdir("..") // sweeps name data folders relative to the repository root
	files, err := filepath.Glob("sweeps/*.toml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no shipped sweeps: %v", err)
	}
	for _, f := range files {
		for _, smoke := range []bool{false, true} {
			for _, r := range expand(t, f, smoke) {
				if _, err := experiments.Decode(r); err != nil {
					t.Errorf("%s (smoke=%v): %v", f, smoke, err)
				}
				if smoke && slices.Contains(experiments.Kinds, r.Kind) {
					if err := experiments.Validate(r); err != nil {
						t.Errorf("%s (smoke): %v", f, err)
					}
				}
			}
		}
	}
}

// TestCommittedResultsRegenerate: the committed H200 results of shipped sweeps (results/<sweep>/) are complete for
// the committed sweep file (every run done, as `-dry-run` reports) and their figure data regenerate from the
// committed Parquet alone, equal to the committed CSV.
func TestCommittedResultsRegenerate(t *testing.T) {
	t.Chdir("..")
	for _, name := range []string{"pg19"} {
		committed := filepath.Join("results", name)
		if _, err := os.Stat(filepath.Join(committed, results.RunsFile)); err != nil {
			t.Fatalf("%s: no committed results: %v", name, err)
		}
		out := t.TempDir()
		if err := os.CopyFS(filepath.Join(out, name), os.DirFS(committed)); err != nil {
			t.Fatal(err)
		}
		os.RemoveAll(filepath.Join(out, name, "figures"))
		code, log := launch(t, context.Background(), nil, "-sweep", name+".toml", "-out", out, "-dry-run")
		if code != exitOK || !strings.Contains(log, " done, 0 partial, 0 todo") {
			t.Fatalf("%s -dry-run: %d\n%s", name, code, log)
		}
		if code, log = launch(t, context.Background(), nil, "report", "-sweep", name+".toml", "-out", out); code != exitOK {
			t.Fatalf("%s report: %d\n%s", name, code, log)
		}
		csvs, _ := filepath.Glob(filepath.Join(committed, "figures", "*.csv"))
		if len(csvs) == 0 {
			t.Fatalf("%s: no committed figure data", name)
		}
		for _, c := range csvs {
			want, _ := os.ReadFile(c)
			got, err := os.ReadFile(filepath.Join(out, name, "figures", filepath.Base(c)))
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("%s: regenerated figure data differs from the committed file (err %v)", c, err)
			}
		}
	}
}
