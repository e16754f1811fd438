//go:build gpu

package engine

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gomlx/compute"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"

	"natsbench/kvcache"
	"natsbench/model"
	"natsbench/nats"
	"natsbench/policy"
)

// GPU tests: go test -tags 'xla gpu' -run GPU ./engine/ on a CUDA machine (NATSBENCH_BACKEND, default xla:cuda).

func gpuBackend(t *testing.T) compute.Backend {
	spec := os.Getenv("NATSBENCH_BACKEND")
	if spec == "" {
		spec = "xla:cuda"
	}
	b, err := model.NewBackend(spec)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var gpuOnce struct {
	b compute.Backend
}

func sharedGPU(t *testing.T) compute.Backend {
	if gpuOnce.b == nil {
		gpuOnce.b = gpuBackend(t)
	}
	return gpuOnce.b
}

// TestGPUEqualsForward is TestEngineEqualsMaskedForward on the accelerator (float32).
// XLA's GPU kernels reduce in another order than the forward pass's, hence 5e-4.
func TestGPUEqualsForward(t *testing.T) { checkEqualsForward(t, sharedGPU(t), 5e-4) }

// execOverhead logs the cost of a graph call (launch plus one read of a small output) by number of inputs and
// outputs.
func execOverhead(t *testing.T, backend compute.Backend) {
	for _, c := range []struct{ in, out int }{{1, 1}, {100, 1}, {1, 30}, {100, 30}} {
		exec, err := NewExec(backend, func(xs []*Node) []*Node {
			all := Concatenate(xs, 0) // one op whatever the number of inputs
			out := []*Node{Slice(all, AxisRange(0, 8))}
			for i := 1; i < c.out; i++ {
				out = append(out, Slice(all, AxisRange(0, 8-i%8)))
			}
			return out
		})
		if err != nil {
			t.Fatal(err)
		}
		args := make([]any, c.in)
		for i := range args {
			args[i] = tensors.FromFlatDataAndDimensions(make([]float32, 8), 8)
		}
		run := func(n int) time.Duration {
			st := time.Now()
			for i := 0; i < n; i++ {
				out, err := exec.Exec(args...)
				if err != nil {
					t.Fatal(err)
				}
				_ = tensors.MustCopyFlatData[float32](out[0])
			}
			return time.Since(st)
		}
		run(20)
		d := run(300)
		t.Logf("exec with %3d inputs, %2d outputs, one read: %.1f µs/call", c.in, c.out, float64(d.Microseconds())/300)
	}
}

// TestGPUExecOverhead is the cost of a graph call by number of inputs and outputs on the accelerator.
func TestGPUExecOverhead(t *testing.T) { execOverhead(t, sharedGPU(t)) }

// TestGPUFigure4 measures prefill and decoding latency and cache memory of the reference model (bf16) for full
// attention, StreamingLLM and calibrated NAtS at several prompt lengths (NATSBENCH_LENGTHS, comma separated).
func TestGPUFigure4(t *testing.T) {
	backend := sharedGPU(t)
	lengths := []int{2000, 8000, 32000}
	if s := os.Getenv("NATSBENCH_LENGTHS"); s != "" {
		lengths = nil
		for _, f := range strings.Split(s, ",") {
			n, err := strconv.Atoi(f)
			if err != nil {
				t.Fatal(err)
			}
			lengths = append(lengths, n)
		}
	}
	cfg := model.DefaultConfig()
	cfg.DType = "bfloat16"
	cfg.MaxSeqLen = 32768
	nm := mustNAtS(t, nats.Config{Window: 16, Chunk: 1, GlobalBonus: 0.1})
	nc := mustNAtS(t, nats.Config{Window: 16, Chunk: 8, GlobalBonus: 0.1})
	type meth struct {
		name string
		m    model.Masker
		ev   kvcache.Evictor
	}
	ms := []meth{
		{"full", nil, nil},
		{"streamingllm", nil, policy.StreamingLLM{Sinks: 4, Budget: 256}},
		{"nats", nm, policy.NAtS{Window: 16}},
		{"nats-chunk8", nc, policy.NAtS{Window: 16, Chunk: 8}},
	}
	if s := os.Getenv("NATSBENCH_METHODS"); s != "" {
		var keep []meth
		for _, m := range ms {
			if strings.Contains(","+s+",", ","+m.name+",") {
				keep = append(keep, m)
			}
		}
		ms = keep
	}
	fmt.Printf("%-13s %6s %10s %10s %9s %9s %8s %8s %8s %7s %12s %10s %8s\n", "method", "len", "prefill_s", "prefill90", "dec_ms", "dec90", "host_ms", "dev_ms", "floor", "x_floor", "cache_MB", "kv_frac", "cap")
	for _, m := range ms {
		e, err := New(backend, cfg, m.m, m.ev, model.NewParams(model.Specs(cfg, m.m), 1), Options{Staging: 64})
		if err != nil {
			t.Fatal(err)
		}
		if m.m != nil {
			got, err := CalibrateRoles(e, randTokens(rand.New(rand.NewPCG(1, 1)), 2, 1024, cfg.VocabSize), RoleRates{Global: 0.05, Local: 0.15, Window: 0.8}, 1)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Printf("# %s calibrated rates layer 0: %v, last: %v (embeddings ×%g)\n", m.name, got.Rates[0], got.Rates[len(got.Rates)-1], got.EmbedScale)
		}
		if bw, err := MeasureBandwidth(backend, 1<<30, 20); err == nil && m.name == "full" {
			fmt.Printf("# copy bandwidth (1 GiB buffer): %.0f GB/s\n", bw/1e9)
		}
		for _, n := range lengths {
			r, err := Measure(e, MeasureOptions{Method: m.name, PromptLen: n, Chunk: 2048, DecodeTokens: 64, Warmup: 1, Repeats: 3})
			if err != nil {
				t.Fatal(err)
			}
			fmt.Printf("%-13s %6d %10.4f %10.4f %9.3f %9.3f %8.3f %8.3f %8.4f %7.1f %12.2f %10.4f %8d\n", m.name, n, r.PrefillMedian, r.PrefillP90,
				r.DecodeMedian, r.DecodeP90, r.HostMsPerToken, r.DeviceMsPerToken, r.FloorMs, r.DecodeOverFloor, float64(r.PeakCacheBytes)/1e6, r.KVFraction, r.Cap)
		}
	}
}
