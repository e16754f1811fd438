package longbench

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// PredLine is one well-formed line of a prediction file.
type PredLine struct {
	Prediction
	// Line is the 1-based line number in the file.
	Line int
	// HasLength tells whether the line had a "length" field.
	HasLength bool
}

// ReadPredictions reads a pred.py output file ({"pred", "answers",
// "all_classes", "length"} per line); file names the source in errors.
// "pred" and "answers" are required, "all_classes" may be null or absent,
// "length" must be an integer when present. Malformed lines are returned as
// *LineError in lineErrs and the rest is still read; err is an I/O error.
func ReadPredictions(r io.Reader, file string) (preds []PredLine, lineErrs []error, err error) {
	err = jsonlLines(r, func(line []byte, n int) {
		p, perr := parsePrediction(line)
		if perr != nil {
			lineErrs = append(lineErrs, &LineError{File: file, Line: n, Err: perr})
			return
		}
		p.Line = n
		preds = append(preds, p)
	})
	if err != nil {
		err = fmt.Errorf("longbench: reading %s: %w", file, err)
	}
	return preds, lineErrs, err
}

func parsePrediction(line []byte) (PredLine, error) {
	obj, err := decodeObject(line)
	if err != nil {
		return PredLine{}, err
	}
	var p PredLine
	if p.Pred, err = getString(obj, "pred", true); err != nil {
		return PredLine{}, err
	}
	if p.Answers, err = getStringList(obj, "answers", true, false); err != nil {
		return PredLine{}, err
	}
	if p.AllClasses, err = getStringList(obj, "all_classes", false, true); err != nil {
		return PredLine{}, err
	}
	l, has, err := getNumber(obj, "length", false)
	if err != nil {
		return PredLine{}, err
	}
	if l != math.Trunc(l) || math.Abs(l) > 1<<53 {
		return PredLine{}, fmt.Errorf("field \"length\": want an integer, got %v", l)
	}
	p.Length, p.HasLength = int(l), has
	return p, nil
}

// SampleScore is the score of one prediction line, for storing per-sample
// rows.
type SampleScore struct {
	// Line is the 1-based line number in the prediction file.
	Line int
	// Score is the sample score in [0, 1].
	Score float64
	// Length is the line's "length" (0 when absent).
	Length int
	// Bucket is the LongBench-E bucket of Length.
	Bucket string
}

// TaskResult is the evaluation of one prediction file.
type TaskResult struct {
	// Task is the official task name, the key in result.json.
	Task string
	// File is the prediction file.
	File string
	// Count is the number of scored (well-formed) lines.
	Count int
	// Score is 100 × mean sample score, unrounded (NaN in E mode).
	Score float64
	// Rounded is round(Score, 2) as written to result.json (NaN in E mode).
	Rounded float64
	// Buckets holds, in E mode, 100 × np.mean per length bucket, unrounded
	// (NaN for an empty bucket).
	Buckets map[string]float64
	// BucketsRounded holds the E-mode values of result.json
	// (round(np.float64, 2), i.e. NumpyRound2).
	BucketsRounded map[string]float64
	// BucketCounts holds the number of samples per bucket in E mode.
	BucketCounts map[string]int
	// Samples holds the per-line scores in file order.
	Samples []SampleScore
	// Errors holds the malformed lines (*LineError) of this file.
	Errors []error
}

// Result is the outcome of EvalDir.
type Result struct {
	// Dir is the evaluated folder.
	Dir string
	// E is true for LongBench-E evaluation.
	E bool
	// Tasks holds one entry per scored file, in the order of result.json
	// (sorted by task name).
	Tasks []TaskResult
	// Errors holds every problem that did not stop the evaluation:
	// malformed lines (*LineError, also in the task's Errors), files that
	// name no known task, duplicate files and files with no scorable line.
	Errors []error
	// ResultPath is the written result.json.
	ResultPath string
}

// Scores returns the result.json numbers of a non-E evaluation as a map
// (task → round(100·mean, 2)), e.g. for Summarize.
func (r Result) Scores() map[string]float64 {
	m := make(map[string]float64, len(r.Tasks))
	for _, t := range r.Tasks {
		m[t.Task] = t.Rounded
	}
	return m
}

// EvalDir is LongBench's eval.py for one model folder (pred/<model>/ or,
// with e, pred_e/<model>/). It scores every DIR/<task>.jsonl (with e, also
// <task>_e.jsonl; the result key is the task name either way), and writes
// DIR/result.json atomically in the official format: json.dump(indent=4,
// ensure_ascii=False) of task → round(100·mean, 2), or with e task →
// {"0-4k", "4-8k", "8k+"} rounded the NumPy way (an empty bucket is NaN,
// written as NaN as Python does). Tasks are written in sorted order
// (eval.py uses os.listdir order).
//
// Deviations from eval.py, which would crash instead: malformed lines are
// reported (file and line) and skipped; files naming no known task and
// duplicate files are reported and skipped; a non-E file with no scorable
// line is reported and left out. Kept quirk: like eval.py, every sample of
// a file is scored with the all_classes of the file's last (well-formed)
// line. In E mode every line needs a "length" (eval.py would misalign
// lengths otherwise); a line without one is reported and skipped.
//
// The error result is for failures to list the folder, read a file or write
// result.json.
func EvalDir(dir string, e bool) (Result, error) {
	res := Result{Dir: dir, E: e}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return res, fmt.Errorf("longbench: %w", err)
	}
	type job struct{ task, file string }
	var jobs []job
	seen := map[string]string{}
	for _, ent := range ents {
		name := ent.Name()
		if ent.IsDir() || !strings.HasSuffix(name, ".jsonl") {
			continue
		}
		file := filepath.Join(dir, name)
		stem := strings.TrimSuffix(name, ".jsonl")
		task := stem
		if e {
			task, _ = SplitE(stem)
		}
		if _, err := Task(task); err != nil {
			res.Errors = append(res.Errors, fmt.Errorf("%s: skipped: %w", file, err))
			continue
		}
		if prev, dup := seen[task]; dup {
			res.Errors = append(res.Errors, fmt.Errorf("%s: skipped: task %q already read from %s", file, task, prev))
			continue
		}
		seen[task] = file
		jobs = append(jobs, job{task, file})
	}
	sort.Slice(jobs, func(i, j int) bool { return jobs[i].task < jobs[j].task })

	for _, jb := range jobs {
		tr, err := evalFile(jb.task, jb.file, e)
		if err != nil {
			return res, err
		}
		res.Errors = append(res.Errors, tr.Errors...)
		if !e && tr.Count == 0 {
			res.Errors = append(res.Errors, fmt.Errorf("%s: no scorable line; task %q left out of result.json", jb.file, jb.task))
			continue
		}
		res.Tasks = append(res.Tasks, tr)
	}
	res.ResultPath = filepath.Join(dir, "result.json")
	if err := writeFileAtomic(res.ResultPath, resultJSON(res)); err != nil {
		return res, err
	}
	return res, nil
}

