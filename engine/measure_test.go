package engine

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"natsbench/kvcache"
	"natsbench/model"
	"natsbench/nats"
	"natsbench/policy"
)

// TestCalibrateRoles: after calibration a random model's roles come out at the requested rates on the calibration
// prompts (every layer), close to them on held-out prompts, and the engine's KV fraction reflects them.
func TestCalibrateRoles(t *testing.T) {
	cfg := tiny()
	cfg.MaxSeqLen = 256
	backend := testBackend(t)
	for _, c := range []struct {
		chunk int
		merge string
		rates RoleRates
	}{
		{1, "mean", RoleRates{Global: 0.1, Local: 0.2, Window: 0.7}},
		{4, "mean", RoleRates{Global: 0.25, Local: 0.05, Window: 0.7}},
		{2, "max", RoleRates{Global: 0.6, Local: 0.4}},
	} {
		nm := mustNAtS(t, nats.Config{Window: 4, Chunk: c.chunk, Merge: c.merge, GlobalBonus: 0.1})
		e, err := New(backend, cfg, nm, policy.NAtS{Window: 4, Chunk: c.chunk}, model.NewParams(model.Specs(cfg, nm), 5), Options{})
		if err != nil {
			t.Fatal(err)
		}
		r := rand.New(rand.NewPCG(1, uint64(c.chunk)))
		calib := randTokens(r, 4, 160, cfg.VocabSize)
		cal, err := CalibrateRoles(e, calib, c.rates, 7)
		got := cal.Rates
		if err != nil {
			t.Fatal(err)
		}
		for l, g := range got {
			if !ratesNear(g, c.rates, 0.02) {
				t.Errorf("chunk %d layer %d: calibration rates %v, want %v", c.chunk, l, g, c.rates)
			}
		}
		held := randTokens(r, 4, 160, cfg.VocabSize)
		_, roles, T, err := e.probe(held)
		if err != nil {
			t.Fatal(err)
		}
		for l, g := range e.roleRates(roles, 4, 160, T) {
			if !ratesNear(g, c.rates, 0.12) {
				t.Errorf("chunk %d layer %d: held-out rates %v, want about %v", c.chunk, l, g, c.rates)
			}
		}
		if _, err := e.Prefill(held, 32); err != nil {
			t.Fatal(err)
		}
		t.Logf("chunk %d %s: rates %v → KV fraction %.3f after %d tokens (cap %d)", c.chunk, c.merge, got, e.KVFraction(), e.Len(), e.Cap())
	}
}

// TestCalibratedRatesHoldAtLength: on a model whose blocks outgrow its embeddings (hd 128 like Llama's; before
// CalibrateRoles scaled the embeddings, layer 1 decided Global 1.8% of the time at 2,048 tokens against the 4.5%
// it was calibrated to on 256), the roles keep their calibrated rates on a prompt 8× longer than the calibration's,
// and no row holds much more than the mean.
func TestCalibratedRatesHoldAtLength(t *testing.T) {
	cfg := model.Config{VocabSize: 512, DModel: 256, NLayers: 3, NHeads: 2, NKVHeads: 1, FFNMult: 4, MaxSeqLen: 2048,
		RopeTheta: 500000, RopeScaling: "none", DType: "float32"}
	nm := mustNAtS(t, nats.Config{Window: 16, Chunk: 1, Merge: "mean", GlobalBonus: 0.1})
	e, err := New(testBackend(t), cfg, nm, policy.NAtS{Window: 16, Chunk: 1}, model.NewParams(model.Specs(cfg, nm), 5), Options{})
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 1))
	want := RoleRates{Global: 0.045, Local: 0.05, Window: 0.905}
	cal, err := CalibrateRoles(e, randTokens(r, 2, 256, cfg.VocabSize), want, 1)
	if err != nil {
		t.Fatal(err)
	}
	if cal.EmbedScale <= 1 || cal.CommonShare < minCommonShare {
		t.Errorf("embeddings ×%g, common share %.3f: want them scaled up until the share reaches %g", cal.EmbedScale, cal.CommonShare, minCommonShare)
	}
	if _, err := e.Prefill(randTokens(r, 1, 2048, cfg.VocabSize), 256); err != nil {
		t.Fatal(err)
	}
	for l, g := range e.RoleRates() {
		if math.Abs(g.Global-want.Global) > 0.015 || math.Abs(g.Local-want.Local) > 0.025 {
			t.Errorf("layer %d: rates %v at 2,048 tokens, calibrated to %v on 256", l, g, want)
		}
	}
	if mean := e.KVTokens(); float64(e.MaxRowTokens()) > 1.4*mean {
		t.Errorf("fullest row %d tokens, mean %.1f", e.MaxRowTokens(), mean)
	}
}

