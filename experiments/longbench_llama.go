package experiments

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"

	"context"

	"natsbench/finetune"
	"natsbench/llama"
	"natsbench/longbench"
	"natsbench/model"
	"natsbench/nats"
	"natsbench/results"
)

// llamaInfoFile is what a Llama longbench run records about its model and policy (read by budget-matched runs).
const llamaInfoFile = "llama.json"

// adapterFile is the NAtS adapter a finetune run leaves in its folder.
const adapterFile = "adapter.safetensors"

// llamaRunInfo is the content of llama.json.
type llamaRunInfo struct {
	BaseModel   string         `json:"base_model"`       // finetune.model as loaded
	Fingerprint string         `json:"base_fingerprint"` // finetune.Fingerprint of its config
	Method      string         `json:"method"`
	Adapter     string         `json:"adapter,omitempty"` // the NAtS adapter used (method nats)
	NAtS        *nats.Config   `json:"nats,omitempty"`    // its settings
	Budgets     map[string]int `json:"budgets,omitempty"` // per task budget (longbench.match_budget)
	PostProcess string         `json:"postprocess"`       // longbench.postprocess resolved: "llama-3" or "none"
	StopIDs     []int          `json:"stop_ids"`          // decoding stops after any of these (llamaStopIDs)
}

// longbenchLlama reports whether a longbench run serves a Llama-family model: finetune.model names it (and
// finetune.tokenizer its tokenizer), as in kind finetune.
func longbenchLlama(rc RunConfig) bool { return rc.Finetune.Model != "" }

// validateLongBenchLlama checks a Llama longbench run: the [longbench] table, the method (NAtS settings come
// from the adapter; with match_budget the budget comes from the source, per task) and the base model's files.
func validateLongBenchLlama(rc RunConfig) error {
	m := rc.Method
	if rc.LongBench.MatchBudget {
		switch m.Name {
		case "streamingllm", "h2o", "tova":
		default:
			return fmt.Errorf("longbench.match_budget: method.name = %q has no budget (streamingllm, h2o or tova)", m.Name)
		}
		m.Budget = max(m.Budget, m.Sinks+1, m.Recent, 1) // a placeholder: the real budget is set per task
	}
	if err := rc.LongBench.validate(m); err != nil {
		return err
	}
	if _, _, err := m.Build(); err != nil {
		return err
	}
	for _, p := range []struct{ key, path string }{{"finetune.model", rc.Finetune.Model}, {"finetune.tokenizer", rc.Finetune.Tokenizer}} {
		if p.path == "" {
			continue
		}
		if _, err := os.Stat(p.path); err != nil {
			return fmt.Errorf("%s = %q: %w", p.key, p.path, err)
		}
	}
	return nil
}

// llamaTokenizer is a Llama tokenizer as LongBench prediction uses it: BOS first (tokenizer(prompt) adds it,
// NATS-SPEC §3.6), and decoding skips special tokens (skip_special_tokens=True): BOS, the config's EOS ids and the
// ids in skip (llamaSpecialIDs: the stop ids and the tokenizer's other special tokens).
type llamaTokenizer struct {
	tok  llama.Tokenizer
	cfg  llama.Config
	skip map[int]bool
}

func (l llamaTokenizer) Encode(text string) []int {
	ids := l.tok.Encode(text)
	if b := l.tok.BOS(); b >= 0 {
		ids = append([]int{b}, ids...)
	}
	return ids
}

func (l llamaTokenizer) Decode(ids []int) string {
	keep := make([]int, 0, len(ids))
	for _, id := range ids {
		if id != l.tok.BOS() && !l.cfg.IsEOS(id) && !l.skip[id] {
			keep = append(keep, id)
		}
	}
	return l.tok.Decode(keep)
}

func (llamaTokenizer) Err() error { return nil }

// llama3Vocab is the vocabulary size of every Llama-3 model (3, 3.1, 3.2): 128000 byte-level BPE tokens and 256
// special ones.
const llama3Vocab = 128256

