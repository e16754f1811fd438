package experiments

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"natsbench/results"
	"natsbench/sweeps"
)

// corpus writes a tiny PG-19 release-layout folder of real English text (from longbench's test rows would do;
// here a fixed paragraph repeated with variations).
func corpus(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	text := "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a wife. " +
		"However little known the feelings or views of such a man may be on his first entering a neighbourhood, this truth is so well fixed in the minds of the surrounding families, that he is considered the rightful property of some one or other of their daughters. "
	var meta strings.Builder
	for i, split := range []string{"train", "train", "validation", "test"} {
		id := fmt.Sprint(100 + i)
		os.MkdirAll(filepath.Join(dir, split), 0o755)
		body := strings.Repeat(fmt.Sprintf("Chapter %d. %s", i, text), 6)
		if err := os.WriteFile(filepath.Join(dir, split, id+".txt"), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&meta, "%s,Book %d,1813,http://www.gutenberg.org/ebooks/%s\n", id, i, id)
	}
	if err := os.WriteFile(filepath.Join(dir, "metadata.csv"), []byte(meta.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func tinyRun(data, name, method string, extra map[string]any) sweeps.Run {
	cfg := map[string]any{
		"data":   map[string]any{"dir": data},
		"model":  map[string]any{"d_model": 16, "n_layers": 1, "n_heads": 2, "ffn_mult": 2, "max_seq_len": 64, "tie_embeddings": true},
		"train":  map[string]any{"steps": 5, "batch_size": 2, "seq_len": 16, "warmup_steps": 1, "ckpt_every": 2, "lr": 1e-2, "min_lr": 1e-3},
		"eval":   map[string]any{"context_len": 12, "max_windows": 2, "batch_size": 2, "position_buckets": []any{4, 12}},
		"method": map[string]any{"name": method},
	}
	for k, v := range extra {
		cfg[k] = v
	}
	return sweeps.Run{Sweep: "t", SweepFile: "t.toml", Name: name, Kind: "lm", Key: name + ",seed=0", ID: name + "id", Seed: 0, Config: cfg}
}

// cancelAfter cancels a context when the progress log shows a given text.
type cancelAfter struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	marker string
	cancel func()
}

// EveryUpdate: the test acts on a given step's progress line, so it takes every update (progress.EveryUpdate).
func (c *cancelAfter) EveryUpdate() bool { return true }

func (c *cancelAfter) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.buf.Write(p)
	if c.marker != "" && strings.Contains(c.buf.String(), c.marker) {
		c.cancel()
	}
	return len(p), nil
}

func metricOf(t *testing.T, dir, metric string) []results.Row {
	t.Helper()
	rows, err := results.ReadRows(filepath.Join(dir, results.MetricsFile))
	if err != nil {
		t.Fatal(err)
	}
	var out []results.Row
	for _, r := range rows {
		if r.Metric == metric {
			out = append(out, r)
		}
	}
	return out
}

// TestLMRunResumeAndFrom trains a tiny model, is interrupted after step 3, resumes from the checkpoint of step 2
// to the same final numbers as an uninterrupted run, and serves an evaluation-only H2O run through `from`.
func TestLMRunResumeAndFrom(t *testing.T) {
	data := corpus(t)
	out := t.TempDir()
	run := tinyRun(data, "full", "full", nil)
	if err := Validate(run); err != nil {
		t.Fatal(err)
	}
	// Uninterrupted reference.
	ref := filepath.Join(out, "t", "ref")
	os.MkdirAll(ref, 0o755)
	if err := Run(context.Background(), run, ref, "", Env{}); err != nil {
		t.Fatal(err)
	}
	// Interrupted after step 3, then resumed.
	dir := filepath.Join(out, "t", "full")
	os.MkdirAll(dir, 0o755)
	ctx, cancel := context.WithCancel(context.Background())
	log := &cancelAfter{marker: "step 3/5", cancel: cancel}
	if err := Run(ctx, run, dir, "", Env{Log: log}); err == nil {
		t.Fatal("interrupted run returned no error")
	}
	if _, err := os.Stat(filepath.Join(dir, results.MetricsFile)); err == nil {
		t.Fatal("interrupted run wrote metrics.parquet")
	}
	log2 := &cancelAfter{}
	if err := Run(context.Background(), run, dir, "", Env{Log: log2}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(log2.buf.String(), "resuming") {
		t.Errorf("second run did not resume: %q", log2.buf.String())
	}
	a, b := metricOf(t, ref, "loss"), metricOf(t, dir, "loss")
	if len(a) != 5 || len(b) != 5 {
		t.Fatalf("loss rows: %d and %d, want 5 each (one per step, none duplicated)", len(a), len(b))
	}
	for i := range a {
		if a[i].Step != b[i].Step || a[i].Value != b[i].Value {
			t.Fatalf("step %d: uninterrupted loss %v, resumed %v", a[i].Step, a[i].Value, b[i].Value)
		}
	}
	pa, pb := metricOf(t, ref, "ppl"), metricOf(t, dir, "ppl")
	if len(pa) != 1 || pa[0].Value != pb[0].Value || math.IsNaN(pa[0].Value) {
		t.Fatalf("ppl rows %v vs %v", pa, pb)
	}
	// Evaluation-only baseline on the trained model.
	h2o := tinyRun(data, "h2o", "h2o", map[string]any{"method": map[string]any{"name": "h2o", "budget": 6, "recent": 2}})
	h2o.FromKey, h2o.FromID = "full,seed=0", "fullid"
	hdir := filepath.Join(out, "t", "h2o")
	os.MkdirAll(hdir, 0o755)
	if err := Run(context.Background(), h2o, hdir, dir, Env{}); err != nil {
		t.Fatal(err)
	}
	kv := metricOf(t, hdir, "kv_tokens")
	if len(kv) != 1 || kv[0].Value > 6 {
		t.Fatalf("h2o kv_tokens %v, want ≤ budget 6", kv)
	}
	if len(metricOf(t, hdir, "loss")) != 0 {
		t.Fatal("evaluation-only run has training rows")
	}
	// Latency of StreamingLLM on the trained model, two prompt lengths.
	lat := tinyRun(data, "lat", "streamingllm", map[string]any{
		"method":  map[string]any{"name": "streamingllm", "sinks": 2, "budget": 8},
		"latency": map[string]any{"prompt_lens": []any{16, 32}, "decode_tokens": 4, "warmup": 1, "repeats": 2, "batch_size": 1},
	})
	lat.Kind, lat.FromKey, lat.FromID = "latency", "full,seed=0", "fullid"
	ldir := filepath.Join(out, "t", "lat")
	os.MkdirAll(ldir, 0o755)
	if err := Run(context.Background(), lat, ldir, dir, Env{}); err != nil {
		t.Fatal(err)
	}
	dec := metricOf(t, ldir, "decode_ms_per_token")
	kvf := metricOf(t, ldir, "kv_fraction")
	if len(dec) != 2 || dec[0].X != 16 || dec[1].X != 32 || dec[0].Value <= 0 || len(kvf) != 2 || kvf[1].Value >= 1 {
		t.Fatalf("latency rows: decode %v, kv fraction %v", dec, kvf)
	}
	// Cut after its first prompt length, the run keeps that length's rows and a second attempt measures only the other.
	cdir := filepath.Join(out, "t", "latcut")
	os.MkdirAll(cdir, 0o755)
	ctx2, cancel2 := context.WithCancel(context.Background())
	if err := Run(ctx2, lat, cdir, dir, Env{Log: &cancelAfter{marker: "prompt     16: prefill", cancel: cancel2}}); err == nil {
		t.Fatal("the cut latency run returned no error")
	}
	if first := metricOf(t, cdir, "decode_ms_per_token"); len(first) != 1 || first[0].X != 16 {
		t.Fatalf("the cut latency run kept %v, want the 16-token rows", first)
	}
	kept := metricOf(t, cdir, "decode_ms_per_token")[0]
	log3 := &cancelAfter{}
	if err := Run(context.Background(), lat, cdir, dir, Env{Log: log3}); err != nil {
		t.Fatal(err)
	}
	if again := metricOf(t, cdir, "decode_ms_per_token"); len(again) != 2 || again[0] != kept || again[1].X != 32 ||
		!strings.Contains(log3.buf.String(), "prompt     16: measured by an earlier attempt of this run, kept") ||
		strings.Contains(log3.buf.String(), "prompt     16: prefill") {
		t.Fatalf("second attempt: decode rows %v (first attempt's %v), log:\n%s", again, kept, log3.buf.String())
	}
	// StreamingLLM with budget 8 (counting the token being attended) has 16 slots (kvcache.Bucket) and holds 8 at most.
	if cs, mr := metricOf(t, ldir, "cache_slots"), metricOf(t, ldir, "max_row_kv_tokens"); len(cs) != 2 || cs[1].Value != 16 || len(mr) != 2 || mr[1].Value != 8 {
		t.Fatalf("latency rows: cache_slots %v, max_row_kv_tokens %v", cs, mr)
	}
	// A cache that cannot fit is refused before any measurement, naming the prompt length and the limit.
	big := tinyRun(data, "big", "full", map[string]any{
		"latency": map[string]any{"prompt_lens": []any{16, 4000}, "decode_tokens": 4, "warmup": 1, "repeats": 1, "batch_size": 1,
			"mem_limit_gib": 3e-5},
	})
	big.Kind, big.FromKey, big.FromID = "latency", "full,seed=0", "fullid"
	bdir := filepath.Join(out, "t", "big")
	os.MkdirAll(bdir, 0o755)
	err := Run(context.Background(), big, bdir, dir, Env{})
	if err == nil || !strings.Contains(err.Error(), "latency.prompt_lens: 4000 tokens") || !strings.Contains(err.Error(), "over the limit") {
		t.Fatalf("oversized cache: %v", err)
	}
	if _, err := os.Stat(filepath.Join(bdir, "metrics.parquet")); err == nil {
		t.Fatal("the refused run wrote metrics")
	}
}

func TestValidateRefusesBadInput(t *testing.T) {
	data := corpus(t)
	cases := []struct {
		name  string
		run   sweeps.Run
		field string
	}{
		{"unknown method", tinyRun(data, "x", "nast", nil), `did you mean "nats"`},
		{"missing data folder", tinyRun(filepath.Join(data, "nope"), "x", "full", nil), "data.dir"},
		{"unknown key", tinyRun(data, "x", "full", map[string]any{"train": map[string]any{"stepz": 3}}), "stepz"},
		{"budget zero", tinyRun(data, "x", "tova", map[string]any{"method": map[string]any{"name": "tova", "budget": 0}}), "budget"},
		{"heads", tinyRun(data, "x", "full", map[string]any{"model": map[string]any{"d_model": 16, "n_heads": 3}}), "model.n_heads"},
		{"window vs chunk", tinyRun(data, "x", "nats", map[string]any{"method": map[string]any{"name": "nats", "window": 6, "chunk_size": 4}}), "method.window"},
		{"negative lambda", tinyRun(data, "x", "nats", map[string]any{"method": map[string]any{"name": "nats", "lambda": -1.0}}), "method.lambda"},
		{"data parallel", tinyRun(data, "x", "full", map[string]any{"train": map[string]any{"steps": 5, "batch_size": 2, "seq_len": 16, "data_parallel": 3}}), "train.data_parallel = 3 does not divide train.batch_size = 2"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := Validate(c.run)
			if err == nil || !strings.Contains(err.Error(), c.field) {
				t.Fatalf("Validate = %v, want an error mentioning %q", err, c.field)
			}
		})
	}
}

// TestDataParallelKey: a sweep sets train.data_parallel; it decodes into train.Config and validates.
func TestDataParallelKey(t *testing.T) {
	run := tinyRun(corpus(t), "x", "nats", map[string]any{"train": map[string]any{"steps": 5, "batch_size": 4, "seq_len": 16, "data_parallel": 2}})
	if err := Validate(run); err != nil {
		t.Fatal(err)
	}
	rc, err := Decode(run)
	if err != nil {
		t.Fatal(err)
	}
	if rc.Train.DataParallel != 2 || rc.Train.Devices() != 2 {
		t.Fatalf("train.data_parallel decoded as %d", rc.Train.DataParallel)
	}
}
