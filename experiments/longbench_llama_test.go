package experiments

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
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
	base, out, dirOf := llamaRunSetup(t)
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

// writeLlama3Tokenizer writes a tiny tokenizer.json in the Llama-3 format into dir (the GPT-2 byte alphabet as the
// vocabulary, no merges, Llama 3's pre-tokenizer) with special added tokens <|begin_of_text|> 256,
// <|end_of_text|> 257, <|start_header_id|> 258, and a non-special added token 259.
func writeLlama3Tokenizer(t *testing.T, dir string) string {
	t.Helper()
	vocab := map[string]int{}
	n := 0
	for b := 0; b < 256; b++ {
		r := rune(b)
		if !((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)) {
			r = rune(256 + n)
			n++
		}
		vocab[string(r)] = b
	}
	type added struct {
		ID      int    `json:"id"`
		Content string `json:"content"`
		Special bool   `json:"special"`
	}
	type split struct {
		Type     string            `json:"type"`
		Pattern  map[string]string `json:"pattern,omitempty"`
		UseRegex bool              `json:"use_regex"`
	}
	j := map[string]any{
		"added_tokens": []added{{256, "<|begin_of_text|>", true}, {257, "<|end_of_text|>", true},
			{258, "<|start_header_id|>", true}, {259, "<|plain|>", false}},
		"normalizer": nil,
		"pre_tokenizer": map[string]any{"type": "Sequence", "pretokenizers": []split{
			{Type: "Split", Pattern: map[string]string{"Regex": `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`}},
			{Type: "ByteLevel"}}},
		"model": map[string]any{"type": "BPE", "vocab": vocab, "merges": []string{}},
	}
	b, err := json.Marshal(j)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "tokenizer.json")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestLlamaPostProcessAuto: longbench.postprocess = "auto" post-processes a Llama-3 model — a LlamaForCausalLM
