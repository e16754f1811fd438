package main

import (
	"flag"
	"fmt"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"k8s.io/klog/v2"
)

// memSampler reads the memory in use now, in bytes.
type memSampler interface {
	Sample() (int64, error)
	Name() string
}

// gpuSampler reads a GPU's memory.used from nvidia-smi (MiB): the whole device, so the probe subtracts what was in
// use before its backend opened. GoMLX exposes no device allocator statistics (go-xla v0.4.5 has the C call for
// PJRT_Device_MemoryStats but no Go API), hence the outside view.
type gpuSampler struct{ index int }

func (g *gpuSampler) Name() string { return fmt.Sprintf("nvidia-smi memory.used of GPU %d", g.index) }

func (g *gpuSampler) Sample() (int64, error) {
	out, err := exec.Command("nvidia-smi", "-i", strconv.Itoa(g.index), "--query-gpu=memory.used",
		"--format=csv,noheader,nounits").Output()
	if err != nil {
		return 0, fmt.Errorf("nvidia-smi: %w", err)
	}
	mib, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
	if err != nil {
		return 0, fmt.Errorf("nvidia-smi memory.used %q: %w", strings.TrimSpace(string(out)), err)
	}
	return int64(mib * (1 << 20)), nil
}

// heapSampler reads the Go heap in use: where the pure-Go backend keeps its buffers.
type heapSampler struct{}

func (heapSampler) Name() string { return "Go heap in use" }

func (heapSampler) Sample() (int64, error) {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapInuse), nil
}

// poller samples in the background and keeps the maximum.
type poller struct {
	stop    chan struct{}
	done    chan struct{}
	max     int64
	samples int
	err     error
}

func startPolling(s memSampler, every time.Duration) *poller {
	p := &poller{stop: make(chan struct{}), done: make(chan struct{})}
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
func (p *poller) Stop() (int64, int, error) {
	close(p.stop)
	<-p.done
	return p.max, p.samples, p.err
}

// xlaPlan is go-xla's report of a compiled program's device memory (pjrt.ExecutableMemoryUsageStats).
type xlaPlan struct {
	Line                                               string
	Code, Inputs, Outputs, Aliases, Temporary, Unknown int64
}

// Total is what the program needs on the device: code + inputs + outputs − aliases + temporaries.
func (p xlaPlan) Total() int64 { return p.Code + p.Inputs + p.Outputs - p.Aliases + p.Temporary }

// xlaMemLog collects the "Memory usage: On Device: [...]" lines go-xla logs at klog verbosity 1 after compiling a
// program; other klog output at that verbosity is dropped.
type xlaMemLog struct {
	mu    sync.Mutex
	plans []xlaPlan
}

// captureXLAMemoryLog routes klog (verbosity 1, no stderr below errors) into a new xlaMemLog.
func captureXLAMemoryLog() *xlaMemLog {
	x := &xlaMemLog{}
	fs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(fs)
	for k, v := range map[string]string{"v": "1", "logtostderr": "false", "alsologtostderr": "false"} {
		_ = fs.Set(k, v)
	}
	klog.SetOutput(x)
	return x
}

func (x *xlaMemLog) Write(b []byte) (int, error) {
	for _, line := range strings.Split(string(b), "\n") {
		if p, ok := parseXLAPlan(line); ok {
			x.mu.Lock()
			x.plans = append(x.plans, p)
			x.mu.Unlock()
		}
	}
	return len(b), nil
}

// Largest returns the plan of the largest program compiled so far.
func (x *xlaMemLog) Largest() (xlaPlan, bool) {
	klog.Flush()
	x.mu.Lock()
	defer x.mu.Unlock()
	var best xlaPlan
	for _, p := range x.plans {
		if p.Total() > best.Total() {
			best = p
		}
	}
	return best, len(x.plans) > 0
}

var (
	planRE  = regexp.MustCompile(`On Device: \[([^\]]*)\]`)
	fieldRE = regexp.MustCompile(`(\w+):\s*([0-9.]+)\s*([kKMGTPE]?i?B)`)
)

// parseXLAPlan reads a go-xla "Memory usage: On Device: [Code:1.2 MiB, Inputs:16.0 GiB, ...]" line (sizes written
// by compute/support/humanize.Bytes: binary units, one decimal; "kB"-style SI units are read as powers of 1000).
func parseXLAPlan(line string) (xlaPlan, bool) {
	m := planRE.FindStringSubmatch(line)
	if m == nil {
		return xlaPlan{}, false
	}
	p := xlaPlan{Line: "[" + m[1] + "]"}
	for _, f := range fieldRE.FindAllStringSubmatch(m[1], -1) {
		v, err := strconv.ParseFloat(f[2], 64)
		if err != nil {
			continue
		}
		b := int64(v * unitBytes(f[3]))
		switch f[1] {
		case "Code":
			p.Code = b
		case "Inputs":
			p.Inputs = b
		case "Outputs":
			p.Outputs = b
		case "Aliases":
			p.Aliases = b
		case "Temporary":
			p.Temporary = b
		default:
			p.Unknown += b
		}
	}
	return p, true
}

func unitBytes(u string) float64 {
	base := 1000.0
	if strings.Contains(u, "i") {
		base = 1024
	}
	switch strings.ToUpper(u[:1]) {
	case "K":
		return base
	case "M":
		return base * base
	case "G":
		return base * base * base
	case "T":
		return base * base * base * base
	case "P":
		return base * base * base * base * base
	case "E":
		return base * base * base * base * base * base
	}
	return 1
}