// isLlama3 reports whether a loaded model is a Llama-3 one, for longbench.postprocess = "auto". hf_pred.py
// keys the post-processing on the model name ("llama-3", as in Meta-Llama-3.1-8B-Instruct); a local folder's name
// says little, so the model itself decides: a LlamaForCausalLM config with Llama-3's vocab_size of 128256, or the
// Llama-3 tokenizer (llama.LoadTokenizer reads only Llama-3's byte-level BPE tokenizer.json, checked here by its
// <|begin_of_text|> and <|end_of_text|> special tokens). Llama 2, Mistral and llama2.c models (SentencePiece or
// llama2.c tokenizers, 32000/32768/512 ids) are not.
func isLlama3(cfg llama.Config, tok llama.Tokenizer) bool {
	if cfg.Architecture == "LlamaForCausalLM" && cfg.VocabSize == llama3Vocab {
		return true
	}
	if bl, ok := tok.(*llama.ByteLevelBPE); ok {
		return bl.TokenID("<|begin_of_text|>") >= 0 && bl.TokenID("<|end_of_text|>") >= 0
	}
	return false
}

// llamaPostProcess resolves longbench.postprocess for the loaded model: "llama-3" or "none" as given, "auto" (or
// "") by isLlama3. A bad name is an error naming the field.
func llamaPostProcess(name string, cfg llama.Config, tok llama.Tokenizer) (longbench.PostProcess, error) {
	p, err := longbench.ParsePostProcess(name)
	if err != nil {
		return "", fmt.Errorf("longbench.postprocess = %q: %w", name, err)
	}
	if p == longbench.PostAuto {
		p = longbench.PostNone
		if isLlama3(cfg, tok) {
			p = longbench.PostLlama3
		}
	}
	return p, nil
}

// llamaStopIDs returns the ids decoding stops at: the config's eos_token_id and, for a Hugging Face folder, the
// eos_token_id of its generation_config.json (hf_pred.py stops at any of generation_config.eos_token_id —
// Llama-3.1-Instruct: 128001, 128008, 128009 — while config.json may list fewer, e.g. Llama-3-8B-Instruct's
// 128009 alone). The union, not HF's replacement, so that no config EOS is ever generated past; the two agree
// for the models NAtS used.
func llamaStopIDs(modelPath string, cfg llama.Config) ([]int, error) {
	ids := slices.Clone(cfg.EOS)
	if st, err := os.Stat(modelPath); err != nil || !st.IsDir() {
		return ids, nil
	}
	path := filepath.Join(modelPath, "generation_config.json")
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return ids, nil
	} else if err != nil {
		return nil, fmt.Errorf("finetune.model: %w", err)
	}
	var gc struct {
		EOS json.RawMessage `json:"eos_token_id"`
	}
	if err := json.Unmarshal(b, &gc); err != nil {
		return nil, fmt.Errorf("finetune.model: %s: %w", path, err)
	}
	var one *int
	var many []int
	switch {
	case len(gc.EOS) == 0 || string(gc.EOS) == "null":
	case json.Unmarshal(gc.EOS, &one) == nil && one != nil:
		many = []int{*one}
	case json.Unmarshal(gc.EOS, &many) == nil:
	default:
		return nil, fmt.Errorf("finetune.model: %s: eos_token_id = %s is neither an id nor a list of ids", path, gc.EOS)
	}
	for _, id := range many {
		if id < 0 || id >= cfg.VocabSize {
			return nil, fmt.Errorf("finetune.model: %s: eos_token_id %d outside the vocabulary [0, %d)", path, id, cfg.VocabSize)
		}
		if !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// llamaSpecialIDs returns the ids that decoding with skip_special_tokens drops besides BOS: the stop ids; for the
// Llama-3 tokenizer the added tokens marked special in its tokenizer.json (all 256 of Llama 3's, e.g.
// <|start_header_id|>, so that ".assistant" of the llama-3 post-processing matches as in HF); for SentencePiece
// models the control and unknown pieces (<s>, </s>, <unk>, Mistral's [INST] …). tokPath is finetune.tokenizer
// (or finetune.model), as loadBase opens it.
func llamaSpecialIDs(tokPath string, tok llama.Tokenizer, stops []int) (map[int]bool, error) {
	skip := map[int]bool{}
	for _, id := range stops {
		skip[id] = true
	}
	switch t := tok.(type) {
	case *llama.SentencePieceTokenizer:
		for id, typ := range t.Types {
			if typ == 2 || typ == 3 { // sentencepiece_model.proto: UNKNOWN, CONTROL
				skip[id] = true
			}
		}
	case *llama.ByteLevelBPE:
		path := tokPath
		if st, err := os.Stat(path); err == nil && st.IsDir() {
			path = filepath.Join(path, "tokenizer.json") // the only file llama.LoadTokenizer reads a ByteLevelBPE from
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("finetune.tokenizer: %w", err)
		}
		var j struct {
			Added []struct {
				ID      int  `json:"id"`
				Special bool `json:"special"`
			} `json:"added_tokens"`
		}
		if err := json.Unmarshal(b, &j); err != nil {
			return nil, fmt.Errorf("finetune.tokenizer: %s: %w", path, err)
		}
		for _, a := range j.Added {
			if a.Special {
				skip[a.ID] = true
			}
		}
	}
	return skip, nil
}

// finetuneAdapter returns the adapter of the finetune run in fromDir; a source of another kind, or one without an
// adapter, is an error naming the file.
func finetuneAdapter(fromDir string) (string, error) {
	if m, err := results.ReadManifest(fromDir); err == nil && m.Kind != "finetune" {
		return "", fmt.Errorf("from: %s is a %q run (manifest.json kind), not a finetune run: a Llama longbench run takes the NAtS adapter (and checks the base model) from kind finetune; a budget-matched baseline (longbench.match_budget) takes a NAtS longbench run",
			fromDir, m.Kind)
	}
	path := filepath.Join(fromDir, adapterFile)
	if _, err := os.Stat(path); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("from: %s does not exist: the source must be a finished finetune run", path)
		}
		return "", err
	}
	return path, nil
}

