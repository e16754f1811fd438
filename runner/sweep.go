package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"natsbench/results"
	"natsbench/sweeps"
)

// Executor runs single runs; the real one is experiments.Validate/Run, tests use fakes.
type Executor interface {
	// Validate checks a run's configuration before anything is trained.
	Validate(r sweeps.Run) error
	// Run executes one run in dir (which may hold a partial run to resume); fromDir is the folder of the
	// run's `from` source, or "". It writes dir/metrics.parquet.
	Run(ctx context.Context, r sweeps.Run, dir, fromDir string) error
}

// options are the runner's settings for one sweep.
type options struct {
	Out     string    // output root (out)
	Only    string    // glob over keys, keys without seed, names and IDs ("" = all)
	Force   bool      // rerun DONE runs from scratch
	DryRun  bool      // list runs and their status only
	Stale   bool      // dry run: only runs made at another commit
	Backend string    // recorded in manifests
	Device  int       // recorded in manifests (-1: not set)
	Log     io.Writer // headers and summary
	prov    provenance
}

// provenance is what manifests record about the code and machine.
type provenance struct {
	Commit, GoMLX, GoVersion, Host string
	Dirty                          bool
}

// summary counts the outcome of a sweep.
type summary struct {
	Total, Ran, Done, Skipped, Failed, NotRun int
	Failures                                  []string
	Interrupted                               bool
	Elapsed                                   time.Duration
}

