package experiments

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"natsbench/model"
	"natsbench/results"
)

func TestPrefillChunk(t *testing.T) {
	small := model.Config{NHeads: 8, NLayers: 8, NKVHeads: 8}
	big := model.Config{NHeads: 32, NLayers: 8, NKVHeads: 8}
	for _, c := range []struct {
		name string
		cfg  model.Config
		m    MethodConfig
		n    int
		want int
	}{
		{"short prompt: one graph", small, MethodConfig{Name: "full"}, 1000, 1024},
		{"tiny prompt: at least 64", small, MethodConfig{Name: "full"}, 10, 64},
		// 8 heads · T · (65536+T) · 4 bytes ≤ 4 GiB → T = 1024 (2048 needs 4.4e9 bytes).
		{"64k, 8 heads", small, MethodConfig{Name: "full"}, 65536, 1024},
		// 32 heads: four times less.
		{"64k, 32 heads", big, MethodConfig{Name: "nats", ChunkSize: 8}, 65536, 256},
		// H2O statistics: 8·8·T·(256+T)·4 ≤ 1 GiB → T = 1024 (2048 would need 2.3 GiB).
		{"h2o statistics", small, MethodConfig{Name: "h2o", Budget: 256}, 16384, 1024},
		{"nats chunk 48 rounds up", small, MethodConfig{Name: "nats", ChunkSize: 48}, 100, 144},
	} {
		if got := prefillChunk(c.cfg, c.m, 1, c.n); got != c.want {
			t.Errorf("%s: prefillChunk = %d, want %d", c.name, got, c.want)
		}
	}
}

// TestLatencyConfigGrowthSteps: latency.growth_steps accepts 0 (the engine's default) and powers of two up to 64,
// and refuses anything else naming the field.
func TestLatencyConfigGrowthSteps(t *testing.T) {
	base := LatencyConfig{PromptLens: []int{64}, BatchSize: 1, DecodeTokens: 4, Repeats: 1}
	for _, ok := range []int{0, 1, 2, 4, 64} {
		c := base
		c.GrowthSteps = ok
		if err := c.validate(); err != nil {
			t.Errorf("growth_steps = %d: %v", ok, err)
		}
	}
	for _, bad := range []int{-1, 3, 5, 128} {
		c := base
		c.GrowthSteps = bad
		if err := c.validate(); err == nil || !strings.Contains(err.Error(), "latency.growth_steps") {
			t.Errorf("growth_steps = %d: err = %v, want it refused naming latency.growth_steps", bad, err)
		}
	}
}

// TestLatencyConfigTableWorkers: latency.table_workers accepts 0 and up, and refuses a negative count naming the
// field.
func TestLatencyConfigTableWorkers(t *testing.T) {
	base := LatencyConfig{PromptLens: []int{64}, BatchSize: 1, DecodeTokens: 4, Repeats: 1}
	for _, ok := range []int{0, 1, 8} {
		c := base
		c.TableWorkers = ok
		if err := c.validate(); err != nil {
			t.Errorf("table_workers = %d: %v", ok, err)
		}
	}
	c := base
	c.TableWorkers = -2
	if err := c.validate(); err == nil || !strings.Contains(err.Error(), "latency.table_workers") {
		t.Errorf("table_workers = -2: err = %v, want it refused naming latency.table_workers", err)
	}
}

// TestLatencyCalibTokens: latency.calib_tokens sets the calibration prompt's length (default 1024, never past the
// longest prompt) and is refused below 16, naming the field.
func TestLatencyCalibTokens(t *testing.T) {
	for _, c := range []struct{ calib, longest, want int }{{0, 32768, 1024}, {0, 512, 512}, {8192, 32768, 8192}, {8192, 4096, 4096}} {
		if got := (LatencyConfig{CalibTokens: c.calib}).calibLen(c.longest); got != c.want {
			t.Errorf("calib_tokens %d, longest prompt %d: %d tokens, want %d", c.calib, c.longest, got, c.want)
		}
	}
	base := LatencyConfig{PromptLens: []int{64}, BatchSize: 1, DecodeTokens: 4, Repeats: 1}
	for _, bad := range []int{-1, 8} {
		c := base
		c.CalibTokens = bad
		if err := c.validate(); err == nil || !strings.Contains(err.Error(), "latency.calib_tokens") {
			t.Errorf("calib_tokens = %d: err = %v, want it refused naming latency.calib_tokens", bad, err)
		}
	}
}

