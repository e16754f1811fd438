package longbench

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func predLine(t *testing.T, pred string, answers, classes []string, length int) string {
	t.Helper()
	m := map[string]any{"pred": pred, "answers": answers, "all_classes": classes, "length": length}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func writeLines(t *testing.T, p string, lines ...string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestEvalDir(t *testing.T) {
	dir := t.TempDir()
	q := readRealRow(t, "qasper")
	tr := readRealRow(t, "trec")
	lc := readRealRow(t, "lcc")
	writeLines(t, filepath.Join(dir, "qasper.jsonl"),
		predLine(t, "By conducting a survey among engineers", q.Answers, nil, q.Length),
		`{"pred": 1, "answers": ["x"]}`,
		predLine(t, "a survey of engineers", q.Answers, nil, q.Length),
		`not json`,
	)
	// eval.py scores every line with the last line's all_classes: line 1
	// has null classes but still scores 1.
	writeLines(t, filepath.Join(dir, "trec.jsonl"),
		predLine(t, "Definition of something", tr.Answers, nil, tr.Length),
		predLine(t, "\nDescription of something or Definition of something\nmore", tr.Answers, tr.AllClasses, tr.Length),
	)
	writeLines(t, filepath.Join(dir, "lcc.jsonl"),
		predLine(t, "if (beans == null)", lc.Answers, nil, lc.Length),
		predLine(t, "\t\tif(beans == null)", lc.Answers, nil, lc.Length),
	)
	writeLines(t, filepath.Join(dir, "hotpotqa.jsonl"), `{"broken"`)
	writeLines(t, filepath.Join(dir, "foo.jsonl"), predLine(t, "x", []string{"x"}, nil, 1))
	writeLines(t, filepath.Join(dir, "qasper_e.jsonl"), predLine(t, "x", []string{"x"}, nil, 1))
	writeLines(t, filepath.Join(dir, "result.json"), "stale")
	writeLines(t, filepath.Join(dir, "notes.txt"), "ignored")

	res, err := EvalDir(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "result.json"))
	if err != nil {
		t.Fatal(err)
	}
	want := "{\n    \"lcc\": 96.0,\n    \"qasper\": 75.0,\n    \"trec\": 75.0\n}"
	if string(b) != want {
		t.Errorf("result.json =\n%s\nwant\n%s", b, want)
	}
	if res.ResultPath != filepath.Join(dir, "result.json") || len(res.Tasks) != 3 {
		t.Fatalf("result %+v", res)
	}
	got := res.Scores()
	if got["qasper"] != 75 || got["trec"] != 75 || got["lcc"] != 96 {
		t.Errorf("scores %v", got)
	}
	for _, tk := range res.Tasks {
		if tk.Task == "qasper" {
			if tk.Count != 2 || len(tk.Errors) != 2 || len(tk.Samples) != 2 ||
				tk.Samples[0].Line != 1 || tk.Samples[0].Score != 1 || tk.Samples[1].Line != 3 || tk.Samples[1].Score != 0.5 ||
				tk.Samples[1].Length != 1692 || tk.Samples[1].Bucket != "0-4k" {
				t.Errorf("qasper task result %+v", tk)
			}
			var le *LineError
			if !errors.As(tk.Errors[0], &le) || le.Line != 2 || !strings.Contains(tk.Errors[1].Error(), "qasper.jsonl:4:") {
				t.Errorf("qasper errors %v", tk.Errors)
			}
		}
		if tk.Task == "lcc" && (tk.Samples[0].Score != 0.92 || tk.Samples[1].Score != 1) {
			t.Errorf("lcc samples %+v", tk.Samples)
		}
	}
	// Errors: 2 qasper lines, hotpotqa line + empty task, foo, qasper_e.
	msgs := ""
	for _, e := range res.Errors {
		msgs += e.Error() + "\n"
	}
	for _, frag := range []string{"qasper.jsonl:2:", "qasper.jsonl:4:", "hotpotqa.jsonl:1:", "hotpotqa.jsonl: no scorable line",
		"foo.jsonl: skipped", "qasper_e.jsonl: skipped"} {
		if !strings.Contains(msgs, frag) {
			t.Errorf("errors lack %q:\n%s", frag, msgs)
		}
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.Contains(e.Name(), ".tmp") {
			t.Errorf("temporary file left: %s", e.Name())
		}
	}
}

func TestEvalDirE(t *testing.T) {
	dir := t.TempDir()
	ans := []string{"cat"}
	writeLines(t, filepath.Join(dir, "qasper_e.jsonl"),
		predLine(t, "cat", ans, nil, 100),
		predLine(t, "cat dog dog", ans, nil, 5000),
		predLine(t, "dog", ans, nil, 3999),
		`{"pred": "cat", "answers": ["cat"], "all_classes": null}`,
	)
	writeLines(t, filepath.Join(dir, "qasper.jsonl"), predLine(t, "cat", ans, nil, 1))
	writeLines(t, filepath.Join(dir, "lcc.jsonl"), predLine(t, "x", []string{"x"}, nil, 9000))
	res, err := EvalDir(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "result.json"))
	want := "{\n" +
		"    \"lcc\": {\n        \"0-4k\": NaN,\n        \"4-8k\": NaN,\n        \"8k+\": 100.0\n    },\n" +
		"    \"qasper\": {\n        \"0-4k\": 100.0,\n        \"4-8k\": NaN,\n        \"8k+\": NaN\n    }\n}"
	if string(b) != want {
		t.Errorf("result.json =\n%s\nwant\n%s", b, want)
	}
	// qasper.jsonl sorts before qasper_e.jsonl, so it is the one scored.
	msgs := ""
	for _, e := range res.Errors {
		msgs += e.Error() + "\n"
	}
	if !strings.Contains(msgs, "qasper_e.jsonl: skipped") {
		t.Errorf("duplicate not reported:\n%s", msgs)
	}
	// Without the duplicate, qasper_e.jsonl is scored and its length-less
	// line reported.
	os.Remove(filepath.Join(dir, "qasper.jsonl"))
	res, err = EvalDir(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile(filepath.Join(dir, "result.json"))
	if !strings.Contains(string(b), "\"qasper\": {\n        \"0-4k\": 50.0,\n        \"4-8k\": 50.0,\n        \"8k+\": NaN\n    }") {
		t.Errorf("result.json =\n%s", b)
	}
	if len(res.Errors) != 1 || !strings.Contains(res.Errors[0].Error(), "qasper_e.jsonl:4:") {
		t.Errorf("errors %v", res.Errors)
	}
}

func TestEvalDirEmptyAndMissing(t *testing.T) {
	dir := t.TempDir()
	if _, err := EvalDir(dir, false); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "result.json")); string(b) != "{}" {
		t.Errorf("empty result.json = %q", b)
	}
	if _, err := EvalDir(filepath.Join(dir, "missing"), false); err == nil {
		t.Error("missing folder accepted")
	}
}

func TestPyFormatting(t *testing.T) {
	for x, want := range map[float64]string{25: "25.0", 0: "0.0", 33.33: "33.33", 100: "100.0", 1e-5: "1e-05",
		1e16: "1e+16", 0.0001: "0.0001", 1.5e300: "1.5e+300", 12.5: "12.5"} {
		if got := pyFloatRepr(x); got != want {
			t.Errorf("pyFloatRepr(%v) = %q, want %q", x, got, want)
		}
	}
	if got := PyJSONString("a\"b\\c\n\x01é"); got != `"a\"b\\c\n\u0001é"` {
		t.Errorf("PyJSONString = %s", got)
	}
}
