package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestStatusMetricsEqualAcrossOutputs(t *testing.T) {
	sweep, out := setup(t)
	out2 := out + "2"
	for _, o := range []string{out, out2} {
		if code, log := launch(t, context.Background(), &fakeExec{}, "-sweep", sweep, "-out", o, "-no-report"); code != exitOK {
			t.Fatalf("exit %d:\n%s", code, log)
		}
	}
	_, a := launch(t, context.Background(), nil, "status", "-sweep", sweep, "-out", out, "-metrics")
	_, b := launch(t, context.Background(), nil, "status", "-sweep", sweep, "-out", out2, "-metrics")
	// fakeExec: 5 rows per trained run (full ×2, nats ×4), 2 per evaluated run (h2o ×2).
	if a != b || strings.Count(a, "\n") != 2*5+4*5+2*2 || !strings.Contains(a, "full,seed=0\tpg19\ttest\tppl\t-1\t64\t31\t100\n") {
		t.Errorf("metrics differ or are wrong:\n%s\n---\n%s", a, b)
	}
	var h2o string
	for _, r := range expand(t, sweep, false) {
		if r.Key == "h2o,method.budget=64,seed=1" {
			h2o = r.ID
		}
	}
	os.Remove(filepath.Join(out2, "t", h2o, "DONE"))
	if code, log := launch(t, context.Background(), nil, "status", "-sweep", sweep, "-out", out2, "-metrics"); code != exitFailed ||
		!strings.Contains(log, "run h2o,method.budget=64,seed=1 (id "+h2o+") is not DONE") {
		t.Errorf("a run not DONE is not named: exit %d\n%s", code, log)
	}
}
