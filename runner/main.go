package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"

	"natsbench/experiments"
	"natsbench/sweeps"
)

// Exit statuses.
const (
	exitOK     = 0
	exitFailed = 1 // a run failed or the sweep was interrupted
	exitUsage  = 2 // bad flags, sweep file, configuration or results
)

func main() {
	// The first Ctrl-C (or SIGTERM) cancels the running run gracefully; a second one kills the process. (Cancelling
	// at a normal exit must not print the notice, as signal.NotifyContext's ctx.Done could not tell apart.)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-sig
		signal.Stop(sig) // the default action again: the next signal kills
		cancel()
		fmt.Fprintln(os.Stderr, "\nrunner: interrupting (the run resumes on the next launch); Ctrl-C again to kill")
	}()
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, nil)
	cancel()
	os.Exit(code)
}

// run is main without the process: args without the program name; exec nil means experiments.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, exec Executor) int {
	if len(args) > 0 {
		switch args[0] {
		case "report":
			return cmdReport(args[1:], stdout, stderr)
		case "compare":
			return cmdCompare(args[1:], stdout, stderr)
		case "eval":
			return cmdEval(args[1:], stdout, stderr)
		case "status":
			return cmdStatus(args[1:], stdout, stderr)
		case "passkeygen":
			return cmdPasskeygen(args[1:], stdout, stderr)
		case "help", "-h", "-help", "--help":
			usage(stderr)
			return exitOK
		}
	}
	fs := flag.NewFlagSet("runner", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { usage(stderr); fs.PrintDefaults() }
	sweepFlag := fs.String("sweep", "", "sweep file; a bare name resolves under sweeps/ (pg19, pg19.toml)")
	out := fs.String("out", "out", "output root: runs go to OUT/<sweep>/<run-id>/")
	only := fs.String("only", "", "run only the runs whose key, key without seed, name or ID matches this glob")
	dry := fs.Bool("dry-run", false, "print each run's key, ID and status (done, partial, todo) and exit")
	smoke := fs.Bool("smoke", false, "apply the sweep's smoke overrides (a shrunken CPU check)")
	backend := fs.String("backend", "", `GoMLX backend ("go", "xla:cuda", …); "" is the pure-Go default`)
	device := fs.Int("device", -1, "GPU index for xla backends (-1: not set)")
	force := fs.Bool("force", false, "rerun runs that are DONE, from scratch")
	noReport := fs.Bool("no-report", false, "do not write tables and figures at the end")
	stale := fs.Bool("stale", false, "with -dry-run: list only runs made at another commit than the checkout's")
	devices := fs.String("devices", "", "run independent runs at the same time, one child runner per device (\"0,1\"): CUDA devices on xla backends, concurrency slots on the pure-Go backend")
	launcher := fs.String("launcher", "", `"slurm": submit the runs as Slurm job arrays (one task per run) instead of running them here`)
	var so slurmOptions
	fs.StringVar(&so.Partition, "slurm-partition", "", "Slurm: --partition of the tasks")
	fs.IntVar(&so.GPUs, "slurm-gpus", 0, "Slurm: GPUs per task (--gres=gpu:N)")
	fs.IntVar(&so.CPUs, "slurm-cpus", 0, "Slurm: --cpus-per-task")
	fs.StringVar(&so.Time, "slurm-time", "", "Slurm: --time limit per task (e.g. 4:00:00)")
	fs.StringVar(&so.Extra, "slurm-args", "", `Slurm: further sbatch options, whitespace-separated (e.g. "--account=x --qos=y")`)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "runner: unexpected arguments %q (sub-commands: report, compare)\n", fs.Args())
		return exitUsage
	}
	if *sweepFlag == "" {
		fmt.Fprintln(stderr, "runner: -sweep is required")
		usage(stderr)
		return exitUsage
	}
	sw, runs, err := loadSweep(*sweepFlag, *smoke)
	if err != nil {
		fmt.Fprintf(stderr, "runner: %v\n", err)
		return exitUsage
	}
	if runs, err = selectRuns(runs, *only); err != nil {
		fmt.Fprintf(stderr, "runner: %s: %v\n", sw.Path, err)
		return exitUsage
	}
	o := options{Out: *out, Only: *only, Force: *force, DryRun: *dry, Backend: *backend, Device: *device, Log: stderr,
		prov: currentProvenance()}
	if (*dry || *stale) && *launcher == "" {
		o.Log, o.Stale = stdout, *stale
		dryRun(runs, o)
		return exitOK
	}
	if *launcher != "" && *launcher != "slurm" {
		fmt.Fprintf(stderr, "runner: -launcher %q: the only launcher is \"slurm\"\n", *launcher)
		return exitUsage
	}
	if *launcher != "" && *devices != "" {
		fmt.Fprintln(stderr, "runner: -launcher and -devices exclude each other (on Slurm, ask for GPUs with -slurm-gpus)")
		return exitUsage
	}
	var ca childArgs
	if *launcher != "" || *devices != "" {
		sp, err1 := filepath.Abs(resolveSweep(*sweepFlag))
		op, err2 := filepath.Abs(*out)
		if err := errors.Join(err1, err2); err != nil {
			fmt.Fprintf(stderr, "runner: %v\n", err)
			return exitUsage
		}
		ca = childArgs{Sweep: sp, Out: op, Smoke: *smoke, Backend: *backend, Force: *force}
	}
	if exec == nil {
		exec = experimentsExec{env: experiments.Env{Backend: *backend, Smoke: *smoke, Log: stderr, Commit: o.prov.Commit, Device: *device}}
	}
	if err := validateAll(runs, exec); err != nil {
		fmt.Fprintf(stderr, "runner: %s: invalid runs, nothing was run:\n%v\n", sw.Path, err)
		return exitUsage
	}
	fmt.Fprintf(stderr, "sweep %s (%s): %d runs%s, output %s\n", sw.Name, sw.Path, len(runs), map[bool]string{true: ", smoke", false: ""}[*smoke],
		filepath.Join(*out, sw.Name))
	if *launcher == "slurm" {
		if err := launchSlurm(sw, runs, ca, so, *dry, stdout, stderr); err != nil {
			fmt.Fprintf(stderr, "runner: %v\n", err)
			return exitFailed
		}
		return exitOK
	}
	var s summary
	if *devices != "" {
		devs, err := parseDevices(*devices, *backend)
		if err != nil {
			fmt.Fprintf(stderr, "runner: %v\n", err)
			return exitUsage
		}
		s = runDevices(ctx, runs, devs, ca, stderr)
	} else {
		s = runSweep(ctx, runs, exec, o)
	}
	if !*noReport && s.Done+s.Skipped > 0 && !s.Interrupted {
		if err := report(sw, *out, *smoke, false, io.Discard); err != nil {
			fmt.Fprintf(stderr, "runner: report: %v\n", err)
		} else {
			fmt.Fprintf(stderr, "report: %s\n", filepath.Join(*out, sw.Name, "summary.md"))
		}
	}
	printSummary(stderr, sw.Name, s, *out)
	if s.Failed > 0 || s.Interrupted {
		return exitFailed
	}
	return exitOK
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage:
  runner -sweep FILE [-smoke] [-only GLOB] [-dry-run] [-stale] [-force] [-out DIR] [-backend B] [-device N]
      run or resume a sweep (a bare name resolves under sweeps/)
      -devices 0,1       run independent runs at the same time, one per device (the order of from allows)
      -launcher slurm    submit job arrays, one task per run [-slurm-partition P] [-slurm-gpus N] [-slurm-cpus N]
                         [-slurm-time T] [-slurm-args "..."]; with -dry-run print the sbatch scripts
  runner status -sweep FILE [-smoke] [-out DIR]
      each run's state from its folder, and from squeue/sacct for runs submitted to Slurm
  runner report -sweep FILE [-smoke] [-all] [-out DIR]
      write OUT/<sweep>/{runs.parquet, summary.md, figures/} from stored results, training nothing
  runner compare [-out DIR] [-x METRIC] [-y METRIC] [-task TASK] [-label PATHS] [-logx] [-name NAME] [-smoke] SEL SEL...
      compare runs side by side; SEL is a sweep ("ablations"), sweep:GLOB over keys without seed
      ("pg19:nats*"), or a run ID; writes OUT/compare/<name>/{compare.md, compare.csv, compare.png, …}
  runner eval -pred DIR [-e]
      score LongBench predictions (DIR/<task>.jsonl) like THUDM's eval.py: DIR/result.json, DIR/metrics.parquet
  runner passkeygen -tokenizer F -haystack DIR [-seq-len N] [-words N] [-num-keys N] [-n N] -out DIR
      the finetune kind's passkey samples as NumPy files, to pretrain a small Llama (scripts/train_passkey_llama.py)