// selectRuns keeps the runs matching glob (by key, key without seed, name or ID).
func selectRuns(runs []sweeps.Run, glob string) ([]sweeps.Run, error) {
	if glob == "" {
		return runs, nil
	}
	if _, err := path.Match(glob, ""); err != nil {
		return nil, fmt.Errorf("-only %q: %w", glob, err)
	}
	var out []sweeps.Run
	for _, r := range runs {
		for _, s := range []string{r.Key, r.KeyNoSeed(), r.Name, r.ID} {
			if ok, _ := path.Match(glob, s); ok {
				out = append(out, r)
				break
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("-only %q matches no run (keys look like %q)", glob, runs[0].Key)
	}
	return out, nil
}

// runDir is the folder of a run.
func runDir(out string, r sweeps.Run) string { return filepath.Join(out, r.Sweep, r.ID) }

func fromDir(out string, r sweeps.Run) string {
	if r.FromID == "" {
		return ""
	}
	return filepath.Join(out, r.FromSweep, r.FromID)
}

// dryRun prints each run's key, ID and folder status.
func dryRun(runs []sweeps.Run, o options) {
	counts := map[string]int{}
	for i, r := range runs {
		st := results.FolderStatus(runDir(o.Out, r))
		counts[st]++
		extra := ""
		if r.FromKey != "" {
			fst := results.FolderStatus(fromDir(o.Out, r))
			extra = fmt.Sprintf("  from %s:%s (%s)", r.FromSweep, r.FromKey, fst)
		}
		stale := false
		if m, err := results.ReadManifest(runDir(o.Out, r)); err == nil {
			if m.Status == results.StatusFailed {
				extra += "  last attempt failed: " + firstLine(m.Error)
			}
			if o.prov.Commit != "" && m.Commit != "" && m.Commit != o.prov.Commit {
				extra += "  stale: made at " + short(m.Commit)
				stale = true
			}
		}
		if o.Stale && !stale {
			continue
		}
		fmt.Fprintf(o.Log, "[%d/%d] %s  %s  %s%s\n", i+1, len(runs), r.Key, r.ID, st, extra)
	}
	fmt.Fprintf(o.Log, "%d runs: %d done, %d partial, %d todo (output %s)\n", len(runs), counts[results.FolderDone],
		counts[results.FolderPartial], counts[results.FolderTodo], filepath.Join(o.Out, runs[0].Sweep))
}

// validateAll checks every run before any is trained and returns all problems at once; a problem shared
// by several runs (a bad key in [base]) is reported once with the number of other runs it affects.
func validateAll(runs []sweeps.Run, exec Executor) error {
	var order []string
	first := map[string]string{}
	count := map[string]int{}
	for _, r := range runs {
		err := exec.Validate(r)
		if err == nil {
			continue
		}
		for _, line := range strings.Split(err.Error(), "\n") {
			norm := strings.Replace(line, "run "+r.Key+":", "run …:", 1)
			if _, ok := first[norm]; !ok {
				first[norm] = line
				order = append(order, norm)
			}
			count[norm]++
		}
	}
	var errs []error
	for _, n := range order {
		msg := first[n]
		if c := count[n]; c > 1 {
			msg += fmt.Sprintf(" (and %d more runs)", c-1)
		}
		errs = append(errs, errors.New(msg))
	}
	return errors.Join(errs...)
}

// runSweep runs the selected runs in order (sources before dependents). A failing run is recorded and the
// sweep goes on; a cancelled context stops it after recording the interrupted run.
func runSweep(ctx context.Context, runs []sweeps.Run, exec Executor, o options) summary {
	start := time.Now()
	s := summary{Total: len(runs)}
	failed := map[string]bool{} // IDs that failed in this launch
	for i, r := range runs {
		dir := runDir(o.Out, r)
		st := results.FolderStatus(dir)
		head := fmt.Sprintf("[%d/%d] %s (id %s) %s", i+1, len(runs), r.Key, r.ID, st)
		if ctx.Err() != nil {
			s.NotRun = len(runs) - i
			s.Interrupted = true
			break
		}
		if st == results.FolderDone && !o.Force {
			fmt.Fprintf(o.Log, "%s, skipped\n", head)
			s.Skipped++
			continue
		}
		if o.Force && st != results.FolderTodo {
			if err := os.RemoveAll(dir); err != nil {
				fmt.Fprintf(o.Log, "%s: -force: %v\n", head, err)
				s.Failed++
				s.Failures = append(s.Failures, r.Key+": "+err.Error())
				continue
			}
			head += " (forced)"
		}
		fmt.Fprintf(o.Log, "%s→running\n", head)
		s.Ran++
		t0 := time.Now()
		err := runOne(ctx, r, dir, exec, o, failed)
		switch {
		case err == nil:
			s.Done++
			fmt.Fprintf(o.Log, "  done %s in %s\n", r.Key, time.Since(t0).Round(time.Second))
		case ctx.Err() != nil:
			fmt.Fprintf(o.Log, "  interrupted: %s (resumes on the next launch)\n", r.Key)
			s.Interrupted = true
			s.NotRun = len(runs) - i - 1
			s.Elapsed = time.Since(start)
			return s
		default:
			failed[r.ID] = true
			s.Failed++
			s.Failures = append(s.Failures, r.Key+": "+firstLine(err.Error()))
			fmt.Fprintf(o.Log, "  FAILED %s: %v\n", r.Key, err)
		}
	}
	s.Elapsed = time.Since(start)
	return s
}

// runOne runs one run and records its manifest; DONE is written last.
func runOne(ctx context.Context, r sweeps.Run, dir string, exec Executor, o options, failed map[string]bool) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	m, err := results.ReadManifest(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(o.Log, "  ignoring unreadable manifest: %v\n", err)
	}
	attempts := m.Attempts
	m = manifestOf(r, o)
	m.Attempts = attempts + 1
	m.Status, m.Start = results.StatusRunning, time.Now().UTC()
	record := func(runErr error) error {
		m.End = time.Now().UTC()
		m.XLAFlags = xlaFlags(o.Backend)
		switch {
		case runErr == nil:
			m.Status, m.Error = results.StatusDone, ""
		case ctx.Err() != nil:
			m.Status, m.Error = results.StatusInterrupted, fmt.Sprintf("%+v", runErr)
		default:
			m.Status, m.Error = results.StatusFailed, fmt.Sprintf("%+v", runErr)
		}
		if err := results.WriteManifest(dir, m); err != nil {
			return errors.Join(runErr, err)
		}
		if runErr != nil {
			return runErr
		}
		return results.MarkDone(dir)
	}
	cfg, err := r.ConfigTOML()
	if err == nil {
		err = results.WriteFileAtomic(filepath.Join(dir, results.ConfigFile), func(w io.Writer) error {
			_, err := w.Write(cfg)
			return err
		})
	}
	if err != nil {
		return record(err)
	}
	if err := results.WriteManifest(dir, m); err != nil {
		return err
	}
	fd := fromDir(o.Out, r)
	if fd != "" && !results.IsDone(fd) {
		why := "is not done"
		if failed[r.FromID] {
			why = "failed in this launch"
		}
		hint := ""
		if r.FromSweep != r.Sweep {
			hint = fmt.Sprintf(" (run sweep %s first)", r.FromSweep)
		}
		return record(fmt.Errorf("from: source run %s:%s (id %s) %s%s", r.FromSweep, r.FromKey, r.FromID, why, hint))
	}
	runErr := safeRun(ctx, exec, r, dir, fd)
	if runErr == nil {
		if _, err := os.Stat(filepath.Join(dir, results.MetricsFile)); err != nil {
			runErr = fmt.Errorf("run %s finished without writing %s", r.Key, results.MetricsFile)
		}
	}
	return record(runErr)
}

// safeRun calls the executor and turns a panic into an error.
func safeRun(ctx context.Context, exec Executor, r sweeps.Run, dir, fromDir string) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("run %s panicked: %v\n%s", r.Key, p, debug.Stack())
		}
	}()
	return exec.Run(ctx, r, dir, fromDir)
}

