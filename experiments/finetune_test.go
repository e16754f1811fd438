package experiments

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"natsbench/finetune"
	"natsbench/llama"
	"natsbench/sweeps"
)

// finetuneRun is a tiny finetune run on the real pretrained llama2.c model of llama/testdata with haystacks from the
// bundled PG-19 sample.
func finetuneRun(extra map[string]any) sweeps.Run {
	ft := map[string]any{"model": "../llama/testdata/aidreams260K.bin", "tokenizer": "../llama/testdata/tok512.bin",
		"haystack": "../testdata/pg19", "steps": 6, "lr": 2e-2, "seq_len": 128, "words": 40, "num_keys": 1, "key_words": 2,
		"ckpt_every": 2, "log_every": 1, "eval_samples": 3, "sinks": 2}
	for k, v := range extra {
		ft[k] = v
	}
	cfg := map[string]any{"method": map[string]any{"name": "nats", "lambda": 1e-3, "window": 8}, "finetune": ft}
	return sweeps.Run{Sweep: "t", SweepFile: "t.toml", Name: "ft", Kind: "finetune", Key: "ft,seed=0", ID: "ftid", Config: cfg}
}

// TestFinetuneKindResumesAndScores: kind finetune trains the scorers (only them), resumes after an interruption to
// the same per-step numbers as an uninterrupted run, saves an adapter that loads back onto the base model, and
// scores passkey retrieval for full attention, NAtS and StreamingLLM with their KV fractions.
func TestFinetuneKindResumesAndScores(t *testing.T) {
	run := finetuneRun(nil)
	if err := Validate(run); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	ref := filepath.Join(out, "t", "ref")
	os.MkdirAll(ref, 0o755)
	if err := Run(context.Background(), run, ref, "", Env{}); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(out, "t", "ft")
	os.MkdirAll(dir, 0o755)
	ctx, cancel := context.WithCancel(context.Background())
	if err := Run(ctx, run, dir, "", Env{Log: &cancelAfter{marker: "step 3/6", cancel: cancel}}); err == nil {
		t.Fatal("interrupted run returned no error")
	}
	log := &cancelAfter{}
	if err := Run(context.Background(), run, dir, "", Env{Log: log}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(log.buf.String(), "resuming ft,seed=0 from step 2") {
		t.Errorf("no resume: %q", log.buf.String())
	}
	a, b := metricOf(t, ref, "distill_loss"), metricOf(t, dir, "distill_loss")
	if len(a) != 6 || len(b) != 6 {
		t.Fatalf("distill_loss rows %d, %d; want 6", len(a), len(b))
	}
	for i := range a {
		if a[i].Step != b[i].Step || a[i].Value != b[i].Value {
			t.Fatalf("step %d: uninterrupted %v, resumed %v", a[i].Step, a[i].Value, b[i].Value)
		}
	}
	byMethod := map[string]map[string]float64{}
	for _, m := range []string{"passkey_accuracy", "answer_agreement", "kv_fraction"} {
		for _, r := range metricOf(t, dir, m) {
			if byMethod[r.Method] == nil {
				byMethod[r.Method] = map[string]float64{}
			}
			byMethod[r.Method][m] = r.Value
		}
	}
	if len(byMethod) != 3 || byMethod["full"]["kv_fraction"] != 1 || byMethod["full"]["answer_agreement"] != 1 {
		t.Fatalf("passkey rows: %v", byMethod)
	}
	for _, m := range []string{"nats", "streamingllm"} {
		if f := byMethod[m]["kv_fraction"]; !(f > 0 && f < 1) {
			t.Errorf("%s kv_fraction %v, want in (0, 1)", m, f)
		}
	}
	base, err := llama.LoadLlama2C("../llama/testdata/aidreams260K.bin")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := finetune.LoadAdapter(filepath.Join(dir, "adapter.safetensors"), base); err != nil {
		t.Fatal(err)
	}
}

// TestFinetuneBF16Checkpointed: finetune.dtype, finetune.weights_dtype and finetune.checkpoint reach the trainer: a
// run in bf16 with checkpointing (weights held in bf16, the default for that dtype) trains and scores, and says so
// in its log; the fields are recorded with the run's configuration (config.toml, the manifest) like the others.
func TestFinetuneBF16Checkpointed(t *testing.T) {
	run := finetuneRun(map[string]any{"dtype": "bfloat16", "checkpoint": true, "steps": 2, "eval_samples": 1, "ckpt_every": 0})
	if err := Validate(run); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "t", "ft")
	os.MkdirAll(dir, 0o755)
	log := &cancelAfter{}
	if err := Run(context.Background(), run, dir, "", Env{Log: log}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(log.buf.String(), "compute bfloat16, weights held in bfloat16, checkpointing true") {
		t.Errorf("log does not state the settings: %q", log.buf.String())
	}
	if rows := metricOf(t, dir, "distill_loss"); len(rows) != 2 || !(rows[1].Value > 0) {
		t.Errorf("distill_loss rows %+v", rows)
	}
	toml, err := run.ConfigTOML()
	if err != nil || !strings.Contains(string(toml), "checkpoint = true") || !strings.Contains(string(toml), `dtype = "bfloat16"`) {
		t.Errorf("config.toml:\n%s (%v)", toml, err)
	}
}

func TestFinetuneBadInput(t *testing.T) {
	for _, tc := range []struct {
		extra map[string]any
		want  string
	}{
		{map[string]any{"model": "../llama/testdata/nope.bin"}, `finetune.model = "../llama/testdata/nope.bin"`},
		{map[string]any{"haystack": ""}, "finetune.haystack is empty"},
		{map[string]any{"num_keys": 11}, "finetune.num_keys = 11"},
		{map[string]any{"dtype": "float16"}, `finetune.dtype = "float16"`},
		{map[string]any{"weights_dtype": "bfloat16"}, `finetune.weights_dtype = "bfloat16" with compute dtype "float32"`},
		{map[string]any{"dtype": "bfloat16", "weights_dtype": "f32"}, `finetune.weights_dtype = "f32"`},
	} {
		if err := Validate(finetuneRun(tc.extra)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %q", tc.extra, err, tc.want)
		}
	}
	r := finetuneRun(nil)
	r.Config["method"] = map[string]any{"name": "h2o", "budget": 8}
	if err := Validate(r); err == nil || !strings.Contains(err.Error(), `kind finetune trains NAtS scorers`) {
		t.Errorf("method h2o: %v", err)
	}
}

// TestFinetuneMixedSamples: with longbench_ratio the training samples mix LongBench-format rows (middle-truncated
// to seq_len, labels on the answer tokens) and passkeys, deterministically from (seed, index); a ratio without
// longbench_data is refused at validation.
func TestFinetuneMixedSamples(t *testing.T) {
	run := finetuneRun(map[string]any{"longbench_data": "../testdata/longbench", "longbench_ratio": 0.5})
	if err := Validate(run); err != nil {
		t.Fatal(err)
	}
	rc, _ := Decode(run)
	f := rc.Finetune
	tok, err := llama.LoadTokenizer(f.Tokenizer)
	if err != nil {
		t.Fatal(err)
	}
	lb, err := finetune.LongBenchSources(f.LongBenchData, 0, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	words := strings.Fields(strings.Repeat("the river ran past the old mill and into the quiet town ", 40))
	answers := map[string]bool{}
	for _, s := range lb {
		answers[tok.Decode(tok.Encode(s.Answer))] = true
	}
	nlb := 0
	for i := uint64(0); i < 40; i++ {
		toks, labels, err := mixedSample(f, tok, words, lb, 0, i)
		if err != nil {
			t.Fatal(err)
		}
		again, _, _ := mixedSample(f, tok, words, lb, 0, i)
		if len(toks) != f.SeqLen || strings.Join(strings.Fields(fmtInts(toks)), ",") != strings.Join(strings.Fields(fmtInts(again)), ",") {
			t.Fatalf("sample %d: length %d or not deterministic", i, len(toks))
		}
		var ans []int
		for k, l := range labels {
			if l == 1 {
				ans = append(ans, int(toks[k]))
			}
		}
		if len(ans) == 0 {
			t.Fatalf("sample %d has no answer tokens", i)
		}
		if answers[tok.Decode(ans)] {
			nlb++
		}
	}
	if nlb < 8 || nlb > 32 {
		t.Fatalf("%d of 40 samples from LongBench rows, want about 20", nlb)
	}
	bad := finetuneRun(map[string]any{"longbench_ratio": 0.5})
	if err := Validate(bad); err == nil || !strings.Contains(err.Error(), "longbench_data") {
		t.Fatalf("ratio without data: err = %v", err)
	}
}

func fmtInts(x []int32) string {
	var sb strings.Builder
	for _, v := range x {
		sb.WriteString(" ")
		sb.WriteString(strconv.Itoa(int(v)))
	}
	return sb.String()
}
