package devmem

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

func TestParseMiB(t *testing.T) {
	for in, want := range map[string]int64{"1024\n": 1 << 30, " 0 ": 0, "143771": 143771 << 20} {
		if got, err := ParseMiB(in); err != nil || got != want {
			t.Errorf("ParseMiB(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "N/A", "[Not Supported]", "-5", "1024\n2048"} {
		if _, err := ParseMiB(in); err == nil {
			t.Errorf("ParseMiB(%q): no error", in)
		}
	}
}

// ramp returns 10, 20, 30, … and fails when told to.
type ramp struct {
	n    atomic.Int64
	fail atomic.Bool
}

func (r *ramp) Name() string { return "ramp" }
func (r *ramp) Sample() (int64, error) {
	if r.fail.Load() {
		return 0, errors.New("gone")
	}
	return 10 * r.n.Add(1), nil
}

// TestPoller: the maximum over every reading, the one at Stop included; the error of a failed reading is kept.
func TestPoller(t *testing.T) {
	r := &ramp{}
	p := Start(r, time.Millisecond)
	time.Sleep(20 * time.Millisecond)
	peak, n, err := p.Stop()
	if err != nil || n < 2 || peak != 10*int64(n) {
		t.Fatalf("peak %d over %d readings, err %v: want the last (and largest) reading, 10·n", peak, n, err)
	}
	r.fail.Store(true)
	p = Start(r, time.Millisecond)
	if _, _, err := p.Stop(); err == nil {
		t.Fatal("a failing sampler gave no error")
	}
}