func ratesNear(a, b RoleRates, tol float64) bool {
	return math.Abs(a.Global-b.Global) <= tol && math.Abs(a.Local-b.Local) <= tol && math.Abs(a.Window-b.Window) <= tol
}

// TestMeasure: Measure runs warm-up and timed repeats, reports consistent sizes, and NAtS with few Global tokens
// keeps a small cache next to full attention.
func TestMeasure(t *testing.T) {
	cfg := tiny()
	cfg.MaxSeqLen = 512
	backend := testBackend(t)
	nm := mustNAtS(t, nats.Config{Window: 8, Chunk: 1, GlobalBonus: 0.1})
	full, _ := New(backend, cfg, nil, nil, model.NewParams(model.Specs(cfg, nil), 1), Options{})
	sparse, _ := New(backend, cfg, nm, policy.NAtS{Window: 8}, model.NewParams(model.Specs(cfg, nm), 1), Options{})
	calib := randTokens(rand.New(rand.NewPCG(3, 3)), 2, 200, cfg.VocabSize)
	if _, err := CalibrateRoles(sparse, calib, RoleRates{Global: 0.05, Local: 0.15, Window: 0.8}, 1); err != nil {
		t.Fatal(err)
	}
	opt := MeasureOptions{PromptLen: 384, Chunk: 128, DecodeTokens: 8, Warmup: 1, Repeats: 2, CopyBytes: 1 << 20}
	var res []Result
	for _, c := range []struct {
		name string
		e    *Engine
	}{{"full", full}, {"nats", sparse}} {
		opt.Method = c.name
		var log strings.Builder
		opt.Log = &log
		r, err := Measure(c.e, opt)
		if err != nil {
			t.Fatal(err)
		}
		// One progress line per run, and the step's parts: disjoint intervals of each step, so (medians over two runs
		// being means) they add up to at most the decode time per token.
		if n := strings.Count(log.String(), "\n"); n != opt.Warmup+opt.Repeats || !strings.Contains(log.String(), "timed run 2/2") {
			t.Fatalf("%s: progress lines:\n%s", c.name, log.String())
		}
		parts := r.HostMsPerToken + r.DeviceMsPerToken + r.CommitMsPerToken + r.PrepMsPerToken + r.OutputMsPerToken
		if r.DeviceMsPerToken <= 0 || r.PrepMsPerToken <= 0 || r.OutputMsPerToken <= 0 || parts > r.DecodeMedian*(1+1e-9) {
			t.Fatalf("%s: parts host %v device %v commit %v prep %v output %v, decode %v ms/token", c.name, r.HostMsPerToken,
				r.DeviceMsPerToken, r.CommitMsPerToken, r.PrepMsPerToken, r.OutputMsPerToken, r.DecodeMedian)
		}
		if len(r.PrefillSeconds) != 2 || len(r.DecodeMsPerToken) != 2 || r.DecodeMedian <= 0 || r.PrefillMedian <= 0 {
			t.Fatalf("%s: timings %+v", c.name, r)
		}
		if r.KVBytesPerStep != c.e.cacheBytes(1, r.Cap) || r.PeakCacheBytes < r.KVBytesPerStep || r.PeakChunkBytes <= r.PeakCacheBytes {
			t.Fatalf("%s: sizes %+v", c.name, r)
		}
		if r.BandwidthBytesPerSecond <= 0 || r.FloorMs <= 0 || r.BufferFloorMs < r.FloorMs {
			t.Fatalf("%s: floor %+v", c.name, r)
		}
		if r.LiveBytes <= 0 {
			t.Fatalf("%s: no live bytes on the go backend", c.name)
		}
		if len(r.Rows()) < 12 {
			t.Fatalf("%s: %d rows", c.name, len(r.Rows()))
		}
		if r.MaxRowTokens > r.Cap || float64(r.MaxRowTokens) < r.KVTokens {
			t.Fatalf("%s: fullest row %d slots, mean %.1f, capacity %d", c.name, r.MaxRowTokens, r.KVTokens, r.Cap)
		}
		got := map[string]float64{}
		for _, row := range r.Rows() {
			got[row.Metric] = row.Value
		}
		if v, ok := got["prep_ms_per_token"]; !ok || v != r.PrepMsPerToken {
			t.Fatalf("%s: prep_ms_per_token row %v (present %v), want %v", c.name, v, ok, r.PrepMsPerToken)
		}
		if v, ok := got["overlap_ms_per_token"]; !ok || v != r.OverlapMsPerToken || v <= 0 {
			t.Fatalf("%s: overlap_ms_per_token row %v (present %v), want %v > 0", c.name, v, ok, r.OverlapMsPerToken)
		}
		if v, ok := got["output_ms_per_token"]; !ok || v != r.OutputMsPerToken {
			t.Fatalf("%s: output_ms_per_token row %v (present %v), want %v", c.name, v, ok, r.OutputMsPerToken)
		}
		if v, ok := got["cache_slots"]; !ok || v != float64(r.Cap) {
			t.Fatalf("%s: cache_slots row %v (present %v), capacity %d", c.name, v, ok, r.Cap)
		}
		if v, ok := got["max_row_kv_tokens"]; !ok || v != float64(r.MaxRowTokens) {
			t.Fatalf("%s: max_row_kv_tokens row %v (present %v), fullest row %d", c.name, v, ok, r.MaxRowTokens)
		}
		// NAtS: role rows are the mean over layers of the decisions; the fullest row set the grown capacity.
		if c.name == "nats" {
			var g, l, w float64
			for _, x := range r.RoleRates {
				g, l, w = g+x.Global/float64(cfg.NLayers), l+x.Local/float64(cfg.NLayers), w+x.Window/float64(cfg.NLayers)
			}
			if len(r.RoleRates) != cfg.NLayers || math.Abs(got["role_global_rate"]-g) > 1e-12 || math.Abs(got["role_local_rate"]-l) > 1e-12 ||
				math.Abs(got["role_window_rate"]-w) > 1e-12 || math.Abs(g+l+w-1) > 1e-9 || g == 0 || w == 0 {
				t.Fatalf("nats: role rows %v %v %v, per layer %v", got["role_global_rate"], got["role_local_rate"], got["role_window_rate"], r.RoleRates)
			}
			if r.MaxRowTokens <= 16 || r.Cap != kvcache.BucketSteps(r.MaxRowTokens, 4) {
				t.Fatalf("nats: fullest row %d in capacity %d, want capacity BucketSteps(fullest row)", r.MaxRowTokens, r.Cap)
			}
		} else if _, ok := got["role_global_rate"]; ok {
			t.Fatalf("%s: role rows for a policy without roles", c.name)
		}
		t.Logf("%s: prefill %.1f ms, decode %.3f ms/token (host %.3f), cap %d, kv fraction %.3f, cache %d B, floor %.4f ms",
			c.name, 1e3*r.PrefillMedian, r.DecodeMedian, r.HostMsPerToken, r.Cap, r.KVFraction, r.PeakCacheBytes, r.FloorMs)
		res = append(res, r)
	}
	if res[0].KVFraction != 1 || res[0].Cap != 512 || res[0].MaxRowTokens != 384+8 {
		t.Fatalf("full attention: KV fraction %v cap %d fullest row %d (want 392: prompt + the 8 fed decoding steps)", res[0].KVFraction, res[0].Cap, res[0].MaxRowTokens)
	}
	if res[1].KVFraction > 0.2 || res[1].PeakCacheBytes*3 > res[0].PeakCacheBytes {
		t.Fatalf("NAtS at ~5%% Global keeps %.3f of the tokens in %d bytes (full: %d)", res[1].KVFraction, res[1].PeakCacheBytes, res[0].PeakCacheBytes)
	}
}

