package experiments

import (
	"context"
	"fmt"
	"io/fs"
	"math"
	"math/rand/v2"
	"natsbench/internal/progress"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"natsbench/finetune"
	"natsbench/llama"
	"natsbench/model"
	"natsbench/nats"
)

// FinetuneConfig is the [finetune] table of kind "finetune": NAtS scorers trained by self-distillation on a frozen
// Llama-family model (NATS-SPEC.md §3) with the synthetic multi-passkey task, then passkey retrieval scored with
// full attention, the NAtS mask and StreamingLLM at the KV budget NAtS ends the prompt with.
type FinetuneConfig struct {
	Model       string  `toml:"model"`        // Hugging Face folder, or a llama2.c checkpoint (.bin)
	Tokenizer   string  `toml:"tokenizer"`    // tokenizer file for a llama2.c checkpoint ("" for HF folders: theirs)
	Haystack    string  `toml:"haystack"`     // folder of .txt books for the passkey haystacks (its train/ subfolder if any)
	Steps       int     `toml:"steps"`        // optimizer steps (one sample each)
	LR          float64 `toml:"lr"`           // peak learning rate (official: 2e-3)
	SeqLen      int     `toml:"seq_len"`      // tokens per sample (haystack words are cut to fit; padded after the answer)
	Words       int     `toml:"words"`        // haystack words drawn per sample (before cutting to seq_len)
	NumKeys     int     `toml:"num_keys"`     // passkeys per sample (1..10)
	KeyWords    int     `toml:"key_words"`    // NATO words per passkey
	CkptEvery   int     `toml:"ckpt_every"`   // steps between resumable states
	LogEvery    int     `toml:"log_every"`    // steps between stored rows
	EvalSamples int     `toml:"eval_samples"` // held-out passkey samples scored after training
	Sinks       int     `toml:"sinks"`        // StreamingLLM baseline: sink tokens
	// LongBenchData is a folder of LongBench-format <task>.jsonl training rows (NATS-SPEC.md §3.5, "mixed"); ""
	// trains on passkeys alone.
	LongBenchData string `toml:"longbench_data"`
	// LongBenchRatio is the share of training samples drawn from longbench_data, in [0, 1] (default 0).
	LongBenchRatio float64 `toml:"longbench_ratio"`
	// DType is the compute dtype of the base model's graphs, training and passkey scoring: "float32" (default; the
	// CPU configuration, materialised attention) or "bfloat16" (the GPU configuration: fused attention).
	DType string `toml:"dtype"`
	// WeightsDType is the dtype the frozen base weights are held in on the device: "float32" or "bfloat16"; ""
	// (default) means finetune.dtype, so no cast copy of the weights exists (finetune.Config.WeightsDType).
	// "bfloat16" with dtype "float32" is refused.
	WeightsDType string `toml:"weights_dtype"`
	// Checkpoint turns on per-layer gradient checkpointing of the student (default false): the same numbers, about
	// one more student forward pass per step, one layer's activations kept instead of all. Llama-3-8B at 16k tokens
	// on one H200 needs it (go run ./finetune/cmd/memest).
	Checkpoint bool `toml:"checkpoint"`
}

func (f FinetuneConfig) validate(m MethodConfig) error {
	switch {
	case f.Model == "":
		return fmt.Errorf("finetune.model is empty: a Hugging Face model folder or a llama2.c .bin")
	case f.Haystack == "":
		return fmt.Errorf("finetune.haystack is empty: a folder of .txt books")
	case f.Steps < 1 || f.LR <= 0:
		return fmt.Errorf("finetune.steps = %d, finetune.lr = %g: must be positive", f.Steps, f.LR)
	case f.SeqLen < 16 || f.Words < 1 || f.EvalSamples < 1:
		return fmt.Errorf("finetune.seq_len = %d (≥ 16), finetune.words = %d, finetune.eval_samples = %d (≥ 1)", f.SeqLen, f.Words, f.EvalSamples)
	case f.NumKeys < 1 || f.NumKeys > 10 || f.KeyWords < 1:
		return fmt.Errorf("finetune.num_keys = %d (1..10), finetune.key_words = %d (≥ 1)", f.NumKeys, f.KeyWords)
	case f.LongBenchRatio < 0 || f.LongBenchRatio > 1:
		return fmt.Errorf("finetune.longbench_ratio = %g: must lie in [0, 1]", f.LongBenchRatio)
	case f.LongBenchRatio > 0 && f.LongBenchData == "":
		return fmt.Errorf("finetune.longbench_ratio = %g needs finetune.longbench_data (a folder of <task>.jsonl)", f.LongBenchRatio)
	case f.DType != "float32" && f.DType != "bfloat16":
		return fmt.Errorf("finetune.dtype = %q: want \"float32\" or \"bfloat16\"", f.DType)
	case m.Name != "nats":
		return fmt.Errorf("method.name = %q: kind finetune trains NAtS scorers (method.name = \"nats\")", m.Name)
	}
	if _, err := finetune.ResolveWeightsDType(f.WeightsDType, f.DType); err != nil {
		return err
	}
	for _, p := range []struct{ key, path string }{{"finetune.model", f.Model}, {"finetune.haystack", f.Haystack}, {"finetune.tokenizer", f.Tokenizer}, {"finetune.longbench_data", f.LongBenchData}} {
		if p.path == "" {
			continue
		}
		if _, err := os.Stat(p.path); err != nil {
			return fmt.Errorf("%s = %q: %w", p.key, p.path, err)
		}
	}
	return nil
}