`)
}

// resolveSweep finds a sweep file: the path as given, else under sweeps/, with or without .toml.
func resolveSweep(name string) string {
	cands := []string{name}
	if !strings.ContainsRune(name, filepath.Separator) {
		cands = append(cands, filepath.Join("sweeps", name))
	}
	for _, c := range cands {
		for _, p := range []string{c, c + ".toml"} {
			if st, err := os.Stat(p); err == nil && !st.IsDir() {
				return p
			}
		}
	}
	if !strings.ContainsRune(name, filepath.Separator) {
		p := filepath.Join("sweeps", name)
		if !strings.HasSuffix(p, ".toml") {
			p += ".toml"
		}
		return p
	}
	return name
}

// loadSweep loads and expands a sweep.
func loadSweep(name string, smoke bool) (*sweeps.Sweep, []sweeps.Run, error) {
	sw, err := sweeps.Load(resolveSweep(name))
	if err != nil {
		return nil, nil, err
	}
	runs, err := sw.Expand(smoke)
	if err != nil {
		return nil, nil, err
	}
	return sw, runs, nil
}

// experimentsExec runs runs with package experiments.
type experimentsExec struct{ env experiments.Env }

func (e experimentsExec) Validate(r sweeps.Run) error { return experiments.Validate(r) }

func (e experimentsExec) Run(ctx context.Context, r sweeps.Run, dir, fromDir string) error {
	return experiments.Run(ctx, r, dir, fromDir, e.env)
}

// currentProvenance reads the commit, dirty flag and versions once per launch (best effort).
func currentProvenance() provenance {
	p := provenance{GoVersion: runtime.Version()}
	bi, haveBI := debug.ReadBuildInfo()
	if haveBI { // a built binary knows its commit; the folder it runs in may be a copy with another history
		for _, st := range bi.Settings {
			switch st.Key {
			case "vcs.revision":
				p.Commit = st.Value
			case "vcs.modified":
				p.Dirty = st.Value == "true"
			}
		}
	}
	if p.Commit != "" {
		// from the build info
	} else if out, err := exec.Command("git", "rev-parse", "HEAD").Output(); err == nil {
		p.Commit = strings.TrimSpace(string(out))
		if st, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil {
			p.Dirty = len(strings.TrimSpace(string(st))) > 0
		}
	}
	if haveBI {
		for _, d := range bi.Deps {
			if d.Path == "github.com/gomlx/gomlx" {
				p.GoMLX = d.Version
			}
		}
	}
	p.Host, _ = os.Hostname()
	return p
}