// config with vocab_size 128256, or the Llama-3 byte-level BPE tokenizer — and not the bundled llama2.c model
// (aidreams260K.bin, tok512.bin) nor the HF tiny Llama with its 512 ids; "llama-3" and "none" force the choice.
func TestLlamaPostProcessAuto(t *testing.T) {
	base, tok512 := bundledLlama(t)
	tiny, err := llama.LoadConfig("../llama/testdata/hf-tiny/config.json")
	if err != nil {
		t.Fatal(err)
	}
	l3 := tiny
	l3.VocabSize = 128256 // Llama-3's vocabulary: the config alone decides
	mistral := l3
	mistral.Architecture = "MistralForCausalLM"
	dir := t.TempDir()
	bpe, err := llama.LoadTokenizer(writeLlama3Tokenizer(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		what string
		cfg  llama.Config
		tok  llama.Tokenizer
		want bool
	}{
		{"bundled llama2.c model", base.Config, tok512, false},
		{"hf-tiny config (512 ids)", tiny, tok512, false},
		{"Llama-3 config (vocab 128256)", l3, tok512, true},
		{"Mistral config with 128256 ids", mistral, tok512, false},
		{"Llama-3 tokenizer.json", tiny, bpe, true},
	} {
		if got := isLlama3(c.cfg, c.tok); got != c.want {
			t.Errorf("%s: isLlama3 = %v, want %v", c.what, got, c.want)
		}
		want := longbench.PostNone
		if c.want {
			want = longbench.PostLlama3
		}
		for _, name := range []string{"", "auto"} {
			if got, err := llamaPostProcess(name, c.cfg, c.tok); err != nil || got != want {
				t.Errorf("%s: postprocess %q resolves to %q (%v), want %q", c.what, name, got, err, want)
			}
		}
		for _, p := range []longbench.PostProcess{longbench.PostLlama3, longbench.PostNone} {
			if got, err := llamaPostProcess(string(p), c.cfg, c.tok); err != nil || got != p {
				t.Errorf("%s: postprocess %q resolves to %q (%v)", c.what, p, got, err)
			}
		}
	}
	if _, err := llamaPostProcess("llama3", l3, bpe); err == nil || !strings.Contains(err.Error(), `longbench.postprocess = "llama3"`) {
		t.Errorf("bad name: %v", err)
	}
	// skip_special_tokens for the Llama-3 tokenizer: its special added tokens and the stop ids, not the plain one.
	skip, err := llamaSpecialIDs(dir, bpe, []int{257, 7})
	if err != nil {
		t.Fatal(err)
	}
	for id, want := range map[int]bool{256: true, 257: true, 258: true, 259: false, 7: true, 65: false} {
		if skip[id] != want {
			t.Errorf("special id %d: skipped %v, want %v", id, skip[id], want)
		}
	}
	lt := llamaTokenizer{tok: bpe, cfg: tiny, skip: skip}
	if got := lt.Decode([]int{'o', 'k', '.', 258, 'a', 256, 259, 257}); got != "ok.a<|plain|>" {
		t.Errorf("decode with skip_special_tokens: %q", got)
	}
	// The llama2.c tokenizer has no special pieces beyond BOS/EOS (its Decode drops 1 and 2 itself).
	if skip, err := llamaSpecialIDs(llamaTok, tok512, base.Config.EOS); err != nil || len(skip) != 2 || !skip[1] || !skip[2] {
		t.Errorf("llama2.c special ids: %v, %v", skip, err)
	}
}

// TestLlamaStopIDs: decoding stops at the config's EOS ids plus generation_config.json's eos_token_id (an id, a list,
// null or absent) of a Hugging Face folder; a bad value is an error naming the file.
func TestLlamaStopIDs(t *testing.T) {
	cfg, err := llama.LoadConfig("../llama/testdata/hf-tiny/config.json")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := llamaStopIDs("../llama/testdata/hf-tiny", cfg); err != nil || !slices.Equal(got, []int{2}) {
		t.Errorf("hf-tiny: %v, %v", got, err)
	}
	if got, err := llamaStopIDs(llamaModel, llama.Config{EOS: []int{1, 2}, VocabSize: 512}); err != nil || !slices.Equal(got, []int{1, 2}) {
		t.Errorf("llama2.c: %v, %v", got, err)
	}
	dir := t.TempDir()
	gc := filepath.Join(dir, "generation_config.json")
	for _, c := range []struct {
		body string
		want []int
		err  string
	}{
		{`{"eos_token_id": [2, 5, 7]}`, []int{2, 5, 7}, ""},
		{`{"eos_token_id": 9}`, []int{2, 9}, ""},
		{`{"eos_token_id": null}`, []int{2}, ""},
		{`{"bos_token_id": 1}`, []int{2}, ""},
		{`{"eos_token_id": "x"}`, nil, gc + `: eos_token_id = "x" is neither an id nor a list of ids`},
		{`{"eos_token_id": [600]}`, nil, gc + ": eos_token_id 600 outside the vocabulary [0, 512)"},
	} {
		os.WriteFile(gc, []byte(c.body), 0o644)
		got, err := llamaStopIDs(dir, cfg)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s: err %v, want %q", c.body, err, c.err)
			}
			continue
		}
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("%s: %v (%v), want %v", c.body, got, err, c.want)
		}
	}
	os.Remove(gc)
	if got, err := llamaStopIDs(dir, cfg); err != nil || !slices.Equal(got, []int{2}) {
		t.Errorf("no generation_config.json: %v, %v", got, err)
	}
}

// TestLongBenchLlamaPostProcessField: a bad longbench.postprocess is an error naming the field; "llama-3" with
// natsbench's own LM (never post-processed) is refused.
func TestLongBenchLlamaPostProcessField(t *testing.T) {
	lb := map[string]any{"data": longbenchData, "tasks": []any{"trec"}, "postprocess": "llama3"}
	err := Validate(llamaLBRun("a", map[string]any{"name": "full"}, lb, "ft"))
	if err == nil || !strings.Contains(err.Error(), `longbench.postprocess = "llama3": unknown post-processing "llama3" (did you mean "llama-3"?)`) {
		t.Errorf("bad postprocess: %v", err)
	}
	for _, ok := range []string{"auto", "llama-3", "none"} {
		lb["postprocess"] = ok
		if err := Validate(llamaLBRun("a", map[string]any{"name": "full"}, lb, "ft")); err != nil {
			t.Errorf("postprocess %q: %v", ok, err)
		}
	}
	gpt := lbRun("", "lb", "full", nil, map[string]any{"data": longbenchData, "postprocess": "llama-3"}, "pg")
	if err := Validate(gpt); err == nil || !strings.Contains(err.Error(), `longbench.postprocess = "llama-3" needs a Llama-family model`) {
		t.Errorf("llama-3 with natsbench's own LM: %v", err)
	}
}

