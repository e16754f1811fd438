package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"natsbench/results"
	"natsbench/sweeps"
)

const testSweep = `schema = 1
name = "t"
kind = "lm"
seeds = [0, 1]
smoke = { "train.steps" = 2, seeds = [0] }

[[figure]]
id = "ppl_vs_kv"
x = "kv_fraction"
y = "ppl"
label = "method.lambda"
task = "pg19"

[[figure]]
id = "loss"
kind = "curve"
y = "loss"
task = "train"

[base]
method = { name = "full" }
train = { steps = 10 }

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
grid = { "method.budget" = [64] }
`

// fakeExec writes a few metric rows per run; it can fail, panic or "crash" (cancel the sweep mid-run after
// writing a checkpoint, as Ctrl-C or a killed process would leave it).
type fakeExec struct {
	mu       sync.Mutex
	invalid  string // name of runs Validate rejects
	fail     string // key glob of runs that return an error
	panicKey string
	crashKey string             // the run during which the sweep is cancelled
	cancel   context.CancelFunc // cancels the sweep
	ran      []string           // keys run, in order
	resumed  []string           // keys that found a checkpoint
}

func (f *fakeExec) Validate(r sweeps.Run) error {
	if r.Name == f.invalid {
		return fmt.Errorf("%s: run %s: method.name = %q: unknown method", r.SweepFile, r.Key, "nope")
	}
	return nil
}

func (f *fakeExec) Run(ctx context.Context, r sweeps.Run, dir, fromDir string) error {
	f.mu.Lock()
	f.ran = append(f.ran, r.Key)
	f.mu.Unlock()
	if fromDir != "" && !results.IsDone(fromDir) {
		return fmt.Errorf("source %s not done", fromDir)
	}
	ck := filepath.Join(dir, results.CkptDir)
	if _, err := os.Stat(filepath.Join(ck, "step")); err == nil {
		f.resumed = append(f.resumed, r.Key)
	}
	if err := os.MkdirAll(ck, 0o755); err != nil {
		return err
	}
	os.WriteFile(filepath.Join(ck, "step"), []byte("5"), 0o644)
	if ok, _ := filepath.Match(f.fail, r.Key); ok && f.fail != "" {
		return errors.New("out of memory (fake)")
	}
	if r.Key == f.panicKey {
		panic("index out of range (fake)")
	}
	if r.Key == f.crashKey {
		f.cancel()
		<-ctx.Done()
		return ctx.Err()
	}
	method, _ := r.Get("method.name")
	lambda, _ := r.Get("method.lambda")
	kv := 1.0
	if l, ok := lambda.(float64); ok {
		kv = 0.5 - l*1e5
	}
	mk := func(task, metric string, step int64, x, v float64) results.Row {
		return results.Row{RunID: r.ID, Sweep: r.Sweep, Key: r.Key, Name: r.Name, Method: fmt.Sprint(method), Seed: int32(r.Seed),
			Task: task, Split: "test", Metric: metric, Step: step, X: x, Value: v, N: 100, Time: time.Unix(0, 0)}
	}
	rows := []results.Row{mk("pg19", "ppl", -1, 64, 30+float64(r.Seed)+kv), mk("pg19", "kv_fraction", -1, 64, kv)}
	if fromDir == "" {
		for s := int64(1); s <= 3; s++ {
			rows = append(rows, mk("train", "loss", s, math.NaN(), 10/float64(s)))
		}
	}
	return results.WriteRows(filepath.Join(dir, results.MetricsFile), rows)
}

func setup(t *testing.T) (sweepPath, out string) {
	t.Helper()
	dir := t.TempDir()
	sweepPath = filepath.Join(dir, "t.toml")
	if err := os.WriteFile(sweepPath, []byte(testSweep), 0o644); err != nil {
		t.Fatal(err)
	}
	return sweepPath, filepath.Join(dir, "out")
}

func launch(t *testing.T, ctx context.Context, exec Executor, args ...string) (int, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(ctx, args, &stdout, &stderr, exec)
	return code, stdout.String() + stderr.String()
}

