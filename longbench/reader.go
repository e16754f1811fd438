package longbench

import (
	"archive/zip"
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// Sample is one LongBench data record (HF dataset THUDM/LongBench, split
// test, or a line of data.zip's data/<task>.jsonl).
type Sample struct {
	// Input is the question / query / instruction (may be empty).
	Input string `json:"input"`
	// Context is the long context.
	Context string `json:"context"`
	// Answers holds all gold answers.
	Answers []string `json:"answers"`
	// Length is the length of input+context+answers (words for EN and code,
	// characters for ZH), used for the LongBench-E buckets.
	Length int `json:"length"`
	// Dataset is the task name.
	Dataset string `json:"dataset"`
	// Language is the sample's language ("en", "zh", "python", "java", ...).
	Language string `json:"language"`
	// AllClasses holds the label set of the classification tasks (trec,
	// lsht); nil where the data has null.
	AllClasses []string `json:"all_classes"`
	// ID is the sample id (JSON field "_id").
	ID string `json:"_id"`
}

// LineError is a malformed line of a JSONL file.
type LineError struct {
	// File names the file (for a zip member: "archive.zip:member").
	File string
	// Line is the 1-based line number.
	Line int
	// Err is what is wrong with the line.
	Err error
}

// Error formats the error as "file:line: message".
func (e *LineError) Error() string {
	return fmt.Sprintf("%s:%d: %v", e.File, e.Line, e.Err)
}

// Unwrap returns the underlying error.
func (e *LineError) Unwrap() error { return e.Err }

// Dataset is the content of one <task>.jsonl file.
type Dataset struct {
	// Name is the file's base name without ".jsonl" ("qasper",
	// "qasper_e").
	Name string
	// Task is the official task name (Name without a LongBench-E "_e").
	Task string
	// E is true for a LongBench-E file ("<task>_e.jsonl").
	E bool
	// File is where the samples were read from.
	File string
	// Samples holds the well-formed lines in file order.
	Samples []Sample
	// Errors holds one *LineError per malformed line.
	Errors []error
}

// jsonlLines calls fn for every line of r (split on '\n', a trailing '\r'
// removed) with its 1-based number. Lines of only whitespace are skipped.
// Lines may be arbitrarily long.
func jsonlLines(r io.Reader, fn func(line []byte, n int)) error {
	br := bufio.NewReaderSize(r, 1<<16)
	n := 0
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 {
			n++
			line = bytes.TrimSuffix(bytes.TrimSuffix(line, []byte{'\n'}), []byte{'\r'})
			if len(bytes.TrimSpace(line)) > 0 {
				fn(line, n)
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// decodeObject decodes one JSON object into exact-case keys (encoding/json
// would match struct fields case-insensitively, Python does not).
func decodeObject(line []byte) (map[string]json.RawMessage, error) {
	var obj map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(line))
	if err := dec.Decode(&obj); err != nil {
		return nil, fmt.Errorf("invalid JSON: %w", err)
	}
	if obj == nil {
		return nil, errors.New("line is not a JSON object")
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("extra data after the JSON object")
	}
	return obj, nil
}

func getString(obj map[string]json.RawMessage, key string, required bool) (string, error) {
	raw, ok := obj[key]
	if !ok {
		if required {
			return "", fmt.Errorf("missing field %q", key)
		}
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", fmt.Errorf("field %q: want a string, got %s", key, abbrev(raw))
	}
	return s, nil
}

// getStringList decodes a list of strings; JSON null gives nil when
// nullable.
func getStringList(obj map[string]json.RawMessage, key string, required, nullable bool) ([]string, error) {
	raw, ok := obj[key]
	if !ok {
		if required {
			return nil, fmt.Errorf("missing field %q", key)
		}
		return nil, nil
	}
	if bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		if nullable {
			return nil, nil
		}
		return nil, fmt.Errorf("field %q: want a list of strings, got null", key)
	}
	var ptrs []*string
	if err := json.Unmarshal(raw, &ptrs); err != nil {
		return nil, fmt.Errorf("field %q: want a list of strings, got %s", key, abbrev(raw))
	}
	l := make([]string, len(ptrs))
	for i, p := range ptrs {
		if p == nil {
			return nil, fmt.Errorf("field %q: element %d is null, want a string", key, i)
		}
		l[i] = *p
	}
	return l, nil
}

// getNumber decodes an integral JSON number.
func getNumber(obj map[string]json.RawMessage, key string, required bool) (float64, bool, error) {
	raw, ok := obj[key]
	if !ok {
		if required {
			return 0, false, fmt.Errorf("missing field %q", key)
		}
		return 0, false, nil
	}
	var f float64
	if err := json.Unmarshal(raw, &f); err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, false, fmt.Errorf("field %q: want a number, got %s", key, abbrev(raw))
	}
	return f, true, nil
}

func abbrev(raw []byte) string {
	s := string(raw)
	if len(s) > 40 {
		s = s[:40] + "..."
	}
	return s
}

// parseSample decodes one data line. input, context and answers are
// required; the other fields default to their zero values; all_classes may
// be null.
func parseSample(line []byte) (Sample, error) {
	obj, err := decodeObject(line)
	if err != nil {
		return Sample{}, err
	}
	var s Sample
	if s.Input, err = getString(obj, "input", true); err != nil {
		return Sample{}, err
	}
	if s.Context, err = getString(obj, "context", true); err != nil {
		return Sample{}, err
	}
	if s.Answers, err = getStringList(obj, "answers", true, false); err != nil {
		return Sample{}, err
	}
	if s.AllClasses, err = getStringList(obj, "all_classes", false, true); err != nil {
		return Sample{}, err
	}
	if s.Dataset, err = getString(obj, "dataset", false); err != nil {
		return Sample{}, err
	}
	if s.Language, err = getString(obj, "language", false); err != nil {
		return Sample{}, err
	}
	if s.ID, err = getString(obj, "_id", false); err != nil {
		return Sample{}, err
	}
	l, _, err := getNumber(obj, "length", false)
	if err != nil {
		return Sample{}, err
	}
	if l != math.Trunc(l) || math.Abs(l) > 1<<53 {
		return Sample{}, fmt.Errorf("field \"length\": want an integer, got %v", l)
	}
	s.Length = int(l)
	return s, nil
}

// ReadJSONL reads LongBench samples from r; file names the source in
// errors. Every malformed line is reported as a *LineError in lineErrs and
// the remaining lines are still read; err is an I/O error.
func ReadJSONL(r io.Reader, file string) (samples []Sample, lineErrs []error, err error) {
	err = jsonlLines(r, func(line []byte, n int) {
		s, perr := parseSample(line)
		if perr != nil {
			lineErrs = append(lineErrs, &LineError{File: file, Line: n, Err: perr})
			return
		}
		samples = append(samples, s)
	})
	if err != nil {
		err = fmt.Errorf("longbench: reading %s: %w", file, err)
	}
	return samples, lineErrs, err
}

func newDataset(name, file string) *Dataset {
	task, e := SplitE(name)
	return &Dataset{Name: name, Task: task, E: e, File: file}
}

// ReadFile reads one <task>.jsonl or <task>_e.jsonl file. Malformed lines
// are collected in Dataset.Errors; the error result is for I/O failures.
func ReadFile(p string) (*Dataset, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("longbench: %w", err)
	}
	defer f.Close()
	d := newDataset(strings.TrimSuffix(filepath.Base(p), ".jsonl"), p)
	d.Samples, d.Errors, err = ReadJSONL(f, p)
	return d, err
}