// loadBase loads the frozen model and its tokenizer.
func loadBase(f FinetuneConfig) (*llama.Model, llama.Tokenizer, error) {
	var m *llama.Model
	var err error
	if st, e := os.Stat(f.Model); e == nil && st.IsDir() {
		m, err = llama.Load(f.Model)
	} else {
		m, err = llama.LoadLlama2C(f.Model)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("finetune.model = %q: %w", f.Model, err)
	}
	tp := f.Tokenizer
	if tp == "" {
		tp = f.Model
	}
	tok, err := llama.LoadTokenizerFor(tp, m.Config)
	if err != nil {
		return nil, nil, fmt.Errorf("finetune.tokenizer = %q: %w", tp, err)
	}
	return m, tok, nil
}

// haystackWords reads the words of the .txt files under dir (its train/ subfolder when present), in path order,
// up to max words.
func haystackWords(dir string, max int) ([]string, error) {
	if st, err := os.Stat(filepath.Join(dir, "train")); err == nil && st.IsDir() {
		dir = filepath.Join(dir, "train")
	}
	var files []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".txt") {
			files = append(files, p)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("finetune.haystack = %q: %w", dir, err)
	}
	sort.Strings(files)
	var words []string
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		words = append(words, strings.Fields(string(b))...)
		if len(words) >= max {
			break
		}
	}
	if len(words) < 100 {
		return nil, fmt.Errorf("finetune.haystack = %q: %d words in .txt files, need at least 100", dir, len(words))
	}
	return words, nil
}

// passkeySample builds sample index of the run: tokens padded to seq_len, labels (1 on answer tokens), the number
// of real tokens and where the answer starts. Haystack words are dropped from the end until the sample fits.
func passkeySample(f FinetuneConfig, tok llama.Tokenizer, words []string, seed, index uint64) (toks []int32, labels []float32, n, ans int, err error) {
	r := rand.New(rand.NewPCG(seed^0x70617373, index))
	nw := min(f.Words, len(words))
	start := r.IntN(len(words) - nw + 1)
	for w := nw; w >= f.NumKeys; w = w * 3 / 4 {
		p, err := finetune.NewPasskey(strings.Join(words[start:start+w], " "), f.NumKeys, f.KeyWords, seed, index)
		if err != nil {
			return nil, nil, 0, 0, err
		}
		ctx := append([]int{tok.BOS()}, tok.Encode(p.Context)...)
		a := tok.Encode(p.Answer)
		if len(ctx)+len(a) > f.SeqLen {
			continue
		}
		toks = make([]int32, f.SeqLen)
		labels = make([]float32, f.SeqLen)
		for i, t := range append(ctx, a...) {
			toks[i] = int32(t)
		}
		for i := len(ctx); i < len(ctx)+len(a); i++ {
			labels[i] = 1
		}
		return toks, labels, len(ctx) + len(a), len(ctx), nil
	}
	return nil, nil, 0, 0, fmt.Errorf("finetune.seq_len = %d: too short for %d passkeys of %d words", f.SeqLen, f.NumKeys, f.KeyWords)
}

