// Package devmem reads how much memory a device has in use, from outside the program: a GPU's memory.used as
// nvidia-smi reports it, or the Go heap (where the pure-Go backend keeps its buffers), and polls such a reading in
// the background for its maximum. GoMLX exposes no device allocator statistics (go-xla v0.4.5 has the C call for
// PJRT_Device_MemoryStats but no Go API), hence the outside view: the whole device, so callers subtract a reading
// taken before their work began. XLA's allocator keeps what it reserved, so on CUDA the maximum is its high-water
// mark.
package devmem

import (
	"fmt"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// Sampler reads the memory in use now, in bytes.
type Sampler interface {
	Sample() (int64, error)
	Name() string
}

// GPU reads GPU Index's memory.used from nvidia-smi (MiB).
type GPU struct{ Index int }

// Name says what is read.
func (g GPU) Name() string { return fmt.Sprintf("nvidia-smi memory.used of GPU %d", g.Index) }

// Sample runs nvidia-smi once.
func (g GPU) Sample() (int64, error) {
	out, err := exec.Command("nvidia-smi", "-i", strconv.Itoa(g.Index), "--query-gpu=memory.used",
		"--format=csv,noheader,nounits").Output()
	if err != nil {
		return 0, fmt.Errorf("nvidia-smi: %w", err)
	}
	return ParseMiB(string(out))
}

// ParseMiB reads nvidia-smi's "--format=csv,noheader,nounits" answer for one GPU (MiB) as bytes.
func ParseMiB(out string) (int64, error) {
	s := strings.TrimSpace(out)
	mib, err := strconv.ParseFloat(s, 64)
	if err != nil || mib < 0 {
		return 0, fmt.Errorf("nvidia-smi memory.used %q: not a number of MiB", s)
	}
	return int64(mib * (1 << 20)), nil
}

// Heap reads the Go heap in use.
type Heap struct{}

// Name says what is read.
func (Heap) Name() string { return "Go heap in use" }

// Sample reads runtime.MemStats.HeapInuse.
func (Heap) Sample() (int64, error) {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapInuse), nil
}

// Poller samples in the background and keeps the maximum.
type Poller struct {
	stop    chan struct{}
	done    chan struct{}
	max     int64
	samples int
	err     error
}

// Start samples s now and then every interval until Stop.
func Start(s Sampler, every time.Duration) *Poller {
	p := &Poller{stop: make(chan struct{}), done: make(chan struct{})}
	sample := func() {
		v, err := s.Sample()
		if err != nil {
			p.err = err
			return
		}
		p.max = max(p.max, v)
		p.samples++
	}
	go func() {
		defer close(p.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			sample()
			select {
			case <-p.stop:
				sample() // allocators keep what they reserved: the last reading counts too
				return
			case <-t.C:
			}
		}
	}()
	return p
}

// Stop ends the polling and returns the largest reading, the number of readings and the last error, if any.
func (p *Poller) Stop() (peak int64, samples int, err error) {
	close(p.stop)
	<-p.done
	return p.max, p.samples, p.err
}