// ReadDir reads every *.jsonl file of dir (not recursive), keyed by the file
// name without ".jsonl".
func ReadDir(dir string) (map[string]*Dataset, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("longbench: %w", err)
	}
	out := map[string]*Dataset{}
	for _, e := range ents {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".jsonl") {
			continue
		}
		d, err := ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		out[d.Name] = d
	}
	return out, nil
}

// ReadZip reads every *.jsonl member of the official data.zip (members may
// sit under data/ or any other folder), keyed by the member's base name
// without ".jsonl". Two members with the same base name are an error.
func ReadZip(p string) (map[string]*Dataset, error) {
	zr, err := zip.OpenReader(p)
	if err != nil {
		return nil, fmt.Errorf("longbench: %w", err)
	}
	defer zr.Close()
	files := append([]*zip.File(nil), zr.File...)
	sort.Slice(files, func(i, j int) bool { return files[i].Name < files[j].Name })
	out := map[string]*Dataset{}
	for _, zf := range files {
		if zf.FileInfo().IsDir() || !strings.HasSuffix(zf.Name, ".jsonl") {
			continue
		}
		base := path.Base(zf.Name)
		if strings.HasPrefix(base, "._") { // macOS resource forks
			continue
		}
		name := strings.TrimSuffix(base, ".jsonl")
		where := p + ":" + zf.Name
		if prev, dup := out[name]; dup {
			return nil, fmt.Errorf("longbench: %s: duplicate member for %q (also %s)", where, name, prev.File)
		}
		rc, err := zf.Open()
		if err != nil {
			return nil, fmt.Errorf("longbench: %s: %w", where, err)
		}
		d := newDataset(name, where)
		d.Samples, d.Errors, err = ReadJSONL(rc, where)
		rc.Close()
		if err != nil {
			return nil, err
		}
		out[name] = d
	}
	return out, nil
}