// mixedSample is training sample index of the run (NATS-SPEC.md §3.5 "mixed"): a pure function of (seed, index),
// a LongBench-style row with probability longbench_ratio (the draw of finetune.Mix.Sample), else a passkey sample.
// A LongBench prompt longer than seq_len keeps its first and last tokens (LongBench's middle truncation); an
// answer longer than half of seq_len keeps its first half-seq_len tokens.
func mixedSample(f FinetuneConfig, tok llama.Tokenizer, words []string, lb []finetune.TrainSample, seed, index uint64) ([]int32, []float32, error) {
	r := rand.New(rand.NewPCG(seed^0x6d6978, index))
	if f.LongBenchRatio == 0 || r.Float64() >= f.LongBenchRatio {
		toks, labels, _, _, err := passkeySample(f, tok, words, seed, index)
		return toks, labels, err
	}
	s := lb[r.IntN(len(lb))]
	ctx := append([]int{tok.BOS()}, tok.Encode(s.Prompt)...)
	a := tok.Encode(s.Answer)
	if len(a) > f.SeqLen/2 {
		a = a[:f.SeqLen/2]
	}
	if budget := f.SeqLen - len(a); len(ctx) > budget {
		ctx = append(ctx[:budget/2:budget/2], ctx[len(ctx)-(budget-budget/2):]...)
	}
	toks, labels := make([]int32, f.SeqLen), make([]float32, f.SeqLen)
	for i, t := range append(ctx, a...) {
		toks[i] = int32(t)
	}
	for i := len(ctx); i < len(ctx)+len(a); i++ {
		labels[i] = 1
	}
	return toks, labels, nil
}

// runFinetune trains the scorers (resuming from dir/ckpt/state.ckpt), saves dir/adapter.safetensors and scores
// passkey retrieval on held-out samples under full attention, NAtS and StreamingLLM at the NAtS budget.
func runFinetune(ctx context.Context, rc RunConfig, info runInfo, dir string, env Env) error {
	f := rc.Finetune
	backend, err := model.NewBackend(env.Backend)
	if err != nil {
		return err
	}
	base, tok, err := loadBase(f)
	if err != nil {
		return err
	}
	base.Config.DType = f.DType
	if f.SeqLen > base.Config.MaxPositions {
		return fmt.Errorf("finetune.seq_len = %d exceeds the model's %d positions (%s)", f.SeqLen, base.Config.MaxPositions, f.Model)
	}
	words, err := haystackWords(f.Haystack, 4_000_000)
	if err != nil {
		return err
	}
	nm, err := nats.New(nats.Config{Lambda: rc.Method.Lambda, Window: rc.Method.Window, Chunk: rc.Method.ChunkSize,
		Merge: rc.Method.ChunkMerge, Roles: rc.Method.Roles, GlobalBonus: rc.Method.GlobalBonus})
	if err != nil {
		return fmt.Errorf("method: %w", err)
	}
	cfg := finetune.DefaultConfig()
	cfg.Steps, cfg.LR, cfg.Checkpoint, cfg.WeightsDType = f.Steps, f.LR, f.Checkpoint, f.WeightsDType
	tr, err := finetune.New(backend, base, nm, cfg, info.seed)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Log, "  finetune %s: compute %s, weights held in %s, checkpointing %v\n", short(info.key), f.DType,
		tr.Cfg.WeightsDType, f.Checkpoint)
	var lb []finetune.TrainSample
	if f.LongBenchRatio > 0 {
		if lb, err = finetune.LongBenchSources(f.LongBenchData, 0, 0, 0); err != nil {
			return err
		}
	}
	state := filepath.Join(dir, "ckpt", "state.ckpt")
	var rows []Row
	switch err := tr.RestoreState(state); {
	case err == nil:
		if rows, err = readTrainRows(dir); err != nil {
			return err
		}
		rows = truncateRows(rows, tr.Step)
		fmt.Fprintf(env.Log, "  resuming %s from step %d\n", info.key, tr.Step)
	case err != finetune.ErrNoState:
		return fmt.Errorf("resume %s: %w", state, err)
	}
	if err := os.MkdirAll(filepath.Dir(state), 0o755); err != nil {
		return err
	}
	start, startStep := time.Now(), tr.Step
	live := progress.New(env.Log)
	for tr.Step < int64(f.Steps) {
		if err := ctx.Err(); err != nil {
			return err
		}
		toks, labels, err := mixedSample(f, tok, words, lb, info.seed, uint64(tr.Step))
		if err != nil {
			return err
		}
		row, err := tr.TrainStep(toks, labels)
		if err != nil {
			return fmt.Errorf("%s: %w", info.key, err)
		}
		if f.LogEvery <= 1 || row.Step%int64(f.LogEvery) == 0 || row.Step == int64(f.Steps) {
			mk := func(metric string, v float64) Row {
				r := info.row("train", "train", metric, math.NaN(), v, int64(f.SeqLen))
				r.Step = row.Step
				return r
			}
			rows = append(rows, mk("distill_loss", row.Loss), mk("sparsity_loss", row.Aux), mk("mask_density", row.Density), mk("lr", row.LR))
		}
		el := time.Since(start).Seconds()
		live.Update("  finetune %-31s step %d/%d distill %.4g density %.3f ETA %s   ", short(info.key), row.Step, f.Steps,
			row.Loss, row.Density, (time.Duration(el/float64(tr.Step-startStep)*float64(int64(f.Steps)-tr.Step)) * time.Second).Round(time.Second))
		if (f.CkptEvery > 0 && row.Step%int64(f.CkptEvery) == 0) || row.Step == int64(f.Steps) {
			if err := tr.SaveState(state); err != nil {
				return err
			}
			if err := writeTrainRows(dir, rows); err != nil {
				return err
			}
		}
	}
	live.End()
	if err := tr.SaveAdapter(filepath.Join(dir, "adapter.safetensors")); err != nil {
		return err
	}
	evalRows, err := passkeyEval(tr, f, tok, words, info, env)
	if err != nil {
		return err
	}
	return writeMetrics(filepath.Join(dir, "metrics.parquet"), info, append(rows, evalRows...))
}