// matchSource reads the NAtS longbench run in fromDir for budget matching: its llama.json (method nats, the same
// base model) and its samples.jsonl, and returns the mean kept keys per task.
func matchSource(fromDir, fingerprint, baseModel string) (map[string]float64, error) {
	ipath := filepath.Join(fromDir, llamaInfoFile)
	b, err := os.ReadFile(ipath)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("from: %s does not exist: longbench.match_budget needs a Llama longbench run of method nats as its source", ipath)
		}
		return nil, err
	}
	var src llamaRunInfo
	if err := json.Unmarshal(b, &src); err != nil {
		return nil, fmt.Errorf("from: %s: %w", ipath, err)
	}
	if src.Method != "nats" {
		return nil, fmt.Errorf("from: %s: method %q: longbench.match_budget matches the KV fraction of a nats run", ipath, src.Method)
	}
	if src.Fingerprint != fingerprint {
		return nil, fmt.Errorf("from: %s: base_fingerprint %s (%s) is not this run's finetune.model %q (%s)", ipath, src.Fingerprint,
			src.BaseModel, baseModel, fingerprint)
	}
	spath := filepath.Join(fromDir, samplesFile)
	f, err := os.Open(spath)
	if err != nil {
		return nil, fmt.Errorf("from: %w", err)
	}
	defer f.Close()
	sum, n := map[string]float64{}, map[string]int{}
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<26)
	for line := 1; sc.Scan(); line++ {
		var s lbSample
		if err := json.Unmarshal(sc.Bytes(), &s); err != nil {
			return nil, fmt.Errorf("from: %s line %d: %w", spath, line, err)
		}
		sum[s.Task] += s.KVTokens
		n[s.Task]++
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("from: %s: %w", spath, err)
	}
	for t := range sum {
		sum[t] /= float64(n[t])
	}
	return sum, nil
}

