package main

import (
	"path/filepath"
	"slices"
	"testing"

	"natsbench/experiments"
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