// TestLongBenchLlamaPostProcessRun: on the bundled llama2.c model, "auto" resolves to none and "llama-3" to the
// post-processing (llama.json), and the llama-3 run's predictions are PostProcessLlama3 of the auto run's, from the
// same prompt tokens. (This model's short answers carry no separator or outer space, so they come out equal:
// TestLlamaPredictPostProcess exercises the changes.)
func TestLongBenchLlamaPostProcessRun(t *testing.T) {
	_, _, dirOf := llamaRunSetup(t)
	samples := map[string][]lbSample{}
	for _, post := range []string{"auto", "llama-3"} {
		lb := map[string]any{"data": longbenchData, "tasks": []any{"trec", "passage_retrieval_en"}, "max_new_tokens": 4,
			"postprocess": post}
		r := llamaLBRun(post, map[string]any{"name": "full"}, lb, "ft")
		if err := Run(context.Background(), r, dirOf(post), dirOf("ft"), Env{}); err != nil {
			t.Fatal(err)
		}
		var info llamaRunInfo
		b, _ := os.ReadFile(filepath.Join(dirOf(post), llamaInfoFile))
		if err := json.Unmarshal(b, &info); err != nil {
			t.Fatal(err)
		}
		want := map[string]string{"auto": "none", "llama-3": "llama-3"}[post]
		if info.PostProcess != want || !slices.Equal(info.StopIDs, []int{1, 2}) {
			t.Errorf("%s: llama.json postprocess %q, stop ids %v; want %q, [1 2]", post, info.PostProcess, info.StopIDs, want)
		}
		samples[post] = readSamples(t, dirOf(post))
	}
	raw, pp := samples["auto"], samples["llama-3"]
	if len(raw) != 4 || len(pp) != 4 {
		t.Fatalf("%d and %d samples, want 4", len(raw), len(pp))
	}
	for i := range raw {
		if want := longbench.PostProcessLlama3(raw[i].Pred); pp[i].Pred != want || pp[i].TokensIn != raw[i].TokensIn {
			t.Errorf("%s: llama-3 pred %q (%d tokens in), want %q from %q (%d)", raw[i].ID, pp[i].Pred, pp[i].TokensIn, want,
				raw[i].Pred, raw[i].TokensIn)
		}
	}
}

