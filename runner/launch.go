package main

// Running a sweep beyond one process: -devices (one child runner per device on one host) and -launcher slurm
// (one Slurm job array per group of runs). Both run the same runner on one run at a time (`-only <run id>`) into
// the shared output folder, so a run's folder, checkpoint, manifest and DONE marker are the same however it was
// launched, resubmitting skips DONE runs, and an interrupted run resumes from its checkpoint.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"natsbench/results"
	"natsbench/sweeps"
)

// childArgs are the flags every child runner gets besides -only.
type childArgs struct {
	Sweep   string // absolute path of the sweep file
	Out     string // absolute output root
	Smoke   bool
	Backend string
	Force   bool
}

func (c childArgs) args(id string) []string {
	a := []string{"-sweep", c.Sweep, "-out", c.Out, "-only", id, "-no-report"}
	if c.Smoke {
		a = append(a, "-smoke")
	}
	if c.Backend != "" {
		a = append(a, "-backend", c.Backend)
	}
	if c.Force {
		a = append(a, "-force")
	}
	return a
}

// parseDevices reads -devices ("0,1,3"): distinct non-negative indices that exist. On xla:cuda backends the
// indices are CUDA devices (checked against the GPUs the driver lists); on the pure-Go backend they are only
// concurrency slots, at most one per CPU core.
func parseDevices(spec, backend string) ([]int, error) {
	var devs []int
	seen := map[int]bool{}
	for _, f := range strings.Split(spec, ",") {
		f = strings.TrimSpace(f)
		n, err := strconv.Atoi(f)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("-devices %q: %q is not a device index (want e.g. 0,1)", spec, f)
		}
		if seen[n] {
			return nil, fmt.Errorf("-devices %q: device %d listed twice", spec, n)
		}
		seen[n] = true
		devs = append(devs, n)
	}
	if strings.HasPrefix(backend, "xla") && !strings.Contains(backend, "cpu") {
		have := gpuCount()
		for _, d := range devs {
			if d >= have {
				return nil, fmt.Errorf("-devices %q: device %d does not exist (this machine has %d GPU(s)%s)", spec, d, have,
					map[bool]string{true: ", indices 0-" + strconv.Itoa(have-1), false: ""}[have > 0])
			}
		}
	} else if len(devs) > runtime.NumCPU() {
		return nil, fmt.Errorf("-devices %q: %d slots on the %s backend, but this machine has %d CPU cores", spec, len(devs),
			map[bool]string{true: "pure-Go", false: backend}[backend == "" || backend == "go"], runtime.NumCPU())
	}
	return devs, nil
}

// gpuCount returns the number of NVIDIA GPUs the driver lists (0 when none or no driver).
func gpuCount() int {
	if ents, err := os.ReadDir("/proc/driver/nvidia/gpus"); err == nil && len(ents) > 0 {
		return len(ents)
	}
	out, err := exec.Command("nvidia-smi", "-L").Output()
	if err != nil {
		return 0
	}
	return strings.Count(string(out), "\nGPU ") + map[bool]int{true: 1, false: 0}[strings.HasPrefix(string(out), "GPU ")]
}