// TestGPUMemLimit: the K/V limit on a GPU is 90% of the free memory unless the XLA allocator's share of the total is
// smaller (an idle H200 at go-xla's default 0.75: 90% of 105.3 GiB, not of 139.9).
func TestGPUMemLimit(t *testing.T) {
	free, total, ok := parseFreeTotal("143221, 143771\n")
	if !ok || free != 143221 || total != 143771 {
		t.Fatalf("parseFreeTotal = %v, %v, %v", free, total, ok)
	}
	if _, _, ok := parseFreeTotal("N/A\n"); ok {
		t.Error("parseFreeTotal accepted a line without two numbers")
	}
	lim, how := gpuMemLimit(free, total, 0.75)
	if want := int64(0.9 * 0.75 * total * (1 << 20)); lim != want || !strings.Contains(how, "memory_fraction 0.75") || !strings.Contains(how, "nvidia-smi") {
		t.Errorf("idle H200, fraction 0.75: %d (%s), want %d from the allocator's share", lim, how, want)
	}
	lim, how = gpuMemLimit(free, total, 1)
	if want := int64(0.9 * free * (1 << 20)); lim != want || !strings.Contains(how, "90% of the GPU's free memory") {
		t.Errorf("idle H200, fraction 1: %d (%s), want %d from the free memory", lim, how, want)
	}
	busy := 20000.0
	lim, _ = gpuMemLimit(busy, total, 0.75) // a busy GPU: the free memory binds
	if want := int64(0.9 * busy * (1 << 20)); lim != want {
		t.Errorf("busy GPU: %d, want %d", lim, want)
	}
}

// TestCUDASampler: a latency run on a CUDA backend reads the GPU's memory.used from nvidia-smi (here a stand-in on
// PATH) for its device_used_bytes rows; on the pure-Go backend, or when nvidia-smi does not answer, it reads nothing
// and says why.
func TestCUDASampler(t *testing.T) {
	bin := t.TempDir()
	smi := filepath.Join(bin, "nvidia-smi")
	if err := os.WriteFile(smi, []byte("#!/bin/sh\necho 1536\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	var log strings.Builder
	if s := cudaSampler(Env{Backend: "go", Device: -1, Log: &log}); s != nil {
		t.Errorf("pure-Go backend: sampler %v", s.Name())
	}
	s := cudaSampler(Env{Backend: "xla:cuda", Device: -1, Log: &log})
	if s == nil {
		t.Fatalf("xla:cuda with nvidia-smi answering: no sampler (log %q)", log.String())
	}
	if v, err := s.Sample(); err != nil || v != 1536<<20 {
		t.Errorf("reading %d, %v; want 1536 MiB", v, err)
	}
	if err := os.WriteFile(smi, []byte("#!/bin/sh\necho 'No devices were found'; exit 6\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	log.Reset()
	if s := cudaSampler(Env{Backend: "xla:cuda", Device: 0, Log: &log}); s != nil || !strings.Contains(log.String(), "no device_used_bytes") {
		t.Errorf("nvidia-smi failing: sampler %v, log %q", s, log.String())
	}
}

// TestEarlierLatencyRowsCalibration: an interrupted random-weight NAtS run resumes from its finished lengths only
// when they were measured with this attempt's role calibration (the embeddings' scale); otherwise, or when the
// rows carry no scale (written before the scaling), every length is measured again. Runs without a calibration
// (scale 0) resume as before.
func TestEarlierLatencyRowsCalibration(t *testing.T) {
	path := filepath.Join(t.TempDir(), "metrics.parquet")
	row := func(metric string, x, v float64) Row {
		return Row{RunID: "r", Sweep: "s", Key: "nats,seed=0", Name: "nats", Method: "nats", Task: "latency", Split: "test",
			Metric: metric, Step: -1, X: x, Value: v, N: 1}
	}
	write := func(rows ...Row) {
		if err := results.WriteRows(path, rows); err != nil {
			t.Fatal(err)
		}
	}
	write(row("decode_ms_per_token", 16, 1.5), row("calib_embed_scale", 16, 64), row("peak_mem_bytes", 16, 100),
		row("decode_ms_per_token", 32, 1.6)) // 32 was cut before its peak_mem_bytes row
	for _, c := range []struct {
		scale float64
		kept  int
	}{{64, 3}, {0, 3}, {32, 0}} {
		var log strings.Builder
		rows, done := earlierLatencyRows(path, &log, c.scale)
		if len(rows) != c.kept || done[16] != (c.kept > 0) || done[32] {
			t.Errorf("scale %g: kept %d rows, done %v; want %d rows (log %q)", c.scale, len(rows), done, c.kept, log.String())
		}
		if c.kept == 0 && !strings.Contains(log.String(), "another role calibration") {
			t.Errorf("scale %g: log %q does not say why it measures again", c.scale, log.String())
		}
	}
	write(row("decode_ms_per_token", 16, 1.5), row("peak_mem_bytes", 16, 100)) // before the scaling: no scale row
	if rows, _ := earlierLatencyRows(path, io.Discard, 64); len(rows) != 0 {
		t.Errorf("rows without a calibration scale were kept for a calibrated attempt: %v", rows)
	}
}
