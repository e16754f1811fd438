package main

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"natsbench/results"
)

// TestMain lets the test binary stand in for the runner in child processes (-devices runs children of
// os.Executable()): with NATSBENCH_TEST_CHILD set it runs the command line with the fake executor.
func TestMain(m *testing.M) {
	if os.Getenv("NATSBENCH_TEST_CHILD") != "" {
		os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr, &fakeExec{fail: os.Getenv("NATSBENCH_TEST_FAIL")}))
	}
	os.Exit(m.Run())
}

func TestDevicesBadInput(t *testing.T) {
	for _, tc := range []struct{ spec, backend, want string }{
		{"0,0", "go", "device 0 listed twice"},
		{"0,x", "go", `"x" is not a device index`},
		{"-1", "go", "is not a device index"},
		{"0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47,48,49,50,51,52,53,54,55,56,57,58,59,60,61,62,63,64,65,66,67,68,69,70,71,72,73,74,75,76,77,78,79,80,81,82,83,84,85,86,87,88,89,90,91,92,93,94,95,96,97,98,99,100,101,102,103,104,105,106,107,108,109,110,111,112,113,114,115,116,117,118,119,120,121,122,123,124,125,126,127,128,129", "go", "CPU cores"},
	} {
		if _, err := parseDevices(tc.spec, tc.backend); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parseDevices(%q): %v, want %q", tc.spec, err, tc.want)
		}
	}
	if n := gpuCount(); n < 64 {
		_, err := parseDevices("63", "xla:cuda")
		if err == nil || !strings.Contains(err.Error(), "device 63 does not exist") {
			t.Errorf("missing GPU: %v", err)
		}
	}
	sweep, out := setup(t)
	code, log := launch(t, context.Background(), &fakeExec{}, "-sweep", sweep, "-out", out, "-devices", "0,0")
	if code != exitUsage || !strings.Contains(log, "listed twice") {
		t.Errorf("runner -devices 0,0: %d %s", code, log)
	}
}