// TestLlamaPredictPostProcess: the tokenizer and generate function of the Llama path (llamaPredict), fed to
// predictLongBench with a scripted generator and the resolved post-processing, post-process every answer — each separator, several, outer space —
// in pred/<task>.jsonl and samples.jsonl, cut a final stop id, leave an answer without separator as decoded and
// never touch the prompt (its ids are those of the plain tokenizer, truncation included); with "none" the
// answers stay as decoded.
func TestLlamaPredictPostProcess(t *testing.T) {
	base, tok := bundledLlama(t)
	lt := llamaTokenizer{tok: tok, cfg: base.Config}
	sets, err := longbench.ReadDir(longbenchData)
	if err != nil {
		t.Fatal(err)
	}
	task := lbTask{name: "qasper", file: "qasper.jsonl"}
	answers := []struct{ text, want string }{
		{"Paris.assistant\n\nThe capital is Paris.", "Paris"},
		{"  Rome \n\nQuestion: and Italy?", "Rome"},
		{"Berlin \n\nQuestion: x.assistant y", "Berlin"},
		{"no separator here", "no separator here"},
	}
	for i := range answers { // the one qasper row of testdata, once per answer
		smp := sets["qasper"].Samples[0]
		smp.ID = "s" + strconv.Itoa(i)
		task.samples = append(task.samples, smp)
	}
	const maxLen = 60
	for _, post := range []longbench.PostProcess{longbench.PostLlama3, longbench.PostNone} {
		calls := 0
		raw := make([]string, len(answers))
		generate := func(ti int, ids []int, maxNew int) (finetune.Generation, error) {
			i := calls
			calls++
			prompt, err := longbench.BuildModelPrompt(task.name, task.samples[i], lt, maxLen, longbench.ChatNone)
			if err != nil {
				return finetune.Generation{}, err
			}
			want := lt.Encode(prompt)
			if len(want) > maxLen {
				want = append(want[:maxLen/2:maxLen/2], want[len(want)-(maxLen-maxLen/2):]...)
			}
			if !slices.Equal(ids, want) {
				t.Errorf("%s sample %d: prompt ids differ from the plain tokenizer's", post, i)
			}
			out := tok.Encode(answers[i].text)
			raw[i] = lt.Decode(out)
			if i%2 == 0 {
				out = append(out, 2) // a final EOS: cut, not decoded
			}
			return finetune.Generation{Tokens: out, KVFraction: 1, KVTokens: float64(len(ids))}, nil
		}
		ltok, gen := llamaPredict(lt, base.Config.IsEOS, generate)
		dir := t.TempDir()
		info := runInfo{id: "x", sweep: "t", key: "x,seed=0", name: "x", method: "full"}
		if err := predictLongBench(context.Background(), info, dir, Env{Log: io.Discard}, []lbTask{task}, longbench.ChatNone,
			[]int{maxLen}, []int{8}, ltok, gen, post); err != nil {
			t.Fatal(err)
		}
		got := readSamples(t, dir)
		lines := readPredFile(t, filepath.Join(dir, predDir, "qasper.jsonl"))
		if len(got) != len(answers) || len(lines) != len(answers) {
			t.Fatalf("%s: %d samples, %d prediction lines, want %d", post, len(got), len(lines), len(answers))
		}
		for i, a := range answers {
			want := raw[i]
			if post == longbench.PostLlama3 {
				want = a.want
				if pw := longbench.PostProcessLlama3(raw[i]); pw != a.want || (a.text != a.want && raw[i] == a.want) {
					t.Fatalf("answer %d decodes to %q, post-processed %q: the test expects %q, changed", i, raw[i], pw, a.want)
				}
			}
			var pred string
			json.Unmarshal(lines[i].obj["pred"], &pred)
			if got[i].Pred != want || pred != want {
				t.Errorf("%s answer %d (%q): samples.jsonl %q, pred file %q, want %q", post, i, a.text, got[i].Pred, pred, want)
			}
			if stop := map[bool]string{true: "eos", false: "length"}[i%2 == 0]; got[i].Stop != stop {
				t.Errorf("%s answer %d: stop %q, want %q", post, i, got[i].Stop, stop)
			}
		}
	}
}

// bundledLlama loads the bundled llama2.c model (aidreams260K.bin) and its tokenizer (tok512.bin).
func bundledLlama(t *testing.T) (*llama.Model, llama.Tokenizer) {
	t.Helper()
	base, err := llama.LoadLlama2C(llamaModel)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := llama.LoadTokenizer(llamaTok)
	if err != nil {
		t.Fatal(err)
	}
	return base, tok
}

// llamaRunSetup loads the bundled llama2.c model and writes a NAtS adapter for it into the run folder "ft" of a
// temporary output root out; dirOf(name) makes and returns the folder of run name there.
func llamaRunSetup(t *testing.T) (base *llama.Model, out string, dirOf func(name string) string) {
	t.Helper()
	base, err := llama.LoadLlama2C(llamaModel)
	if err != nil {
		t.Fatal(err)
	}
	out = t.TempDir()
	dirOf = func(name string) string {
		d := filepath.Join(out, "t", name)
		os.MkdirAll(d, 0o755)
		return d
	}
	writeAdapter(t, base, dirOf("ft"))
	return base, out, dirOf
}