// xlaFlags is XLA_FLAGS for a run on an XLA backend (the -backend flag, or $NATSBENCH_BACKEND when it is empty):
// read when the run ends, after opening the backend added natsbench's defaults. "" for other backends.
func xlaFlags(backend string) string {
	if backend == "" {
		backend = os.Getenv("NATSBENCH_BACKEND")
	}
	if !strings.HasPrefix(backend, "xla") {
		return ""
	}
	return os.Getenv("XLA_FLAGS")
}

func manifestOf(r sweeps.Run, o options) results.Manifest {
	dtype, _ := r.Get("model.dtype")
	ds, _ := dtype.(string)
	backend := o.Backend
	if backend == "" {
		backend = "go (default)"
	}
	dev := ""
	if o.Device >= 0 {
		dev = fmt.Sprint(o.Device)
	}
	return results.Manifest{RunID: r.ID, Sweep: r.Sweep, SweepFile: r.SweepFile, Key: r.Key, Name: r.Name, Kind: r.Kind,
		Seed: r.Seed, From: r.From, FromKey: r.FromKey, FromID: r.FromID, FromSweep: r.FromSweep, Smoke: r.Smoke,
		Commit: o.prov.Commit, Dirty: o.prov.Dirty, GoMLXVersion: o.prov.GoMLX, GoVersion: o.prov.GoVersion,
		Backend: backend, Device: dev, DType: ds, Host: o.prov.Host, Grid: r.Grid, Config: r.Config}
}

func printSummary(w io.Writer, sweep string, s summary, out string) {
	fmt.Fprintf(w, "\nsweep %s: %d runs: %d done now, %d skipped (done before), %d failed", sweep, s.Total, s.Done, s.Skipped, s.Failed)
	if s.Interrupted {
		fmt.Fprintf(w, ", interrupted (%d not run)", s.NotRun)
	}
	fmt.Fprintf(w, "; elapsed %s; results in %s\n", s.Elapsed.Round(time.Second), filepath.Join(out, sweep))
	for _, f := range s.Failures {
		fmt.Fprintf(w, "  failed: %s\n", f)
	}
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

func short(commit string) string {
	if len(commit) > 12 {
		return commit[:12]
	}
	return commit
}
