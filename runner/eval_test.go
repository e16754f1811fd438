package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"natsbench/results"
)

// TestEvalWritesOfficialResult scores a folder of predictions made by "another tool": result.json in the
// official format and Parquet rows.
func TestEvalWritesOfficialResult(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, lines ...string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("qasper.jsonl",
		`{"pred": "yes", "answers": ["yes"], "all_classes": null, "length": 3000}`,
		`{"pred": "the cat sat", "answers": ["a cat sat down"], "all_classes": null, "length": 5000}`,
		`{not json`)
	write("trec.jsonl", `{"pred": "Location\nextra", "answers": ["Location"], "all_classes": ["Location", "Date"], "length": 100}`)
	var out, errb bytes.Buffer
	if code := run(t.Context(), []string{"eval", "-pred", dir}, &out, &errb, nil); code != exitOK {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if !strings.Contains(errb.String(), "qasper.jsonl:3") {
		t.Errorf("malformed line not reported with file and line: %q", errb.String())
	}
	var got map[string]float64
	b, err := os.ReadFile(filepath.Join(dir, "result.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	// qasper: (1 + F1("cat sat", "cat sat down") = 0.8) / 2 = 0.9 → 90.0; trec: first line "Location" → 100.
	if got["qasper"] != 90 || got["trec"] != 100 {
		t.Fatalf("result.json = %s", b)
	}
	rows, err := results.ReadRows(filepath.Join(dir, results.MetricsFile))
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) < 2 {
		t.Fatalf("rows: %v", rows)
	}
}
