package experiments

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"natsbench/finetune"
	"natsbench/llama"
	"natsbench/longbench"
	"natsbench/model"
	"natsbench/nats"
	"natsbench/results"
	"natsbench/sweeps"
)

const (
	llamaModel = "../llama/testdata/aidreams260K.bin"
	llamaTok   = "../llama/testdata/tok512.bin"
)

// writeAdapter saves an adapter with freshly initialised scorers (mixed roles, no training needed) for base into
// dir, as a finetune run leaves it.
func writeAdapter(t *testing.T, base *llama.Model, dir string) {
	t.Helper()
	backend, err := model.NewBackend("go")
	if err != nil {
		t.Fatal(err)
	}
	nm, err := nats.New(nats.Config{Lambda: 1e-2, Window: 8, Chunk: 1})
	if err != nil {
		t.Fatal(err)
	}
	cfg := finetune.DefaultConfig()
	cfg.Steps = 1
	tr, err := finetune.New(backend, base, nm, cfg, 5)
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.SaveAdapter(filepath.Join(dir, adapterFile)); err != nil {
		t.Fatal(err)
	}
}

// llamaLBRun is a longbench run of the bundled llama2.c model with `from` the run src.
func llamaLBRun(name string, method, lb map[string]any, src string) sweeps.Run {
	ft := map[string]any{"model": llamaModel, "tokenizer": llamaTok}
	cfg := map[string]any{"method": method, "longbench": lb, "finetune": ft}
	return sweeps.Run{Sweep: "t", SweepFile: "t.toml", Name: name, Kind: "longbench", Key: name + ",seed=0", ID: name + "id",
		Config: cfg, FromKey: src + ",seed=0", FromID: src + "id"}
}

