//go:build gpu

package engine

import (
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
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
	for _, c := range []struct{ in, out int }{{1, 1}, {100, 1}, {1, 30}, {100, 30}, {16, 30}} {
		exec, err := NewExec(backend, func(xs []*Node) []*Node {
			all := Concatenate(xs, 0) // one op whatever the number of inputs
			out := []*Node{Slice(all, AxisRange(0, 8))}
			for i := 1; i < c.out; i++ {
				if i < c.in { // input i plus one, the same shape: the chained runs feed it back as input i
					out = append(out, AddScalar(Slice(all, AxisRange(8*i, 8*i+8)), 1))
				} else {
					out = append(out, Slice(all, AxisRange(0, 8-i%8)))
				}
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
		if c.out < c.in { // each call's first outputs are the next call's first inputs
			continue
		}
		chain := slices.Clone(args)
		var prev []*tensors.Tensor
		chained := func(n int) time.Duration {
			st := time.Now()
			for i := 0; i < n; i++ {
				out, err := exec.Exec(chain...)
				if err != nil {
					t.Fatal(err)
				}
				_ = tensors.MustCopyFlatData[float32](out[0])
				for j := range c.in {
					chain[j] = out[j]
				}
				for _, o := range prev {
					o.FinalizeAll()
				}
				prev = out
			}
			return time.Since(st)
		}
		chained(20)
		d = chained(300)
		for _, o := range prev {
			o.FinalizeAll()
		}
		t.Logf("exec with %3d inputs, %2d outputs, one read, inputs chained: %.1f µs/call", c.in, c.out, float64(d.Microseconds())/300)
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

// envInt is the integer in environment variable k, or def when it is unset.
func envInt(t *testing.T, k string, def int) int {
	if s := os.Getenv(k); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("%s=%q: %v", k, s, err)
		}
		return n
	}
	return def
}

// shape8B is the 8B-shaped attention of sweeps/latency32k.toml: d 4096, 32 heads, 8 KV heads, 8 layers, bf16.
func shape8B() model.Config {
	return model.Config{VocabSize: 50304, DModel: 4096, NLayers: 8, NHeads: 32, NKVHeads: 8, FFNMult: 4, MaxSeqLen: 33024,
		RopeTheta: 500000, RopeScaling: "none", DType: "bfloat16"}
}

// TestGPUStepGraph times the decoding step graph alone — the device part of a step, with no host table — on the
// 8B-shaped attention of sweeps/latency32k.toml (d 4096, 32 heads, 8 KV heads, 8 layers, bf16) at a batch
// (NATSBENCH_STEP_BATCH, default 32) and capacities (NATSBENCH_STEP_RUNS, default "full:33792,nats:2560": full
// attention's and NAtS's buffers at 32k in results/latency32k). The buffers hold zeros and every slot is valid: a
// step's device time does not depend on the values. NATSBENCH_STEP_N sets the steps per timed repeat (default 50).
func TestGPUStepGraph(t *testing.T) {
	backend := sharedGPU(t)
	B := envInt(t, "NATSBENCH_STEP_BATCH", 32)
	runs := "full:33792,nats:2560"
	if s := os.Getenv("NATSBENCH_STEP_RUNS"); s != "" {
		runs = s
	}
	cfg := shape8B()
	L, KV, d := cfg.NLayers, cfg.KVHeads(), cfg.DModel
	for _, run := range strings.Split(runs, ",") {
		name, capS, _ := strings.Cut(run, ":")
		capacity, err := strconv.Atoi(capS)
		if err != nil {
			t.Fatalf("NATSBENCH_STEP_RUNS %q: %v", run, err)
		}
		var m model.Masker
		var ev kvcache.Evictor
		if name == "nats" {
			m, ev = mustNAtS(t, nats.Config{Window: 16, Chunk: 1, GlobalBonus: 0.1}), policy.NAtS{Window: 16}
		}
		start := time.Now()
		e, err := New(backend, cfg, m, ev, model.NewParams(model.Specs(cfg, m), 1), Options{})
		if err != nil {
			t.Fatal(err)
		}
		if err := e.reset(B, capacity); err != nil {
			t.Fatal(err)
		}
		R := e.Options.Staging
		w := capacity + R
		ones := make([]float32, L*B*KV*w)
		for i := range ones {
			ones[i] = 1
		}
		valid := tensors.FromFlatDataAndDimensions(ones, L, B, KV, w)
		state := tensors.FromFlatDataAndDimensions(make([]float32, L*B*d), L, B, d)
		U := 4096 // as a step after evictions: L·B·KV staging marks, padded
		ui, uv := make([]int32, U), make([]float32, U)
		for i := range ui {
			ui[i] = int32(i * (w - 1) % (L * B * KV * w))
		}
		small := stepSmall(make([]int32, B), 100, 3, ui, uv)
		if err := e.toDevice(valid, state, small); err != nil {
			t.Fatal(err)
		}
		args := e.stepArgs(small, e.Kr, e.Vr, valid, state)
		step := func() {
			out, err := e.stepExec.Exec(args...)
			if err != nil {
				t.Fatal(err)
			}
			_ = tensors.MustCopyFlatData[int32](out[2*L+2])
			for _, o := range out {
				o.FinalizeAll()
			}
		}
		step()
		t.Logf("%s: engine, buffers and the step's compile: %.1f s", name, time.Since(start).Seconds())
		for i := 0; i < 5; i++ {
			step()
		}
		n := envInt(t, "NATSBENCH_STEP_N", 50)
		var times []float64
		for rep := 0; rep < 3; rep++ {
			st := time.Now()
			for i := 0; i < n; i++ {
				step()
			}
			times = append(times, float64(time.Since(st).Microseconds())/1e3/float64(n))
		}
		slices.Sort(times)
		fmt.Printf("step-graph %-5s batch %d cap %6d: %.3f ms/step (median of 3×%d; min %.3f max %.3f); K/V %.2f GB\n",
			name, B, capacity, times[1], n, times[0], times[2], float64(e.cacheBytes(B, capacity))/1e9)
		e.Release()
		for _, c := range e.conv {
			c.FinalizeAll()
		}
	}
}

// TestGPUEngineVsGraph compares, in one process, the engine's decoding step with its step graph called alone on
// the engine's own buffers, on the 8B-shaped attention (NATSBENCH_ENGINE_RUNS, default "full,nats"; batch
// NATSBENCH_STEP_BATCH, default 32; prompt NATSBENCH_ENGINE_PROMPT tokens, default 4096): Decode's parts per step,
// then the graph alone (the same arguments every call, outputs freed at once), the graph with the small arguments
// uploaded every call as Decode does, and the graph chained (each call's staging, validity and state the next
// call's inputs, freed after the next read, as Decode does).
func TestGPUEngineVsGraph(t *testing.T) {
	backend := sharedGPU(t)
	B, P := envInt(t, "NATSBENCH_STEP_BATCH", 32), envInt(t, "NATSBENCH_ENGINE_PROMPT", 4096)
	runs := "full,nats"
	if s := os.Getenv("NATSBENCH_ENGINE_RUNS"); s != "" {
		runs = s
	}
	cfg := shape8B()
	if os.Getenv("NATSBENCH_STEP_SMALL") != "" { // a check of the test itself on the pure-Go backend
		cfg = model.Config{VocabSize: 256, DModel: 64, NLayers: 2, NHeads: 4, NKVHeads: 2, FFNMult: 4, MaxSeqLen: 4096,
			RopeTheta: 500000, RopeScaling: "none", DType: "float32"}
	}
	L, KV := cfg.NLayers, cfg.KVHeads()
	for _, name := range strings.Split(runs, ",") {
		var m model.Masker
		var ev kvcache.Evictor
		if name == "nats" {
			m, ev = mustNAtS(t, nats.Config{Window: 16, Chunk: 1, GlobalBonus: 0.1}), policy.NAtS{Window: 16}
		}
		start := time.Now()
		e, err := New(backend, cfg, m, ev, model.NewParams(model.Specs(cfg, m), 1), Options{MaxNewTokens: 256})
		if err != nil {
			t.Fatal(err)
		}
		if m != nil {
			c, err := CalibrateRoles(e, randTokens(rand.New(rand.NewPCG(1, 1)), 2, 1024, cfg.VocabSize), RoleRates{Global: 0.045, Local: 0.05, Window: 0.905}, 1)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: calibrated, embeddings ×%g", name, c.EmbedScale)
		}
		if _, err := e.Prefill(randTokens(rand.New(rand.NewPCG(2, 2)), B, P, cfg.VocabSize), 256); err != nil {
			t.Fatal(err)
		}
		if _, err := e.Decode(64); err != nil { // compiles the step and commit graphs
			t.Fatal(err)
		}
		t.Logf("%s: engine, prefill of %d and warm-up: %.1f s", name, P, time.Since(start).Seconds())
		n := 64
		r, err := e.Decode(n)
		if err != nil {
			t.Fatal(err)
		}
		k := float64(len(r.StepSeconds)) / 1e3
		fmt.Printf("engine %-5s batch %d prompt %d cap %5d: %.3f ms/step: device %.3f, host table %.3f, commit %.3f, arguments %.3f, outputs %.3f\n",
			name, B, P, e.devCap, r.Seconds/k, r.DeviceSeconds/k, r.HostSeconds/k, r.CommitSeconds/k, r.PrepSeconds/k, r.OutputSeconds/k)

		R := e.Options.Staging
		w := e.devCap + R
		rows := L * B * KV
		mk := func() *tensors.Tensor {
			ix, vs := make([]int32, e.updCap), make([]float32, e.updCap)
			for i := range ix {
				ix[i] = int32(i % (rows * w))
			}
			for r := 0; r < rows && r < len(ix); r++ {
				ix[r], vs[r] = int32(r*w+e.devCap+3), 1
			}
			return stepSmall(make([]int32, B), e.pos, 3, ix, vs)
		}
		small := mk()
		if err := e.toDevice(small); err != nil {
			t.Fatal(err)
		}
		kr, vr, valid, state := slices.Clone(e.Kr), slices.Clone(e.Vr), e.valid, e.state
		call := func(small *tensors.Tensor) []*tensors.Tensor {
			out, err := e.stepExec.Exec(e.stepArgs(small, kr, vr, valid, state)...)
			if err != nil {
				t.Fatal(err)
			}
			_ = tensors.MustCopyFlatData[int32](out[2*L+2])
			return out
		}
		timeIt := func(what string, f func()) {
			for i := 0; i < 5; i++ {
				f()
			}
			st := time.Now()
			for i := 0; i < 50; i++ {
				f()
			}
			fmt.Printf("  %-5s %-34s %.3f ms/step\n", name, what, float64(time.Since(st).Microseconds())/1e3/50)
		}
		free := func(ts []*tensors.Tensor) {
			for _, o := range ts {
				o.FinalizeAll()
			}
		}
		timeIt("graph alone", func() { free(call(small)) })
		timeIt("graph, small arguments uploaded", func() {
			sm := mk()
			if err := e.toDevice(sm); err != nil {
				t.Fatal(err)
			}
			free(call(sm))
			free([]*tensors.Tensor{sm})
		})
		// chained: the named inputs of each call are outputs of the call lag calls before (freed when no longer used).
		kr0, vr0, valid0, state0 := kr, vr, valid, state
		chained := func(what string, lag int, useKV, useValid, useState bool) {
			var hist [][]*tensors.Tensor
			kr, vr, valid, state = kr0, vr0, valid0, state0
			timeIt(what, func() {
				out := call(small)
				hist = append(hist, out)
				if len(hist) >= lag {
					src := hist[len(hist)-lag]
					if useKV {
						kr, vr = src[:L], src[L:2*L]
					}
					if useValid {
						valid = src[2*L]
					}
					if useState {
						state = src[2*L+1]
					}
				}
				if len(hist) > lag+1 {
					free(hist[0])
					hist = hist[1:]
				}
			})
			for _, h := range hist {
				free(h)
			}
			kr, vr, valid, state = kr0, vr0, valid0, state0
		}
		chained("graph chained", 1, true, true, true)
		chained("graph chained, staging K/V only", 1, true, false, false)
		chained("graph chained, validity only", 1, false, true, false)
		chained("graph chained, state only", 1, false, false, true)
		chained("graph chained with lag 2", 2, true, true, true)
		e.Release()
		for _, c := range e.conv {
			c.FinalizeAll()
		}
	}
}