func TestSweepResumeAfterCrash(t *testing.T) {
	sweep, out := setup(t)
	ctx, cancel := context.WithCancel(context.Background())
	f := &fakeExec{crashKey: "nats,method.lambda=5e-07,seed=0", cancel: cancel}
	code, log := launch(t, ctx, f, "-sweep", sweep, "-out", out)
	if code != exitFailed || !strings.Contains(log, "interrupted") {
		t.Fatalf("crash launch: code %d\n%s", code, log)
	}
	if !strings.Contains(log, "[1/8] full,seed=0 (id ") || !strings.Contains(log, "todo→running") {
		t.Errorf("no run header in:\n%s", log)
	}
	// The interrupted run is partial with status interrupted; the ones before it are done.
	runs := expand(t, sweep, false)
	st := statuses(out, runs)
	want := "done done done done partial todo todo todo"
	if st != want {
		t.Fatalf("after crash: %s, want %s", st, want)
	}
	m, err := results.ReadManifest(filepath.Join(out, "t", runs[4].ID))
	if err != nil || m.Status != results.StatusInterrupted || m.Attempts != 1 {
		t.Fatalf("manifest of the interrupted run: %v %+v", err, m)
	}

	// Dry run shows the statuses.
	code, log = launch(t, context.Background(), f, "-sweep", sweep, "-out", out, "-dry-run")
	if code != exitOK || !strings.Contains(log, runs[4].ID+"  partial") || !strings.Contains(log, "8 runs: 4 done, 1 partial, 3 todo") {
		t.Fatalf("dry run: %d\n%s", code, log)
	}

	// Relaunch: done runs are skipped, the partial one resumes from its checkpoint, the rest run.
	f2 := &fakeExec{}
	code, log = launch(t, context.Background(), f2, "-sweep", sweep, "-out", out)
	if code != exitOK {
		t.Fatalf("relaunch: code %d\n%s", code, log)
	}
	if got := strings.Join(f2.ran, " "); got != "nats,method.lambda=5e-07,seed=0 nats,method.lambda=5e-07,seed=1 h2o,method.budget=64,seed=0 h2o,method.budget=64,seed=1" {
		t.Errorf("relaunch ran %s", got)
	}
	if len(f2.resumed) != 1 || f2.resumed[0] != runs[4].Key {
		t.Errorf("resumed %v", f2.resumed)
	}
	if !strings.Contains(log, "4 done now, 4 skipped (done before), 0 failed") {
		t.Errorf("summary:\n%s", log)
	}
	if st := statuses(out, runs); st != strings.Repeat("done ", 7)+"done" {
		t.Errorf("after relaunch: %s", st)
	}
	m, _ = results.ReadManifest(filepath.Join(out, "t", runs[4].ID))
	if m.Status != results.StatusDone || m.Attempts != 2 || m.Key != runs[4].Key || m.Config == nil {
		t.Errorf("manifest after resume: %+v", m)
	}
	if b, err := os.ReadFile(filepath.Join(out, "t", runs[4].ID, results.ConfigFile)); err != nil || !strings.Contains(string(b), "lambda = 5e-07") {
		t.Errorf("config.toml: %v\n%s", err, b)
	}
	// The end-of-sweep report exists.
	for _, p := range []string{"summary.md", "runs.parquet", "figures/ppl_vs_kv.png", "figures/ppl_vs_kv.svg", "figures/loss.csv"} {
		if _, err := os.Stat(filepath.Join(out, "t", p)); err != nil {
			t.Errorf("report: %v", err)
		}
	}

	// A third launch does nothing; -force reruns the selected runs.
	f3 := &fakeExec{}
	if code, _ = launch(t, context.Background(), f3, "-sweep", sweep, "-out", out); code != exitOK || len(f3.ran) != 0 {
		t.Errorf("third launch ran %v", f3.ran)
	}
	if code, _ = launch(t, context.Background(), f3, "-sweep", sweep, "-out", out, "-force", "-only", "h2o*"); code != exitOK || len(f3.ran) != 2 || len(f3.resumed) != 0 {
		t.Errorf("-force -only ran %v (resumed %v)", f3.ran, f3.resumed)
	}
}