func readSamples(t *testing.T, dir string) []lbSample {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, samplesFile))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []lbSample
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<24)
	for sc.Scan() {
		var s lbSample
		if err := json.Unmarshal(sc.Bytes(), &s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

// TestLongBenchLlamaRun: kind longbench on the bundled pretrained llama2.c model with a NAtS adapter from a
// finetune run: full attention predicts exactly what llama.Runner's greedy decoding gives for the same
// (BOS-led, middle-truncated) prompt and keeps everything; NAtS with the adapter keeps a fraction in (0, 1);
// StreamingLLM and H2O with budgets matched to the NAtS run keep, per task, the NAtS run's mean kept keys
// (rounded) at the end of generation; every run scores every task.
func TestLongBenchLlamaRun(t *testing.T) {
	base, err := llama.LoadLlama2C(llamaModel)
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	dirOf := func(name string) string {
		d := filepath.Join(out, "t", name)
		os.MkdirAll(d, 0o755)
		return d
	}
	writeAdapter(t, base, dirOf("ft"))
	lb := map[string]any{"data": longbenchData, "tasks": []any{"qasper", "trec", "passage_retrieval_en"}, "max_new_tokens": 4}
	match := map[string]any{"data": longbenchData, "tasks": []any{"qasper", "trec", "passage_retrieval_en"}, "max_new_tokens": 4,
		"match_budget": true, "prefill_chunk": 32}
	runs := []sweeps.Run{
		llamaLBRun("full", map[string]any{"name": "full"}, lb, "ft"),
		llamaLBRun("nats", map[string]any{"name": "nats"}, lb, "ft"),
		llamaLBRun("streamingllm", map[string]any{"name": "streamingllm", "sinks": 4}, match, "nats"),
		llamaLBRun("h2o", map[string]any{"name": "h2o"}, match, "nats"),
	}
	for _, r := range runs {
		if err := Validate(r); err != nil {
			t.Fatal(err)
		}
		var log strings.Builder
		src, _, _ := strings.Cut(r.FromKey, ",")
		if err := Run(context.Background(), r, dirOf(r.Name), filepath.Join(out, "t", src), Env{Log: &log}); err != nil {
			t.Fatalf("%s: %v\n%s", r.Name, err, log.String())
		}
		rows, err := results.ReadRows(filepath.Join(dirOf(r.Name), results.MetricsFile))
		if err != nil {
			t.Fatal(err)
		}
		scored := 0
		for _, row := range rows {
			if row.Metric != "kv_fraction" && row.Metric != "kv_tokens" && row.Metric != "longbench_avg" {
				scored++
			}
		}
		if scored != 3 {
			t.Errorf("%s: %d task score rows, want 3", r.Name, scored)
		}
	}
	full, nts := readSamples(t, dirOf("full")), readSamples(t, dirOf("nats"))
	if len(full) != 5 || len(nts) != 5 {
		t.Fatalf("%d and %d samples, want 5", len(full), len(nts))
	}
	seen := func(s lbSample) int {
		if s.Stop == "eos" {
			return s.TokensIn + s.TokensOut - 1
		}
		return s.TokensIn + s.TokensOut
	}
	// Full attention equals the runner's greedy decoding on the same prompt ids.
	tok, err := llama.LoadTokenizer(llamaTok)
	if err != nil {
		t.Fatal(err)
	}
	lt := llamaTokenizer{tok: tok, cfg: base.Config}
	sets, err := longbench.ReadDir(longbenchData)
	if err != nil {
		t.Fatal(err)
	}
	backend, _ := model.NewBackend("go")
	runner := llama.NewRunner(backend, base)
	s0 := sets["qasper"].Samples[0]
	prompt, err := longbench.BuildModelPrompt("qasper", s0, lt, 124, longbench.ChatNone)
	if err != nil {
		t.Fatal(err)
	}
	ids := lt.Encode(prompt)
	if len(ids) > 124 {
		ids = append(ids[:62:62], ids[len(ids)-62:]...)
	}
	gen, err := runner.GenerateNoCache(ids, 4)
	if err != nil {
		t.Fatal(err)
	}
	if want := lt.Decode(gen); full[0].Pred != want || full[0].TokensIn != len(ids) || !full[0].Truncated || ids[0] != tok.BOS() {
		t.Fatalf("full qasper #1: pred %q (%d tokens in), runner %q (%d tokens, BOS %d)", full[0].Pred, full[0].TokensIn, want, len(ids), ids[0])
	}
	natsKept := map[string][]float64{}
	for i, s := range full {
		if s.KVFraction != 1 || s.KVTokens != float64(seen(s)) {
			t.Errorf("full %s: kv %v (%v tokens), seen %d", s.ID, s.KVFraction, s.KVTokens, seen(s))
		}
		n := nts[i]
		if !(n.KVFraction > 0 && n.KVFraction < 1) {
			t.Errorf("nats %s: kv fraction %v, want in (0, 1)", n.ID, n.KVFraction)
		}
		natsKept[n.Task] = append(natsKept[n.Task], n.KVTokens)
	}
	var info llamaRunInfo
	b, _ := os.ReadFile(filepath.Join(dirOf("nats"), llamaInfoFile))
	if err := json.Unmarshal(b, &info); err != nil || info.Method != "nats" || info.NAtS == nil || info.NAtS.Window != 8 ||
		info.Fingerprint != finetune.Fingerprint(base.Config) {
		t.Fatalf("nats llama.json: %s (%v)", b, err)
	}
	for _, name := range []string{"streamingllm", "h2o"} {
		var mi llamaRunInfo
		b, _ := os.ReadFile(filepath.Join(dirOf(name), llamaInfoFile))
		if err := json.Unmarshal(b, &mi); err != nil {
			t.Fatal(err)
		}
		for task, ks := range natsKept {
			var mean float64
			for _, k := range ks {
				mean += k
			}
			mean /= float64(len(ks))
			want := int(mean+0.5) + 1
			if mi.Budgets[task] != want {
				t.Errorf("%s %s: budget %d, want round(%v)+1 = %d", name, task, mi.Budgets[task], mean, want)
			}
		}
		for _, s := range readSamples(t, dirOf(name)) {
			if want := min(mi.Budgets[s.Task]-1, seen(s)); s.KVTokens != float64(want) {
				t.Errorf("%s %s: kept %v, want min(budget−1, seen) = %d", name, s.ID, s.KVTokens, want)
			}
		}
	}
}

// TestLongBenchLlamaBadInput: a source that is not a finetune run, an adapter of another base model, a
// budget-matched run whose source is not a NAtS longbench run of the same model, and match_budget where it means
// nothing are errors naming the file or field.
func TestLongBenchLlamaBadInput(t *testing.T) {
	out := t.TempDir()
	dirOf := func(name string) string {
		d := filepath.Join(out, name)
		os.MkdirAll(d, 0o755)
		return d
	}
	lb := map[string]any{"data": longbenchData, "tasks": []any{"trec"}, "max_new_tokens": 2}
	run := func(r sweeps.Run, from string) error {
		if err := Validate(r); err != nil {
			return err
		}
		return Run(context.Background(), r, dirOf(r.Name), from, Env{})
	}
	// A source of another kind (manifest) and a folder without an adapter.
	lm := dirOf("lm")
	if err := results.WriteManifest(lm, results.Manifest{Kind: "lm", Key: "full,seed=0"}); err != nil {
		t.Fatal(err)
	}
	if err := run(llamaLBRun("a", map[string]any{"name": "nats"}, lb, "lm"), lm); err == nil ||
		!strings.Contains(err.Error(), lm+` is a "lm" run`) || !strings.Contains(err.Error(), "not a finetune run") {
		t.Errorf("lm source: %v", err)
	}
	empty := dirOf("empty")
	if err := run(llamaLBRun("b", map[string]any{"name": "full"}, lb, "empty"), empty); err == nil ||
		!strings.Contains(err.Error(), filepath.Join(empty, adapterFile)+" does not exist") {
		t.Errorf("no adapter: %v", err)
	}
	// An adapter trained on another base model (hf-tiny: 2 layers, 2 KV heads) names the file and the fields.
	tiny, err := llama.Load("../llama/testdata/hf-tiny")
	if err != nil {
		t.Fatal(err)
	}
	other := dirOf("other")
	writeAdapter(t, tiny, other)
	err = run(llamaLBRun("c", map[string]any{"name": "nats"}, lb, "other"), other)
	if err == nil || !strings.Contains(err.Error(), filepath.Join(other, adapterFile)) ||
		!strings.Contains(err.Error(), "NumLayers 2 (adapter) ≠ 4 (model)") || !strings.Contains(err.Error(), "NumKVHeads 2 (adapter) ≠ 4 (model)") {
		t.Errorf("adapter of another model: %v", err)
	}
	// match_budget: the source must be a nats longbench run (llama.json) of the same base model.
	match := map[string]any{"data": longbenchData, "tasks": []any{"trec"}, "max_new_tokens": 2, "match_budget": true}
	if err := run(llamaLBRun("d", map[string]any{"name": "tova"}, match, "other"), other); err == nil ||
		!strings.Contains(err.Error(), filepath.Join(other, llamaInfoFile)+" does not exist") {
		t.Errorf("match_budget from a finetune run: %v", err)
	}
	foreign := dirOf("foreign")
	b, _ := json.Marshal(llamaRunInfo{BaseModel: "elsewhere", Fingerprint: "0123", Method: "nats"})
	os.WriteFile(filepath.Join(foreign, llamaInfoFile), b, 0o644)
	if err := run(llamaLBRun("e", map[string]any{"name": "tova"}, match, "foreign"), foreign); err == nil ||
		!strings.Contains(err.Error(), filepath.Join(foreign, llamaInfoFile)+": base_fingerprint 0123") {
		t.Errorf("match_budget from another base model: %v", err)
	}
	if err := Validate(llamaLBRun("f", map[string]any{"name": "nats"}, match, "x")); err == nil ||
		!strings.Contains(err.Error(), `longbench.match_budget: method.name = "nats" has no budget`) {
		t.Errorf("match_budget with nats: %v", err)
	}
	bad := llamaLBRun("g", map[string]any{"name": "full"}, lb, "x")
	bad.Config["finetune"] = map[string]any{"model": "../llama/testdata/nope.bin"}
	if err := Validate(bad); err == nil || !strings.Contains(err.Error(), `finetune.model = "../llama/testdata/nope.bin"`) {
		t.Errorf("missing model: %v", err)
	}
	// natsbench's own LM with a finetune run as `from`: says what to set.
	gpt := lbRun("", "lb", "full", nil, map[string]any{"data": longbenchData}, "other")
	gpt.Config["data"] = map[string]any{"dir": "../testdata/pg19"}
	if err := Run(context.Background(), gpt, dirOf("gpt"), other, Env{}); err == nil || !strings.Contains(err.Error(), "set finetune.model") {
		t.Errorf("gpt longbench from a finetune run: %v", err)
	}
}