// BenchmarkDecodeStep times one greedy decoding step on the pure-Go backend after a 448-token prompt (d_model 64,
// 4 layers, 8 heads, vocabulary 512) for full attention, StreamingLLM and calibrated NAtS (5% Global).
func BenchmarkDecodeStep(b *testing.B) {
	cfg := model.Config{VocabSize: 512, DModel: 64, NLayers: 4, NHeads: 8, FFNMult: 4, MaxSeqLen: 1024,
		RopeTheta: 500000, RopeScaling: "llama3", DType: "float32"}
	backend := testBackend(b)
	nm := mustNAtS(b, nats.Config{Window: 16, Chunk: 1, GlobalBonus: 0.1})
	const P = 448
	for _, c := range []struct {
		name string
		m    model.Masker
		ev   any
	}{
		{"full", nil, nil},
		{"streamingllm", nil, policy.StreamingLLM{Sinks: 4, Budget: 64}},
		{"nats", nm, policy.NAtS{Window: 16}},
	} {
		b.Run(c.name, func(b *testing.B) {
			var e *Engine
			var err error
			params := model.NewParams(model.Specs(cfg, c.m), 1)
			switch ev := c.ev.(type) {
			case nil:
				e, err = New(backend, cfg, c.m, nil, params, Options{MaxNewTokens: 512})
			case policy.StreamingLLM:
				e, err = New(backend, cfg, c.m, ev, params, Options{})
			case policy.NAtS:
				e, err = New(backend, cfg, c.m, ev, params, Options{})
				if err == nil {
					_, err = CalibrateRoles(e, randTokens(rand.New(rand.NewPCG(1, 1)), 2, 256, cfg.VocabSize), RoleRates{Global: 0.05, Local: 0.15, Window: 0.8}, 1)
				}
			}
			if err != nil {
				b.Fatal(err)
			}
			prompt := randTokens(rand.New(rand.NewPCG(2, 2)), 1, P, cfg.VocabSize)
			prefill := func() {
				if _, err := e.Prefill(prompt, 128); err != nil {
					b.Fatal(err)
				}
			}
			prefill()
			tok := []int32{1}
			for i := 0; i < 8; i++ { // warm-up: compile
				if _, err := e.step(tok); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			for b.Loop() {
				if e.Len() >= cfg.MaxSeqLen-1 {
					b.StopTimer()
					prefill()
					b.StartTimer()
				}
				if _, err := e.step(tok); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(e.Cap()), "slots")
			b.ReportMetric(e.KVFraction(), "kv_fraction")
		})
	}
}

// TestSlopeBandwidth: with times that are a fixed per-call cost plus bytes over the bandwidth, the slope recovers
// the bandwidth where bytes over time (the old measure) does not; noisy timings fall back to that lower bound.
func TestSlopeBandwidth(t *testing.T) {
	const bw, fixed = 4e12, time.Millisecond
	at := func(bytes int64) time.Duration { return fixed + time.Duration(float64(bytes)/bw*1e9) }
	small, large := int64(1e9), int64(8e9)
	got, err := slopeBandwidth(small, large, at(small), at(large))
	if err != nil || math.Abs(got-bw)/bw > 1e-6 {
		t.Fatalf("slope %g B/s (%v), want %g", got, err, bw)
	}
	if plain := float64(large) / at(large).Seconds(); plain > 0.7*bw {
		t.Fatalf("the fixed cost should hide a third of the bandwidth from bytes over time (%g)", plain)
	}
	// The larger transfer not slower: bytes over time.
	if got, _ := slopeBandwidth(small, large, 3*time.Millisecond, 3*time.Millisecond); got != float64(large)/0.003 {
		t.Fatalf("equal times: %g", got)
	}
	// A slope below what the larger transfer achieved is noise: never below bytes over time.
	if got, _ := slopeBandwidth(small, large, 100*time.Microsecond, 4*time.Millisecond); got != float64(large)/0.004 {
		t.Fatalf("slope below the plain rate: %g", got)
	}
	if _, err := slopeBandwidth(small, large, 0, 0); err == nil {
		t.Fatal("no time measured: want an error")
	}
}