func TestFailedRunRecordedSweepGoesOn(t *testing.T) {
	sweep, out := setup(t)
	f := &fakeExec{fail: "full,seed=1", panicKey: "nats,method.lambda=1e-07,seed=0"}
	code, log := launch(t, context.Background(), f, "-sweep", sweep, "-out", out)
	if code != exitFailed {
		t.Fatalf("code %d\n%s", code, log)
	}
	runs := expand(t, sweep, false)
	// full,seed=1 failed; nats λ=1e-7 seed 0 panicked; h2o seed 1 depends on the failed full,seed=1.
	if st := statuses(out, runs); st != "done partial partial done done done done partial" {
		t.Errorf("statuses %s", st)
	}
	for i, want := range map[int]string{1: "out of memory (fake)", 2: "panicked: index out of range (fake)", 7: "from: source run t:full,seed=1"} {
		m, err := results.ReadManifest(filepath.Join(out, "t", runs[i].ID))
		if err != nil || m.Status != results.StatusFailed || !strings.Contains(m.Error, want) {
			t.Errorf("manifest of %s: %v status %q error %q, want %q", runs[i].Key, err, m.Status, m.Error, want)
		}
	}
	if !strings.Contains(log, "5 done now, 0 skipped (done before), 3 failed") || !strings.Contains(log, "failed: full,seed=1: out of memory (fake)") {
		t.Errorf("summary:\n%s", log)
	}
}

func TestBadInputBeforeTraining(t *testing.T) {
	sweep, out := setup(t)
	f := &fakeExec{invalid: "nats"}
	code, log := launch(t, context.Background(), f, "-sweep", sweep, "-out", out)
	if code != exitUsage || len(f.ran) != 0 || !strings.Contains(log, "invalid runs, nothing was run") || !strings.Contains(log, "unknown method") {
		t.Fatalf("invalid run: code %d ran %v\n%s", code, f.ran, log)
	}
	for _, tc := range []struct {
		name string
		args []string
		src  string
		want string
	}{
		{"missing sweep", []string{"-sweep", filepath.Join(t.TempDir(), "none.toml")}, "", "none.toml: no such file"},
		{"unknown key", nil, "schema = 1\nname = \"t\"\nkind = \"lm\"\nsweeps = [0]\n", `t.toml:4: unknown top-level key "sweeps"`},
		{"from nowhere", nil, "schema = 1\nname = \"t\"\nkind = \"lm\"\n[[run]]\nname = \"a\"\nfrom = \"b\"\n", `t.toml:6: run "a": from = "b"`},
		{"only", []string{"-only", "zzz*"}, testSweep, `-only "zzz*" matches no run`},
		{"no sweep", []string{"-out", out}, "", "-sweep is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := tc.args
			if tc.src != "" {
				os.WriteFile(sweep, []byte(tc.src), 0o644)
				args = append([]string{"-sweep", sweep, "-out", out}, args...)
			}
			f := &fakeExec{}
			code, log := launch(t, context.Background(), f, args...)
			if code != exitUsage || len(f.ran) != 0 || !strings.Contains(log, tc.want) {
				t.Fatalf("code %d ran %v\n%s\nwant %q", code, f.ran, log, tc.want)
			}
		})
	}
}