// runDevices runs the runs on the devices at the same time, one child runner per device, in the order their
// `from` sources allow: a run starts when its source is done; a run whose source failed in this launch fails
// with a message naming both. It returns the launch summary.
func runDevices(ctx context.Context, runs []sweeps.Run, devs []int, ca childArgs, log io.Writer) summary {
	start := time.Now()
	s := summary{Total: len(runs)}
	self, err := os.Executable()
	if err != nil {
		s.Failed = len(runs)
		s.Failures = append(s.Failures, "cannot find the runner executable: "+err.Error())
		return s
	}
	type result struct {
		dev int
		run sweeps.Run
		err error
		dur time.Duration
	}
	pending := []sweeps.Run{}
	for _, r := range runs {
		if results.FolderStatus(runDir(ca.Out, r)) == results.FolderDone && !ca.Force {
			fmt.Fprintf(log, "%s (id %s) done, skipped\n", r.Key, r.ID)
			s.Skipped++
			continue
		}
		pending = append(pending, r)
	}
	inLaunch := map[string]bool{}
	for _, r := range pending {
		inLaunch[r.ID] = true
	}
	failed := map[string]string{} // run ID → key, failed in this launch
	free := append([]int{}, devs...)
	done := make(chan result)
	running := 0
	var mu sync.Mutex // serialises the children's prefixed output
	launch := func(dev int, r sweeps.Run) {
		running++
		fmt.Fprintf(log, "[dev %d] %s (id %s) →running\n", dev, r.Key, r.ID)
		go func() {
			t0 := time.Now()
			cmd := exec.CommandContext(ctx, self, ca.args(r.ID)...)
			cmd.Env = append(os.Environ(), "CUDA_VISIBLE_DEVICES="+strconv.Itoa(dev), "NATSBENCH_DEVICE_SLOT="+strconv.Itoa(dev))
			pw := &prefixWriter{w: log, mu: &mu, prefix: fmt.Sprintf("[dev %d] ", dev), bol: true}
			cmd.Stdout, cmd.Stderr = pw, pw
			cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) } // the child saves and stops
			cmd.WaitDelay = time.Minute
			err := cmd.Run()
			pw.flush()
			if err != nil {
				if m, e := results.ReadManifest(runDir(ca.Out, r)); e == nil && m.Error != "" {
					err = fmt.Errorf("%s", firstLine(m.Error))
				} else {
					err = fmt.Errorf("child runner: %v", err)
				}
			}
			done <- result{dev, r, err, time.Since(t0)}
		}()
	}
	for len(pending) > 0 || running > 0 {
		// Start what can start.
		for i := 0; i < len(pending) && len(free) > 0 && ctx.Err() == nil; {
			r := pending[i]
			if r.FromID != "" && inLaunch[r.FromID] && !results.IsDone(fromDir(ca.Out, r)) {
				if key, bad := failed[r.FromID]; bad {
					msg := fmt.Sprintf("%s: from: source run %s failed in this launch", r.Key, key)
					fmt.Fprintf(log, "  FAILED %s\n", msg)
					s.Failed++
					s.Failures = append(s.Failures, msg)
					failed[r.ID] = r.Key
					pending = append(pending[:i], pending[i+1:]...)
					continue
				}
				i++ // its source is still running or queued
				continue
			}
			dev := free[0]
			free = free[1:]
			pending = append(pending[:i], pending[i+1:]...)
			s.Ran++
			launch(dev, r)
		}
		if running == 0 {
			if ctx.Err() != nil {
				s.Interrupted, s.NotRun = true, len(pending)
			}
			break
		}
		res := <-done
		running--
		free = append(free, res.dev)
		sort.Ints(free)
		switch {
		case res.err == nil:
			s.Done++
			fmt.Fprintf(log, "[dev %d]   done %s in %s\n", res.dev, res.run.Key, res.dur.Round(time.Second))
		case ctx.Err() != nil:
			s.Interrupted = true
			fmt.Fprintf(log, "[dev %d]   interrupted: %s (resumes on the next launch)\n", res.dev, res.run.Key)
		default:
			failed[res.run.ID] = res.run.Key
			s.Failed++
			s.Failures = append(s.Failures, res.run.Key+": "+res.err.Error())
			fmt.Fprintf(log, "[dev %d]   FAILED %s: %v\n", res.dev, res.run.Key, res.err)
		}
	}
	if ctx.Err() != nil {
		s.Interrupted = true
		s.NotRun += len(pending)
	}
	s.Elapsed = time.Since(start)
	return s
}

// prefixWriter prefixes every line (and every carriage-return progress update) of a child's output.
type prefixWriter struct {
	w      io.Writer
	mu     *sync.Mutex
	prefix string
	bol    bool // at the beginning of a line
	buf    bytes.Buffer
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	for _, c := range b {
		if p.bol {
			p.buf.WriteString(p.prefix)
			p.bol = false
		}
		p.buf.WriteByte(c)
		if c == '\n' || c == '\r' {
			p.bol = true
			p.flush()
		}
	}
	return len(b), nil
}

func (p *prefixWriter) flush() {
	if p.buf.Len() == 0 {
		return
	}
	p.mu.Lock()
	_, _ = p.w.Write(p.buf.Bytes())
	p.mu.Unlock()
	p.buf.Reset()
}

// --- Slurm -------------------------------------------------------------------------------------------------

// slurmOptions are the cluster-specific settings, all from flags (nothing is hard-coded).
type slurmOptions struct {
	Partition string // --partition
	GPUs      int    // --gres=gpu:N per task (0: none)
	CPUs      int    // --cpus-per-task (0: Slurm's default)
	Time      string // --time
	Extra     string // further sbatch options, whitespace-separated, one #SBATCH line each
}

