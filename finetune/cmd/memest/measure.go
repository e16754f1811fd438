package main

import (
	"flag"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"k8s.io/klog/v2"
)

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