func TestReportAndCompare(t *testing.T) {
	sweep, out := setup(t)
	if code, log := launch(t, context.Background(), &fakeExec{}, "-sweep", sweep, "-out", out, "-smoke", "-no-report"); code != exitOK {
		t.Fatalf("smoke: %s", log)
	}
	// Report of the (absent) non-smoke runs is empty; of the smoke runs it has the table and figures.
	code, log := launch(t, context.Background(), nil, "report", "-sweep", sweep, "-out", out, "-smoke")
	if code != exitOK || !strings.Contains(log, "| t | nats,method.lambda=5e-07 | 1 |") || !strings.Contains(log, "ppl_vs_kv: figures/ppl_vs_kv.csv") {
		t.Fatalf("report: %d\n%s", code, log)
	}
	recs, err := results.ReadRuns(filepath.Join(out, "t", results.RunsFile))
	if err != nil || len(recs) != 4 {
		t.Fatalf("runs.parquet: %v %d", err, len(recs))
	}
	code, log = launch(t, context.Background(), nil, "compare", "-out", out, "-smoke", sweep+":nats*", sweep+":full")
	if code != exitOK || !strings.Contains(log, "compare.png") || !strings.Contains(log, "nats,method.lambda=1e-07") {
		t.Fatalf("compare: %d\n%s", code, log)
	}
	code, log = launch(t, context.Background(), nil, "compare", "-out", out, sweep)
	if code != exitUsage || !strings.Contains(log, "at least two") {
		t.Fatalf("compare with one selection: %d\n%s", code, log)
	}
	// A corrupt metrics file is an error naming it.
	runs := expand(t, sweep, true)
	bad := filepath.Join(out, "t", runs[0].ID, results.MetricsFile)
	os.WriteFile(bad, []byte("not parquet"), 0o644)
	code, log = launch(t, context.Background(), nil, "report", "-sweep", sweep, "-out", out, "-smoke")
	if code != exitUsage || !strings.Contains(log, bad) {
		t.Fatalf("corrupt: %d\n%s", code, log)
	}
}

func expand(t *testing.T, path string, smoke bool) []sweeps.Run {
	t.Helper()
	s, err := sweeps.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	runs, err := s.Expand(smoke)
	if err != nil {
		t.Fatal(err)
	}
	return runs
}

func statuses(out string, runs []sweeps.Run) string {
	var st []string
	for _, r := range runs {
		st = append(st, results.FolderStatus(runDir(out, r)))
	}
	return strings.Join(st, " ")
}

func TestResolveSweep(t *testing.T) {
	for _, n := range []string{"pg19", "pg19.toml"} {
		if got := resolveSweep(n); got != filepath.Join("sweeps", "pg19.toml") {
			// The test runs in runner/, where sweeps/ does not exist: the bare name still maps under sweeps/.
			t.Errorf("resolveSweep(%q) = %q", n, got)
		}
	}
}

// TestResumeAfterKill: a process killed mid-run leaves a manifest saying "running", a checkpoint and no
// DONE; the next launch reports it partial and hands it to the executor, which resumes.
func TestResumeAfterKill(t *testing.T) {
	sweep, out := setup(t)
	runs := expand(t, sweep, false)
	dir := runDir(out, runs[0])
	os.MkdirAll(filepath.Join(dir, results.CkptDir), 0o755)
	os.WriteFile(filepath.Join(dir, results.CkptDir, "step"), []byte("5"), 0o644)
	results.WriteManifest(dir, results.Manifest{RunID: runs[0].ID, Key: runs[0].Key, Status: results.StatusRunning, Attempts: 1})
	_, log := launch(t, context.Background(), &fakeExec{}, "-sweep", sweep, "-out", out, "-dry-run", "-only", "full,seed=0")
	if !strings.Contains(log, runs[0].ID+"  partial") {
		t.Fatalf("dry run:\n%s", log)
	}
	f := &fakeExec{}
	code, log := launch(t, context.Background(), f, "-sweep", sweep, "-out", out, "-only", "full*")
	if code != exitOK || len(f.resumed) != 1 || f.resumed[0] != runs[0].Key || !strings.Contains(log, "partial→running") {
		t.Fatalf("code %d resumed %v\n%s", code, f.resumed, log)
	}
	if m, _ := results.ReadManifest(dir); m.Attempts != 2 || m.Status != results.StatusDone || !results.IsDone(dir) {
		t.Errorf("manifest %+v", m)
	}
}