// slurmGroup is one job array: runs with the same dependency.
type slurmGroup struct {
	Name  string   `json:"name"`
	IDs   []string `json:"ids"`
	Keys  []string `json:"keys"`
	After string   `json:"after,omitempty"` // the source run's ID (its task must succeed first); "" for none
	JobID string   `json:"job_id,omitempty"`
}

// slurmPlan groups the runs that are not done into job arrays: the runs whose source is done (or that have none)
// in group "g0"; every other run in the group of its source run, which waits for that source's array task
// (`--dependency=afterok:JOB_TASK`), so a failed run holds back only the runs that need its checkpoint.
func slurmPlan(runs []sweeps.Run, out string, force bool) ([]*slurmGroup, error) {
	pending := map[string]bool{}
	var todo []sweeps.Run
	for _, r := range runs {
		if results.FolderStatus(runDir(out, r)) == results.FolderDone && !force {
			continue
		}
		pending[r.ID] = true
		todo = append(todo, r)
	}
	var groups []*slurmGroup
	byAfter := map[string]*slurmGroup{}
	for _, r := range todo {
		after := ""
		if r.FromID != "" && !results.IsDone(fromDir(out, r)) {
			if !pending[r.FromID] {
				return nil, fmt.Errorf("run %s: its source %s:%s (id %s) is not done and not part of this launch; run sweep %s first",
					r.Key, r.FromSweep, r.FromKey, r.FromID, r.FromSweep)
			}
			after = r.FromID
		}
		g := byAfter[after]
		if g == nil {
			g = &slurmGroup{Name: fmt.Sprintf("g%d", len(groups)), After: after}
			byAfter[after] = g
			groups = append(groups, g)
		}
		g.IDs = append(g.IDs, r.ID)
		g.Keys = append(g.Keys, r.Key)
	}
	return groups, nil
}

// slurmScript renders the sbatch script of a group.
func slurmScript(sweep string, g *slurmGroup, runner, workDir, logDir string, ca childArgs, so slurmOptions) string {
	var b strings.Builder
	fmt.Fprintf(&b, "#!/bin/bash\n")
	fmt.Fprintf(&b, "#SBATCH --job-name=natsbench-%s-%s\n", sweep, g.Name)
	fmt.Fprintf(&b, "#SBATCH --array=0-%d\n", len(g.IDs)-1)
	fmt.Fprintf(&b, "#SBATCH --output=%s/%s_%%A_%%a.log\n", logDir, g.Name)
	fmt.Fprintf(&b, "#SBATCH --ntasks=1\n")
	if so.Partition != "" {
		fmt.Fprintf(&b, "#SBATCH --partition=%s\n", so.Partition)
	}
	if so.GPUs > 0 {
		fmt.Fprintf(&b, "#SBATCH --gres=gpu:%d\n", so.GPUs)
	}
	if so.CPUs > 0 {
		fmt.Fprintf(&b, "#SBATCH --cpus-per-task=%d\n", so.CPUs)
	}
	if so.Time != "" {
		fmt.Fprintf(&b, "#SBATCH --time=%s\n", so.Time)
	}
	for _, x := range strings.Fields(so.Extra) {
		fmt.Fprintf(&b, "#SBATCH %s\n", x)
	}
	fmt.Fprintf(&b, "# natsbench sweep %s, group %s: %d run(s), one per array task.\n", sweep, g.Name, len(g.IDs))
	if g.After != "" {
		fmt.Fprintf(&b, "# Submitted with --dependency=afterok on the array task of source run %s.\n", g.After)
	}
	fmt.Fprintf(&b, "set -u\nids=(%s)\n", strings.Join(g.IDs, " "))
	b.WriteString("keys=(")
	for i, k := range g.Keys {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(shellQuote(k))
	}
	b.WriteString(")\n")
	b.WriteString("id=${ids[$SLURM_ARRAY_TASK_ID]}\n")
	b.WriteString("echo \"natsbench: task ${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID} on $(hostname): run ${keys[$SLURM_ARRAY_TASK_ID]} (id $id)\"\n")
	fmt.Fprintf(&b, "cd %s || exit 2\n", shellQuote(workDir))
	args := []string{shellQuote(runner)}
	for _, a := range ca.args("ID") {
		if a == "ID" {
			args = append(args, `"$id"`)
		} else {
			args = append(args, shellQuote(a))
		}
	}
	fmt.Fprintf(&b, "exec %s\n", strings.Join(args, " "))
	return b.String()
}