// TestDevicesRunChildren: -devices runs every run in a child runner, two at a time, sources before the runs that
// use them; a failed source fails its dependants with a message naming it while the other runs go on.
func TestDevicesRunChildren(t *testing.T) {
	if runtime.NumCPU() < 2 {
		t.Skip("needs 2 cores for 2 slots")
	}
	t.Setenv("NATSBENCH_TEST_CHILD", "1")
	sweep, out := setup(t)
	code, log := launch(t, context.Background(), &fakeExec{}, "-sweep", sweep, "-out", out, "-devices", "0,1", "-no-report")
	if code != exitOK {
		t.Fatalf("-devices: %d\n%s", code, log)
	}
	for _, want := range []string{"[dev 0] ", "[dev 1] ", "8 done now"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	for _, r := range expand(t, sweep, false) {
		if !results.IsDone(runDir(out, r)) {
			t.Errorf("%s not done", r.Key)
		}
	}
	// A failing source: its dependants fail, naming it; the NAtS runs are done.
	t.Setenv("NATSBENCH_TEST_FAIL", "full,seed=0")
	_, out2 := setup(t)
	code, log = launch(t, context.Background(), &fakeExec{}, "-sweep", sweep, "-out", out2, "-devices", "0,1", "-no-report")
	if code != exitFailed || !strings.Contains(log, "h2o,method.budget=64,seed=0: from: source run full,seed=0 failed in this launch") {
		t.Fatalf("failing source: %d\n%s", code, log)
	}
	for _, r := range expand(t, sweep, false) {
		want := !(r.Key == "full,seed=0" || r.Key == "h2o,method.budget=64,seed=0")
		if results.IsDone(runDir(out2, r)) != want {
			t.Errorf("%s: done = %v, want %v", r.Key, !want, want)
		}
	}
}

// fakeSbatch puts an sbatch on PATH that records its arguments and answers job ids 101, 102, …
func fakeSbatch(t *testing.T) (argsLog string) {
	dir := t.TempDir()
	argsLog = filepath.Join(dir, "calls")
	script := `#!/bin/sh
n=$(cat "` + dir + `/n" 2>/dev/null || echo 100); n=$((n+1)); echo $n > "` + dir + `/n"
echo "$@" >> "` + argsLog + `"
echo "$n;cluster"
`
	if err := os.WriteFile(filepath.Join(dir, "sbatch"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	return argsLog
}

// TestSlurmLauncher: one array per dependency group, dependants after their source's array task, cluster settings
// from flags in every script, runs already done left out on resubmission, and a clear error without sbatch.
func TestSlurmLauncher(t *testing.T) {
	calls := fakeSbatch(t)
	sweep, out := setup(t)
	code, log := launch(t, context.Background(), &fakeExec{}, "-sweep", sweep, "-out", out, "-launcher", "slurm",
		"-slurm-partition", "gpu", "-slurm-gpus", "2", "-slurm-time", "1:00:00", "-slurm-args", "--account=lab --qos=high")
	if code != exitOK {
		t.Fatalf("launch: %d\n%s", code, log)
	}
	b, _ := os.ReadFile(calls)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 3 {
		t.Fatalf("sbatch calls:\n%s", b)
	}
	// g0: full s0, full s1, nats ×4 (tasks 0-5, job 101); h2o s0 after 101_0, h2o s1 after 101_1.
	if strings.Contains(lines[0], "--dependency") || !strings.Contains(lines[1], "--dependency=afterok:101_0 ") ||
		!strings.Contains(lines[2], "--dependency=afterok:101_1 ") {
		t.Errorf("dependencies:\n%s", b)
	}
	g0, err := os.ReadFile(filepath.Join(out, "t", "slurm", "g0.sbatch"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"#SBATCH --array=0-5", "#SBATCH --partition=gpu", "#SBATCH --gres=gpu:2", "#SBATCH --time=1:00:00",
		"#SBATCH --account=lab", "#SBATCH --qos=high", `-only "$id"`, "natsbench-runner"} {
		if !strings.Contains(string(g0), want) {
			t.Errorf("g0.sbatch lacks %q:\n%s", want, g0)
		}
	}
	if _, err := os.Stat(filepath.Join(out, "t", "slurm", "jobs.json")); err != nil {
		t.Error(err)
	}
	// Resubmission after the full models are done: one array, the h2o runs without a dependency.
	if code, log := launch(t, context.Background(), &fakeExec{}, "-sweep", sweep, "-out", out, "-only", "full*", "-no-report"); code != exitOK {
		t.Fatal(log)
	}
	os.Remove(calls)
	if code, log = launch(t, context.Background(), &fakeExec{}, "-sweep", sweep, "-out", out, "-launcher", "slurm"); code != exitOK {
		t.Fatalf("resubmit: %s", log)
	}
	b, _ = os.ReadFile(calls)
	if n := strings.Count(string(b), "\n"); n != 1 || strings.Contains(string(b), "dependency") {
		t.Errorf("resubmission: %d sbatch calls:\n%s", n, b)
	}
	g0, _ = os.ReadFile(filepath.Join(out, "t", "slurm", "g0.sbatch"))
	if !strings.Contains(string(g0), "#SBATCH --array=0-5") || strings.Contains(string(g0), "full,seed") {
		t.Errorf("resubmitted g0 should hold the 4 nats and 2 h2o runs only:\n%s", g0)
	}
	// The status view reads the folders (no squeue here: the states are only the folders').
	code, log = launch(t, context.Background(), nil, "status", "-sweep", sweep, "-out", out)
	if code != exitOK || !strings.Contains(log, "full,seed=0") || !strings.Contains(log, "2 done") {
		t.Errorf("status: %d\n%s", code, log)
	}
	// No sbatch on the PATH.
	t.Setenv("PATH", t.TempDir())
	code, log = launch(t, context.Background(), &fakeExec{}, "-sweep", sweep, "-out", out, "-launcher", "slurm")
	if code != exitFailed || !strings.Contains(log, "no sbatch on the PATH") {
		t.Errorf("no sbatch: %d\n%s", code, log)
	}
}

// TestStatusNamesFailedSource: a run whose source failed (under Slurm it is cancelled, never started) shows as
// blocked with the source's error, not as todo.
func TestStatusNamesFailedSource(t *testing.T) {
	sweep, out := setup(t)
	code, log := launch(t, context.Background(), &fakeExec{fail: "full,seed=0"}, "-sweep", sweep, "-out", out, "-only", "full,seed=0", "-no-report")
	if code != exitFailed {
		t.Fatalf("failing run: %d %s", code, log)
	}
	code, log = launch(t, context.Background(), nil, "status", "-sweep", sweep, "-out", out)
	if code != exitOK || !strings.Contains(log, "h2o,method.budget=64,seed=0") ||
		!strings.Contains(log, "blocked: source t:full,seed=0 failed (out of memory (fake))") || !strings.Contains(log, "1 failed") {
		t.Fatalf("status: %d\n%s", code, log)
	}
}