// runLongBenchLlama is kind longbench for a Llama-family model (finetune.model, finetune.tokenizer; HF folder or
// llama2.c): the prompts, truncation, scoring and rows of runLongBench, with greedy decoding by
// finetune.Generator under the run's method — full attention; NAtS with the adapter of the `from` finetune run
// (its NAtS settings; the method table's are not used); StreamingLLM, H2O, TOVA at method.budget, or, with
// longbench.match_budget, at the `from` NAtS run's mean kept keys per task, rounded, plus the query itself, so that
// the baseline keeps as many keys at the end of generation as NAtS did on average (NATS-SPEC §3.7). The
// sequence length is the model's max_position_embeddings.
//
// NAtS's inference protocol (hf_pred.py, NATS-SPEC §3.6), point by point:
//   - Chat template: none by default (longbench.chat_template = "none", as in the sweep); another template is the
//     user's explicit deviation, applied as the longbench package defines it.
//   - The tokenizer adds BOS (llamaTokenizer.Encode); middle truncation decodes with skip_special_tokens.
//   - Greedy decoding stops after any id of llamaStopIDs: the config's eos_token_id plus generation_config.json's.
//   - No samsum "\n" stop (THUDM pred.py's special case is not in hf_pred.py, nor here); eval.py's first-line cut
//     for trec, triviaqa, samsum and lsht still applies at scoring.
//   - The answer is decoded with skip_special_tokens (llamaSpecialIDs) and post-processed per
//     longbench.postprocess: for Llama-3 models (auto: isLlama3) cut at ".assistant", "\n\nQuestion", "</s>" and
//     stripped (longbench.PostProcessLlama3); pred/<task>.jsonl and samples.jsonl hold the post-processed text.
//   - RoPE positions: generated tokens take their true positions (the first one fed back at len(prompt)), as HF generate and
//     THUDM pred.py do. hf_pred.py's decoding position ids start at context_len+1 (a +1 shift of every generated
//     token, §3.6), which §8 lists among the defects not to copy; finetune.Generator's masked recomputation has
//     no position gap, and we keep it that way: the shift is a bug of the reference script, not part of the
//     method, and it moves only the answer's positions by one.
//   - The debug truncation to 2 layers of the retrieved hf_pred.py is not reproduced (all layers run).
func runLongBenchLlama(ctx context.Context, rc RunConfig, info runInfo, dir, fromDir string, env Env) error {
	lc := rc.LongBench
	if fromDir == "" {
		return fmt.Errorf("%s: kind longbench needs `from` (a finetune run, or a nats longbench run with longbench.match_budget)", info.key)
	}
	chat, tasks, backend, err := longBenchInputs(lc, env)
	if err != nil {
		return err
	}
	base, tok, err := loadBase(rc.Finetune)
	if err != nil {
		return err
	}
	post, err := llamaPostProcess(lc.PostProcess, base.Config, tok)
	if err != nil {
		return err
	}
	stops, err := llamaStopIDs(rc.Finetune.Model, base.Config)
	if err != nil {
		return err
	}
	tokPath := rc.Finetune.Tokenizer
	if tokPath == "" {
		tokPath = rc.Finetune.Model
	}
	skip, err := llamaSpecialIDs(tokPath, tok, stops)
	if err != nil {
		return err
	}
	li := llamaRunInfo{BaseModel: base.Source, Fingerprint: finetune.Fingerprint(base.Config), Method: rc.Method.Name,
		PostProcess: string(post), StopIDs: stops}
	fmt.Fprintf(env.Log, "  longbench %s: post-processing %s (longbench.postprocess = %q), stop ids %v\n", short(info.key), post,
		lc.PostProcess, stops)
	var masker model.Masker
	var scorers *model.Params
	var matched map[string]float64
	if lc.MatchBudget {
		if matched, err = matchSource(fromDir, li.Fingerprint, base.Source); err != nil {
			return err
		}
		li.Budgets = map[string]int{}
	} else {
		path, err := finetuneAdapter(fromDir)
		if err != nil {
			return err
		}
		nm, tr, err := finetune.LoadAdapter(path, base)
		if err != nil {
			return fmt.Errorf("from: %w", err)
		}
		if rc.Method.Name == "nats" {
			cfg := nm.Config()
			masker, scorers, li.Adapter, li.NAtS = nm, tr.Scorers, path, &cfg
			fmt.Fprintf(env.Log, "  longbench %s: nats adapter %s (window %d, chunk %d, global bonus %g)\n", short(info.key), path,
				cfg.Window, cfg.Chunk, cfg.GlobalBonus)
		}
	}
	// The generators stop at the stop ids: a shallow copy of the model (the same weights) whose config lists them
	// as EOS. The adapter and fingerprint checks above used the config as loaded.
	gbase := *base
	gbase.Config.EOS = stops
	room := base.Config.MaxPositions
	maxLen, maxNew, err := lbLengths(lc, tasks, room, fmt.Sprintf("max_position_embeddings of %s", rc.Finetune.Model))
	if err != nil {
		return err
	}
	gens := make([]*finetune.Generator, len(tasks))
	byBudget := map[int]*finetune.Generator{}
	for ti, t := range tasks {
		if maxLen[ti]+maxNew[ti] > room {
			return fmt.Errorf("longbench.max_length = %d + %d new tokens (task %s) exceed the %d positions of %s", maxLen[ti], maxNew[ti], t.name,
				room, rc.Finetune.Model)
		}
		m := rc.Method
		if lc.MatchBudget {
			kv, ok := matched[t.name]
			if !ok {
				return fmt.Errorf("from: %s has no sample of task %s to match the budget to", filepath.Join(fromDir, samplesFile), t.name)
			}
			m.Budget = int(math.Round(kv)) + 1 // the budget counts the query itself; kv counts the keys kept
			if m.Name == "streamingllm" {
				m.Budget = max(m.Budget, m.Sinks+1)
			}
			if m.Name == "h2o" && m.Recent > m.Budget {
				m.Recent = m.Budget
			}
			li.Budgets[t.name] = m.Budget
		}
		if g := byBudget[m.Budget]; g != nil {
			gens[ti] = g
			continue
		}
		var g *finetune.Generator
		switch m.Name {
		case "full":
			g, err = finetune.NewGenerator(backend, &gbase, nil, nil, nil, 0)
		case "nats":
			g, err = finetune.NewGenerator(backend, &gbase, masker, scorers, nil, 0)
		default:
			mk, ev, berr := m.Build()
			if berr != nil {
				return fmt.Errorf("task %s: %w", t.name, berr)
			}
			if m.Name == "streamingllm" {
				g, err = finetune.NewGenerator(backend, &gbase, mk, nil, nil, 0) // exact at any prefill chunk
			} else {
				g, err = finetune.NewGenerator(backend, &gbase, nil, nil, ev, lc.PrefillChunk)
			}
		}
		if err != nil {
			return fmt.Errorf("%s: %w", info.key, err)
		}
		gens[ti], byBudget[m.Budget] = g, g
	}
	if li.Budgets != nil {
		fmt.Fprintf(env.Log, "  longbench %s: budgets matched to the nats run per task: %v\n", short(info.key), li.Budgets)
	}
	if err := results.WriteFileAtomic(filepath.Join(dir, llamaInfoFile), func(w io.Writer) error {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(li)
	}); err != nil {
		return err
	}
	cfg := gbase.Config
	ltok, gen := llamaPredict(llamaTokenizer{tok: tok, cfg: cfg, skip: skip}, cfg.IsEOS,
		func(ti int, ids []int, maxNew int) (finetune.Generation, error) {
			return gens[ti].Generate(ids, maxNew)
		})
	return predictLongBench(ctx, info, dir, env, tasks, chat, maxLen, maxNew, ltok, gen, post)
}

// llamaPredict returns the tokenizer and the generate function predictLongBench takes for a Llama model: generate
// decodes greedily for the task of index ti; a final stop id (isStop) is cut off the answer. (predictLongBench
// post-processes each decoded answer.)
func llamaPredict(tok lbTokenizer, isStop func(int) bool,
	generate func(ti int, ids []int, maxNew int) (finetune.Generation, error)) (lbTokenizer, lbGenerate) {
	gen := func(ti int, ids []int, maxNew int) ([]int, int, bool, float64, float64, error) {
		res, err := generate(ti, ids, maxNew)
		if err != nil {
			return nil, 0, false, 0, 0, err
		}
		out, eos := res.Tokens, false
		if n := len(out); n > 0 && isStop(out[n-1]) {
			out, eos = out[:n-1], true
		}
		return out, len(res.Tokens), eos, res.KVFraction, res.KVTokens, nil
	}
	return tok, gen
}