func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r == '/' || r == '.' || r == '-' || r == '_' || r == ',' || r == '=' || r == ':' || r == '+' ||
			(r >= '0' && r <= '9') || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z'))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// slurmJobs is what a submission records in OUT/<sweep>/slurm/jobs.json (read by `runner status`).
type slurmJobs struct {
	Submitted time.Time     `json:"submitted"`
	Groups    []*slurmGroup `json:"groups"`
}

// launchSlurm writes one sbatch script per group under OUT/<sweep>/slurm/ and submits them in order, each
// dependent group with --dependency=afterok on its source's array task. With dryRun it prints the scripts and
// the sbatch commands instead.
func launchSlurm(sw *sweeps.Sweep, runs []sweeps.Run, ca childArgs, so slurmOptions, dryRun bool, stdout, log io.Writer) error {
	groups, err := slurmPlan(runs, ca.Out, ca.Force)
	if err != nil {
		return err
	}
	if len(groups) == 0 {
		fmt.Fprintf(log, "slurm: every selected run of %s is done; nothing to submit\n", sw.Name)
		return nil
	}
	dir := filepath.Join(ca.Out, sw.Name, "slurm")
	workDir, err := os.Getwd()
	if err != nil {
		return err
	}
	runner := filepath.Join(dir, "natsbench-runner")
	if !dryRun {
		if _, err := exec.LookPath("sbatch"); err != nil {
			return fmt.Errorf("-launcher slurm: no sbatch on the PATH (%v): run on a Slurm login node, or use -dry-run to see the scripts", err)
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		// The tasks run a copy of this binary in the shared output folder (a `go run` binary is deleted on exit).
		self, err := os.Executable()
		if err != nil {
			return err
		}
		if err := copyFile(self, runner, 0o755); err != nil {
			return fmt.Errorf("-launcher slurm: copy the runner for the tasks: %w", err)
		}
	}
	task := map[string]string{} // run ID → "JOB_TASK"
	for _, g := range groups {
		script := slurmScript(sw.Name, g, runner, workDir, dir, ca, so)
		path := filepath.Join(dir, g.Name+".sbatch")
		args := []string{"--parsable"}
		if g.After != "" {
			dep := task[g.After]
			if dep == "" {
				dep = "$JOB_OF_" + g.After // dry run
			}
			args = append(args, "--dependency=afterok:"+dep)
		}
		args = append(args, path)
		if dryRun {
			fmt.Fprintf(stdout, "### %s (%d runs)\n%s### sbatch %s\n\n", path, len(g.IDs), script, strings.Join(args, " "))
			for i, id := range g.IDs {
				task[id] = fmt.Sprintf("$JOB_%s_%d", g.Name, i)
			}
			continue
		}
		if err := results.WriteFileAtomic(path, func(w io.Writer) error { _, err := io.WriteString(w, script); return err }); err != nil {
			return err
		}
		cmd := exec.Command("sbatch", args...)
		var se bytes.Buffer
		cmd.Stderr = &se
		outb, err := cmd.Output()
		if err != nil {
			return fmt.Errorf("sbatch %s (runs %s): %v: %s", path, strings.Join(g.Keys, "; "), err, strings.TrimSpace(se.String()))
		}
		job := strings.TrimSpace(strings.SplitN(string(outb), ";", 2)[0])
		g.JobID = job
		for i, id := range g.IDs {
			task[id] = fmt.Sprintf("%s_%d", job, i)
		}
		fmt.Fprintf(log, "slurm: submitted %s as job %s: %d run(s)%s\n", path, job, len(g.IDs),
			map[bool]string{true: " after " + strings.Join(args[1:len(args)-1], " "), false: ""}[g.After != ""])
	}
	if dryRun {
		return nil
	}
	b, _ := json.MarshalIndent(slurmJobs{Submitted: time.Now().UTC(), Groups: groups}, "", "  ")
	if err := results.WriteFileAtomic(filepath.Join(dir, "jobs.json"), func(w io.Writer) error { _, err := w.Write(b); return err }); err != nil {
		return err
	}
	fmt.Fprintf(log, "slurm: logs in %s; follow with: runner status -sweep %s -out %s\n", dir, sw.Path, ca.Out)
	return nil
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp := dst + ".tmp"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}

// --- status ------------------------------------------------------------------------------------------------

// cmdStatus prints, per run, the folder status (with the error of a failed attempt) and, for runs submitted to
// Slurm, their task's state from squeue (queued or running) or sacct (finished, when accounting is on).
func cmdStatus(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("runner status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sweepFlag := fs.String("sweep", "", "sweep file")
	out := fs.String("out", "out", "output root")
	smoke := fs.Bool("smoke", false, "the smoke runs")
	metrics := fs.Bool("metrics", false, "print the metric rows of the DONE runs, sorted and without times (for diffing two output folders)")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if *sweepFlag == "" {
		fmt.Fprintln(stderr, "runner status: -sweep is required")
		return exitUsage
	}
	sw, runs, err := loadSweep(*sweepFlag, *smoke)
	if err != nil {
		fmt.Fprintf(stderr, "runner status: %v\n", err)
		return exitUsage
	}
	if *metrics {
		return printMetrics(runs, *out, stdout, stderr)
	}
	tasks := map[string]string{} // run ID → JOB_TASK
	var jobs slurmJobs
	if b, err := os.ReadFile(filepath.Join(*out, sw.Name, "slurm", "jobs.json")); err == nil {
		if err := json.Unmarshal(b, &jobs); err != nil {
			fmt.Fprintf(stderr, "runner status: %s: %v\n", filepath.Join(*out, sw.Name, "slurm", "jobs.json"), err)
			return exitUsage
		}
		for _, g := range jobs.Groups {
			for i, id := range g.IDs {
				tasks[id] = fmt.Sprintf("%s_%d", g.JobID, i)
			}
		}
	}
	states := slurmStates(jobs)
	counts := map[string]int{}
	for i, r := range runs {
		dir := runDir(*out, r)
		st := results.FolderStatus(dir)
		extra := ""
		if m, err := results.ReadManifest(dir); err == nil && st != results.FolderDone {
			if m.Status == results.StatusFailed || m.Status == results.StatusInterrupted {
				st = m.Status
				extra += ": " + firstLine(m.Error)
			} else if m.Status == results.StatusRunning {
				st = "running"
			}
		}
		if st == results.FolderTodo && r.FromID != "" {
			// A dependant of a failed source never starts under Slurm (afterok + kill_invalid_depend cancels it):
			// say so rather than leave it as todo.
			if m, err := results.ReadManifest(fromDir(*out, r)); err == nil && m.Status == results.StatusFailed {
				st = "blocked"
				extra += fmt.Sprintf(": source %s:%s failed (%s); resubmit after fixing it", r.FromSweep, r.FromKey, firstLine(m.Error))
			}
		}
		counts[st]++
		if t, ok := tasks[r.ID]; ok {
			s := states[t]
			if s == "" {
				s = "left squeue; no accounting (sacct): see the run state"
			}
			extra = fmt.Sprintf("  [slurm %s %s]", t, s) + extra
		}
		fmt.Fprintf(stdout, "[%d/%d] %s  %s  %s%s\n", i+1, len(runs), r.Key, r.ID, st, extra)
	}
	var parts []string
	for _, k := range []string{results.FolderDone, "running", results.FolderPartial, results.StatusFailed, results.StatusInterrupted, "blocked", results.FolderTodo} {
		if counts[k] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", counts[k], k))
		}
	}
	fmt.Fprintf(stdout, "%d runs: %s (output %s)\n", len(runs), strings.Join(parts, ", "), filepath.Join(*out, sw.Name))
	return exitOK
}

// slurmStates asks squeue (and sacct when accounting is enabled) for the state of every task of the jobs.
func slurmStates(jobs slurmJobs) map[string]string {
	st := map[string]string{}
	var ids []string
	for _, g := range jobs.Groups {
		if g.JobID != "" {
			ids = append(ids, g.JobID)
		}
	}
	if len(ids) == 0 {
		return st
	}
	if out, err := exec.Command("sacct", "-n", "-X", "-P", "-j", strings.Join(ids, ","), "-o", "JobID,State,ExitCode").Output(); err == nil {
		for _, line := range strings.Split(string(out), "\n") {
			f := strings.Split(line, "|")
			if len(f) == 3 {
				st[f[0]] = f[1] + " (exit " + f[2] + ")"
			}
		}
	}
	// squeue lists pending tasks of an array as JOB_[0-3]; expand them.
	if out, err := exec.Command("squeue", "-h", "-r", "-j", strings.Join(ids, ","), "-o", "%i|%T|%r").Output(); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(out))
		for sc.Scan() {
			f := strings.Split(sc.Text(), "|")
			if len(f) == 3 {
				st[f[0]] = strings.ToLower(f[1]) + map[bool]string{true: " (" + f[2] + ")", false: ""}[f[2] != "None" && f[2] != ""]
			}
		}
	}
	return st
}
