package longbench

import (
	"archive/zip"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReadRealRows(t *testing.T) {
	q := readRealRow(t, "qasper")
	if q.Dataset != "qasper" || q.Language != "en" || q.Length != 1692 || q.AllClasses != nil ||
		q.ID != "f0f715a6867aa0e4b6ef1eab6827162fba00296faa55114e" ||
		len(q.Answers) != 2 || q.Answers[0] != "By conducting a survey among engineers" || q.Answers[1] != "Unanswerable" {
		t.Errorf("qasper row: %+v", q)
	}
	tr := readRealRow(t, "trec")
	if len(tr.AllClasses) != 50 || tr.AllClasses[0] != "Food" || tr.Length != 4685 || tr.Input != "Question: What is home equity ?\nType:" {
		t.Errorf("trec row: classes %d, length %d, input %q", len(tr.AllClasses), tr.Length, tr.Input)
	}
	l := readRealRow(t, "lcc")
	if l.Input != "" || l.Language != "java" || len(l.Answers) != 1 || l.Answers[0] != "\t\tif(beans == null)" {
		t.Errorf("lcc row: %+v", l.Answers)
	}
	ds, err := ReadDir("testdata")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"qasper", "trec", "lcc"} {
		if ds[name] == nil || len(ds[name].Samples) != 1 || ds[name].Task != name || ds[name].E {
			t.Errorf("ReadDir: %s = %+v", name, ds[name])
		}
	}
}

const goodLine = `{"input": "q", "context": "c", "answers": ["a"], "length": 5, "dataset": "qasper", "language": "en", "all_classes": null, "_id": "x"}`

func TestReadJSONLMalformed(t *testing.T) {
	in := strings.Join([]string{
		goodLine,
		`{"input": "q", "context": "c"`, // 2: truncated
		`{"input": "q", "context": "c", "answers": "a"}`,         // 3: answers not a list
		`{"input": 1, "context": "c", "answers": ["a"]}`,         // 4: input not a string
		`{"Input": "q", "context": "c", "answers": ["a"]}`,       // 5: wrong case
		`{"input": "q", "context": "c", "answers": ["a", null]}`, // 6: null answer
		`[1, 2]`, // 7: not an object
		``,       // 8: blank, skipped silently
		`{"input": "q", "context": "c", "answers": ["a"], "length": 1.5}`,                      // 9
		`{"input": "q", "context": "c", "answers": []} {}`,                                     // 10: extra data
		`{"input": "q2", "context": "c2", "answers": ["b"], "all_classes": ["x", "y"]}` + "\r", // 11: ok, CRLF
		"null", // 12
	}, "\n")
	samples, errs, err := ReadJSONL(strings.NewReader(in), "mem.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	if len(samples) != 2 || samples[1].Input != "q2" || len(samples[1].AllClasses) != 2 || samples[0].Length != 5 {
		t.Fatalf("samples %+v", samples)
	}
	var lines []int
	for _, e := range errs {
		var le *LineError
		if !errors.As(e, &le) || le.File != "mem.jsonl" || !strings.HasPrefix(e.Error(), "mem.jsonl:") {
			t.Errorf("error %v is not a LineError naming the file", e)
			continue
		}
		lines = append(lines, le.Line)
	}
	want := []int{2, 3, 4, 5, 6, 7, 9, 10, 12}
	if len(lines) != len(want) {
		t.Fatalf("error lines %v, want %v (%v)", lines, want, errs)
	}
	for i := range want {
		if lines[i] != want[i] {
			t.Errorf("error lines %v, want %v", lines, want)
			break
		}
	}
}

func TestReadJSONLLongLine(t *testing.T) {
	ctx := strings.Repeat("word ", 200000) // 1 MB, beyond bufio.Scanner's default
	line := `{"input": "q", "context": "` + ctx + `", "answers": ["a"]}`
	s, errs, err := ReadJSONL(strings.NewReader(line+"\n"+goodLine), "long.jsonl")
	if err != nil || len(errs) != 0 || len(s) != 2 || len(s[0].Context) != len(ctx) {
		t.Fatalf("long line: %d samples, %v, %v", len(s), errs, err)
	}
}

func TestReadZip(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "data.zip")
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	add := func(name, body string) {
		w, err := zw.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte(body))
	}
	add("data/", "")
	add("data/qasper.jsonl", goodLine+"\n"+goodLine+"\n")
	add("data/qasper_e.jsonl", goodLine+"\nbroken\n"+goodLine)
	add("data/README.md", "not data")
	add("__MACOSX/data/._qasper.jsonl", "junk")
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	ds, err := ReadZip(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 2 {
		t.Fatalf("datasets %v", ds)
	}
	if d := ds["qasper"]; d == nil || len(d.Samples) != 2 || d.E {
		t.Errorf("qasper: %+v", d)
	}
	d := ds["qasper_e"]
	if d == nil || !d.E || d.Task != "qasper" || len(d.Samples) != 2 || len(d.Errors) != 1 ||
		!strings.Contains(d.Errors[0].Error(), "data.zip:data/qasper_e.jsonl:2:") {
		t.Errorf("qasper_e: %+v", d)
	}
	if _, err := ReadZip(filepath.Join(dir, "missing.zip")); err == nil {
		t.Error("missing zip accepted")
	}
}

func FuzzReadJSONL(f *testing.F) {
	f.Add([]byte(goodLine))
	f.Add([]byte(goodLine + "\n{\n" + goodLine + "\r\n"))
	f.Add([]byte(`{"input": "q", "context": "c", "answers": ["a"], "length": 1e400}`))
	f.Add([]byte(`{"input": "\ud800", "context": "", "answers": [], "all_classes": [null]}`))
	f.Add([]byte("\n\n\x00\xff"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, errs, err := ReadJSONL(bytes.NewReader(data), "fuzz.jsonl")
		if err != nil {
			t.Fatal(err)
		}
		n := bytes.Count(data, []byte{'\n'}) + 1
		if len(s)+len(errs) > n {
			t.Fatalf("%d samples + %d errors from %d lines", len(s), len(errs), n)
		}
		for _, e := range errs {
			if !strings.HasPrefix(e.Error(), "fuzz.jsonl:") {
				t.Fatalf("error without file: %v", e)
			}
		}
		for _, x := range s {
			if x.Answers == nil {
				t.Fatal("sample without answers")
			}
		}
	})
}