// passkeyEval scores held-out samples (indices from 1<<40 on, never trained on): exact-match passkey accuracy and
// agreement with full attention's answer tokens, with the KV fraction of each policy. StreamingLLM gets the
// budget NAtS ends the prompt with (mean over samples, layers and heads of the keys visible to the last query).
func passkeyEval(tr *finetune.Trainer, f FinetuneConfig, tok llama.Tokenizer, words []string, info runInfo, env Env) ([]Row, error) {
	type sample struct {
		toks []int32
		n, a int
	}
	var ss []sample
	for k := 0; k < f.EvalSamples; k++ {
		toks, _, n, a, err := passkeySample(f, tok, words, info.seed, 1<<40+uint64(k))
		if err != nil {
			return nil, err
		}
		ss = append(ss, sample{toks, n, a})
	}
	live := progress.New(env.Log)
	score := func(p finetune.Policy, ref [][]int32) (acc, agree, frac, kept float64, preds [][]int32, err error) {
		for i, s := range ss {
			pr, err := tr.Predict(p, s.toks, s.n)
			if err != nil {
				return 0, 0, 0, 0, nil, err
			}
			ans := pr.Argmax[s.a-1 : s.n-1] // prediction of answer token k comes from position a−1+k
			ok := true
			for k, t := range ans {
				ok = ok && t == s.toks[s.a+k]
			}
			if ok {
				acc++
			}
			if ref != nil && fmt.Sprint(ans) == fmt.Sprint(ref[i]) {
				agree++
			}
			frac += pr.KVFrac
			kept += pr.KeptLast
			preds = append(preds, ans)
			live.Update("  passkey %-12s sample %d/%d", p.Name, i+1, len(ss))
		}
		live.End()
		n := float64(len(ss))
		return acc / n, agree / n, frac / n, kept / n, preds, nil
	}
	var rows []Row
	add := func(method string, acc, agree, frac float64) {
		for _, m := range []struct {
			name string
			v    float64
		}{{"passkey_accuracy", acc}, {"answer_agreement", agree}, {"kv_fraction", frac}} {
			r := info.row("passkey", "eval", m.name, float64(f.SeqLen), m.v, int64(len(ss)))
			r.Method = method
			rows = append(rows, r)
		}
	}
	acc, _, _, _, ref, err := score(finetune.Policy{Name: "full"}, nil)
	if err != nil {
		return nil, err
	}
	add("full", acc, 1, 1)
	acc, agree, frac, kept, _, err := score(finetune.Policy{Name: "nats"}, ref)
	if err != nil {
		return nil, err
	}
	add("nats", acc, agree, frac)
	budget := max(int(math.Round(kept)), f.Sinks+1)
	acc, agree, sfrac, _, _, err := score(finetune.Policy{Name: "streamingllm", Sinks: f.Sinks, Budget: budget}, ref)
	if err != nil {
		return nil, err
	}
	add("streamingllm", acc, agree, sfrac)
	fmt.Fprintf(env.Log, "  passkey: nats kv fraction %.3f (%.1f keys at the end of the prompt), streamingllm budget %d kv fraction %.3f\n",
		frac, kept, budget, sfrac)
	return rows, nil
}