func evalFile(task, file string, e bool) (TaskResult, error) {
	tr := TaskResult{Task: task, File: file, Score: math.NaN(), Rounded: math.NaN()}
	f, err := os.Open(file)
	if err != nil {
		return tr, fmt.Errorf("longbench: %w", err)
	}
	lines, lineErrs, err := ReadPredictions(f, file)
	f.Close()
	if err != nil {
		return tr, err
	}
	tr.Errors = lineErrs
	if e {
		kept := lines[:0]
		for _, l := range lines {
			if !l.HasLength {
				tr.Errors = append(tr.Errors, &LineError{File: file, Line: l.Line, Err: fmt.Errorf("missing field \"length\" (needed for LongBench-E)")})
				continue
			}
			kept = append(kept, l)
		}
		lines = kept
	}
	preds := make([]Prediction, len(lines))
	for i, l := range lines {
		preds[i] = l.Prediction
	}
	// eval.py keeps only the last line's all_classes and scores every
	// sample of the file with it.
	if n := len(preds); n > 0 {
		last := preds[n-1].AllClasses
		for i := range preds {
			preds[i].AllClasses = last
		}
	}
	tr.Count = len(preds)
	var per []float64
	if e {
		tr.Buckets, tr.BucketCounts, per = ScoreTaskE(task, preds)
		tr.BucketsRounded = make(map[string]float64, len(tr.Buckets))
		for k, v := range tr.Buckets {
			tr.BucketsRounded[k] = NumpyRound2(v)
		}
	} else {
		tr.Score, per = ScoreTask(task, preds)
		tr.Rounded = Round2(tr.Score)
	}
	tr.Samples = make([]SampleScore, len(lines))
	for i, l := range lines {
		tr.Samples[i] = SampleScore{Line: l.Line, Score: per[i], Length: l.Length, Bucket: BucketOf(l.Length)}
	}
	return tr, nil
}

// resultJSON renders the result like json.dump(scores, f,
// ensure_ascii=False, indent=4): no trailing newline, floats as Python's
// repr.
func resultJSON(r Result) []byte {
	var b bytes.Buffer
	if len(r.Tasks) == 0 {
		return []byte("{}")
	}
	b.WriteString("{\n")
	for i, t := range r.Tasks {
		b.WriteString("    ")
		b.WriteString(PyJSONString(t.Task))
		b.WriteString(": ")
		if r.E {
			b.WriteString("{\n")
			for k, name := range Buckets {
				b.WriteString("        ")
				b.WriteString(PyJSONString(name))
				b.WriteString(": ")
				b.WriteString(pyFloatRepr(t.BucketsRounded[name]))
				if k < len(Buckets)-1 {
					b.WriteByte(',')
				}
				b.WriteByte('\n')
			}
			b.WriteString("    }")
		} else {
			b.WriteString(pyFloatRepr(t.Rounded))
		}
		if i < len(r.Tasks)-1 {
			b.WriteByte(',')
		}
		b.WriteByte('\n')
	}
	b.WriteString("}")
	return b.Bytes()
}

// PyJSONString renders s as Python's json.dumps(s, ensure_ascii=False) does: only '"', '\\' and control
// characters are escaped (\n, \r, \t, \b, \f by name, the rest as \u00XX); invalid UTF-8 becomes U+FFFD. The
// official scripts write their prediction and result files this way.
func PyJSONString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		case '\b':
			b.WriteString(`\b`)
		case '\f':
			b.WriteString(`\f`)
		default:
			if r < 0x20 {
				fmt.Fprintf(&b, `\u%04x`, r)
			} else {
				b.WriteRune(r)
			}
		}
	}
	b.WriteByte('"')
	return b.String()
}

// writeFileAtomic writes data to a temporary file in the same folder and
// renames it over p.
func writeFileAtomic(p string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(p), ".result.json.tmp-*")
	if err != nil {
		return fmt.Errorf("longbench: writing %s: %w", p, err)
	}
	name := tmp.Name()
	_, werr := tmp.Write(data)
	if werr == nil {
		werr = tmp.Sync()
	}
	cerr := tmp.Close()
	if werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Chmod(name, 0o644)
	}
	if werr == nil {
		werr = os.Rename(name, p)
	}
	if werr != nil {
		os.Remove(name)
		return fmt.Errorf("longbench: writing %s: %w", p, werr)
	}
	return nil
}
