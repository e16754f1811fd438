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

	"context"

	"natsbench/finetune"
	"natsbench/llama"
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
// NATS-SPEC §3.6), and decoding skips BOS and the config's EOS ids (skip_special_tokens).
type llamaTokenizer struct {
	tok llama.Tokenizer
	cfg llama.Config
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
		if id != l.tok.BOS() && !l.cfg.IsEOS(id) {
			keep = append(keep, id)
		}
	}
	return l.tok.Decode(keep)
}

func (llamaTokenizer) Err() error { return nil }

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
// sequence length is the model's max_position_embeddings. The tokenizer adds BOS and decoding stops at the
// config's EOS ids (NATS-SPEC §3.6; no model-specific post-processing).
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
	li := llamaRunInfo{BaseModel: base.Source, Fingerprint: finetune.Fingerprint(base.Config), Method: rc.Method.Name}
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
			g, err = finetune.NewGenerator(backend, base, nil, nil, nil, 0)
		case "nats":
			g, err = finetune.NewGenerator(backend, base, masker, scorers, nil, 0)
		default:
			mk, ev, berr := m.Build()
			if berr != nil {
				return fmt.Errorf("task %s: %w", t.name, berr)
			}
			if m.Name == "streamingllm" {
				g, err = finetune.NewGenerator(backend, base, mk, nil, nil, 0) // exact at any prefill chunk
			} else {
				g, err = finetune.NewGenerator(backend, base, nil, nil, ev, lc.PrefillChunk)
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
	cfg := base.Config
	gen := func(ti int, ids []int, maxNew int) ([]int, int, bool, float64, float64, error) {
		res, err := gens[ti].Generate(ids, maxNew)
		if err != nil {
			return nil, 0, false, 0, 0, err
		}
		out, eos := res.Tokens, false
		if n := len(out); n > 0 && cfg.IsEOS(out[n-1]) {
			out, eos = out[:n-1], true
		}
		return out, len(res.Tokens), eos, res.KVFraction, res.KVTokens, nil
	}
	return predictLongBench(ctx, info, dir, env, tasks, chat, maxLen, maxNew, llamaTokenizer{tok: tok, cfg: cfg}, gen)
}
