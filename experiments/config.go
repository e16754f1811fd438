package experiments

import (
	"fmt"
	"natsbench/internal/suggest"
	"os"
	"sort"
	"strings"

	"natsbench/kvcache"
	"natsbench/longbench"
	"natsbench/model"
	"natsbench/nats"
	"natsbench/policy"
	"natsbench/train"
)

// RunConfig is the typed configuration of one run: the resolved [base] + [[run]] tables of a sweep, decoded
// strictly (an unknown key is an error naming the sweep file and key).
type RunConfig struct {
	Data      DataConfig      `toml:"data"`
	Model     model.Config    `toml:"model"`
	Method    MethodConfig    `toml:"method"`
	Train     train.Config    `toml:"train"`
	Eval      EvalConfig      `toml:"eval"`
	Latency   LatencyConfig   `toml:"latency"`
	LongBench LongBenchConfig `toml:"longbench"`
	Finetune  FinetuneConfig  `toml:"finetune"`
}

// DataConfig is the [data] table.
type DataConfig struct {
	Dir       string `toml:"dir"`       // PG-19 release layout, HF Parquet layout, or prepared shards; default testdata/pg19
	Tokenizer string `toml:"tokenizer"` // "gpt2"
}

// MethodConfig is the [method] table: the attention/cache method and its knobs.
type MethodConfig struct {
	Name        string   `toml:"name"`         // full | streamingllm | h2o | tova | nats
	Lambda      float64  `toml:"lambda"`       // nats: λ
	Window      int      `toml:"window"`       // nats: W
	ChunkSize   int      `toml:"chunk_size"`   // nats: C
	ChunkMerge  string   `toml:"chunk_merge"`  // nats: mean | max
	Roles       []string `toml:"roles"`        // nats: enabled roles
	GlobalBonus float64  `toml:"global_bonus"` // nats: +bonus on the Global logit at inference (0.1)
	Sinks       int      `toml:"sinks"`        // streamingllm: sink tokens
	Budget      int      `toml:"budget"`       // streamingllm, h2o, tova: keys visible per query, itself included
	Recent      int      `toml:"recent"`       // h2o: most recent tokens always kept
}

// EvalConfig is the [eval] table: PG-19 streaming evaluation (NATS-SPEC.md §2.5).
type EvalConfig struct {
	Split           string `toml:"split"`            // "test"
	ContextLen      int    `toml:"context_len"`      // tokens predicted per window (windows are context_len+1 tokens)
	MaxWindows      int    `toml:"max_windows"`      // 0 = all windows of the split
	BatchSize       int    `toml:"batch_size"`       // windows decoded together
	PositionBuckets []int  `toml:"position_buckets"` // upper bounds of per-position NLL buckets
	Fast            bool   `toml:"fast"`             // also report the parallel masked forward (methods with a mask)
}

// LatencyConfig is the [latency] table (kind latency).
type LatencyConfig struct {
	PromptLens   []int  `toml:"prompt_lens"`
	BatchSize    int    `toml:"batch_size"`
	DecodeTokens int    `toml:"decode_tokens"`
	Warmup       int    `toml:"warmup"`
	Repeats      int    `toml:"repeats"`
	PromptSource string `toml:"prompt_source"`
	// MemLimitGiB bounds the K/V buffers, counted twice (a commit holds the old and the new cache) plus a prefill
	// chunk's K/V; 0 = 90% of the free device memory (nvidia-smi on CUDA, MemAvailable on the pure-Go backend). A
	// prompt whose cache cannot fit is refused before any measurement.
	MemLimitGiB float64 `toml:"mem_limit_gib"`
	// RoleRates are the NAtS Global, Local, Window decision rates given to random weights (engine.CalibrateRoles)
	// when the run has no `from`; required then for method nats.
	RoleRates []float64 `toml:"role_rates"`
	// GrowthSteps is engine.Options.GrowthSteps: capacity buckets per doubling past 1024 slots when the NAtS cache
	// grows (a power of two in [1, 64]; 1 = powers of two); 0 = the engine's default, 4.
	GrowthSteps int `toml:"growth_steps"`
	// CalibTokens is the length of the calibration prompt for RoleRates (the first tokens of the prompt source, at
	// most the longest prompt); 0 = 1024. The calibration graph materialises `[heads, n, n]` float32 scores, so a
	// long one needs device memory (8,192 tokens of the 8B shape: 8 GiB). Before CalibrateRoles scaled the
	// embeddings, the 8B shape calibrated on 1,024 tokens drifted at 32k (deeper layers' Global rate 0.002–0.03
	// instead of 0.045); since, its layers decide Global 0.042–0.049 of the time at 32k (results/latency32k).
	CalibTokens int `toml:"calib_tokens"`
	// TableWorkers is engine.Options.TableWorkers: goroutines over which the host slot table splits its rows (0 or
	// 1 = one pass).
	TableWorkers int `toml:"table_workers"`
}

func (l LatencyConfig) validate() error {
	if len(l.PromptLens) == 0 {
		return fmt.Errorf("latency.prompt_lens is empty")
	}
	for _, n := range l.PromptLens {
		if n < 1 {
			return fmt.Errorf("latency.prompt_lens: %d is not a positive length", n)
		}
	}
	if l.BatchSize < 1 || l.DecodeTokens < 1 || l.Repeats < 1 || l.Warmup < 0 {
		return fmt.Errorf("latency: batch_size, decode_tokens and repeats must be ≥ 1 and warmup ≥ 0 (got %d, %d, %d, %d)",
			l.BatchSize, l.DecodeTokens, l.Repeats, l.Warmup)
	}
	if len(l.RoleRates) != 0 && len(l.RoleRates) != 3 {
		return fmt.Errorf("latency.role_rates has %d values: want [global, local, window]", len(l.RoleRates))
	}
	if l.CalibTokens < 0 || (l.CalibTokens > 0 && l.CalibTokens < 16) {
		return fmt.Errorf("latency.calib_tokens = %d: want ≥ 16 (or 0 for the default, 1024)", l.CalibTokens)
	}
	if l.TableWorkers < 0 {
		return fmt.Errorf("latency.table_workers = %d: want ≥ 0 (0 or 1: one pass)", l.TableWorkers)
	}
	if l.GrowthSteps != 0 && !kvcache.ValidSteps(l.GrowthSteps) {
		return fmt.Errorf("latency.growth_steps = %d: must be a power of two in [1, 64] (or 0 for the default, 4)", l.GrowthSteps)
	}
	return nil
}

// LongBenchConfig is the [longbench] table (kind longbench): which LongBench v1 data to predict and how
// (NATS-SPEC §3.6, §7.3).
type LongBenchConfig struct {
	Data         string   `toml:"data"`           // a folder of <task>.jsonl, the official data.zip, or one <task>.jsonl; default testdata/longbench
	Tasks        []string `toml:"tasks"`          // official task names; empty = every non-E task present in data
	MaxSamples   int      `toml:"max_samples"`    // first N samples of each task in file order; 0 = all
	MaxLength    int      `toml:"max_length"`     // prompt tokens after middle truncation; 0 = the model's max_seq_len − the task's max new tokens
	ChatTemplate string   `toml:"chat_template"`  // none (NAtS's protocol) | llama2 | mistral | llama3 | llama3.1
	MaxNewTokens int      `toml:"max_new_tokens"` // greedy tokens at most; 0 = the task's official dataset2maxlen value
	PrefillChunk int      `toml:"prefill_chunk"`  // prompt tokens per prefill graph (a multiple of the NAtS chunk size)
	// MatchBudget (Llama path, streamingllm/h2o/tova): each task's budget is the mean number of keys the `from` run
	// (a NAtS longbench run of the same base model) keeps at the end of generation on that task (NATS-SPEC §3.7).
	MatchBudget bool `toml:"match_budget"`
	// PostProcess (Llama path) is the model-specific post-processing of each decoded prediction (NATS-SPEC §3.6):
	// "llama-3" (hf_pred.py's cuts at ".assistant", "\n\nQuestion", "</s>" and strip), "none", or "auto" (also
	// ""): llama-3 when the loaded model is a Llama-3 one (experiments/longbench_llama.go, isLlama3).
	PostProcess string `toml:"postprocess"`
}

func (l LongBenchConfig) validate(m MethodConfig) error {
	if l.Data == "" {
		return fmt.Errorf("longbench.data is empty")
	}
	if _, err := os.Stat(l.Data); err != nil {
		return fmt.Errorf("longbench.data = %q: %w", l.Data, err)
	}
	known := longbench.TaskNames()
	for _, t := range l.Tasks {
		if base, e := longbench.SplitE(t); e {
			return fmt.Errorf("longbench.tasks: %q is a LongBench-E file; only LongBench v1 tasks are supported (use %q)", t, base)
		}
		if _, err := longbench.Task(t); err != nil {
			return fmt.Errorf("longbench.tasks: unknown task %q%s (known: %s)", t, suggest.DidYouMean(t, known), strings.Join(known, ", "))
		}
	}
	if l.MaxSamples < 0 || l.MaxLength < 0 || l.MaxNewTokens < 0 {
		return fmt.Errorf("longbench: max_samples, max_length and max_new_tokens must be ≥ 0 (got %d, %d, %d)", l.MaxSamples, l.MaxLength, l.MaxNewTokens)
	}
	if _, err := longbench.ParseChatTemplate(l.ChatTemplate); err != nil {
		return fmt.Errorf("longbench.chat_template = %q: %w", l.ChatTemplate, err)
	}
	if _, err := longbench.ParsePostProcess(l.PostProcess); err != nil {
		return fmt.Errorf("longbench.postprocess = %q: %w", l.PostProcess, err)
	}
	if l.PrefillChunk < 1 {
		return fmt.Errorf("longbench.prefill_chunk = %d: must be ≥ 1", l.PrefillChunk)
	}
	if m.Name == "nats" && m.ChunkSize > 1 && l.PrefillChunk%m.ChunkSize != 0 {
		return fmt.Errorf("longbench.prefill_chunk = %d: must be a multiple of method.chunk_size = %d", l.PrefillChunk, m.ChunkSize)
	}
	return nil
}

// DefaultRunConfig returns the defaults every decoded sweep run starts from.
func DefaultRunConfig() RunConfig {
	nd := nats.DefaultConfig()
	return RunConfig{
		Data:      DataConfig{Dir: "testdata/pg19", Tokenizer: "gpt2"},
		Model:     model.DefaultConfig(),
		Method:    MethodConfig{Name: "full", Lambda: nd.Lambda, Window: nd.Window, ChunkSize: 1, ChunkMerge: "mean", GlobalBonus: nd.GlobalBonus, Sinks: 4, Recent: 0},
		Train:     train.DefaultConfig(),
		Eval:      EvalConfig{Split: "test", ContextLen: 1024, MaxWindows: 0, BatchSize: 8, PositionBuckets: []int{128, 256, 512, 1024, 2048}},
		Latency:   LatencyConfig{PromptLens: []int{1024}, BatchSize: 1, DecodeTokens: 64, Warmup: 1, Repeats: 3, PromptSource: "pg19:test"},
		LongBench: LongBenchConfig{Data: "testdata/longbench", ChatTemplate: "none", PrefillChunk: 512},
		Finetune: FinetuneConfig{Steps: 100, LR: 2e-3, SeqLen: 256, Words: 200, NumKeys: 2, KeyWords: 2, CkptEvery: 50,
			LogEvery: 1, EvalSamples: 16, Sinks: 4, DType: "float32"},
	}
}

// methodNames lists the known methods, in the order of the README.
var methodNames = []string{"full", "streamingllm", "h2o", "tova", "nats"}

// Method builds the masker (training and forward pass) and the evictor (decoding) of a method: the one
// explicit table of natsbench's methods.
func (m MethodConfig) Build() (model.Masker, kvcache.Evictor, error) {
	switch m.Name {
	case "streamingllm", "h2o", "tova":
		if m.Budget < 1 {
			return nil, nil, fmt.Errorf("method.budget = %d: %s needs a budget of at least 1 token (keys visible per query, itself included)", m.Budget, m.Name)
		}
	}
	switch m.Name {
	case "full":
		return nil, nil, nil
	case "streamingllm":
		if m.Sinks < 0 || m.Sinks >= m.Budget {
			return nil, nil, fmt.Errorf("method.sinks = %d: need 0 ≤ sinks < method.budget = %d", m.Sinks, m.Budget)
		}
		p := policy.StreamingLLM{Sinks: m.Sinks, Budget: m.Budget}
		if err := p.Validate(); err != nil {
			return nil, nil, fmt.Errorf("method (streamingllm): %w", err)
		}
		return model.SinkWindow{Sinks: m.Sinks, Budget: m.Budget}, p, nil
	case "h2o":
		recent := m.Recent
		if recent == 0 {
			recent = max(1, m.Budget/2) // H2O's usual split: half heavy hitters, half recent tokens
		}
		if recent > m.Budget {
			return nil, nil, fmt.Errorf("method.recent = %d exceeds method.budget = %d", recent, m.Budget)
		}
		p := policy.H2O{Budget: m.Budget, Recent: recent}
		if err := p.Validate(); err != nil {
			return nil, nil, fmt.Errorf("method (h2o): %w", err)
		}
		return nil, p, nil
	case "tova":
		p := policy.TOVA{Budget: m.Budget}
		if err := p.Validate(); err != nil {
			return nil, nil, fmt.Errorf("method (tova): %w", err)
		}
		return nil, p, nil
	case "nats":
		nm, err := nats.New(nats.Config{Lambda: m.Lambda, Window: m.Window, Chunk: m.ChunkSize, Merge: m.ChunkMerge,
			Roles: m.Roles, GlobalBonus: m.GlobalBonus})
		if err != nil {
			return nil, nil, err
		}
		p := policy.NAtS{Window: m.Window, Chunk: m.ChunkSize}
		if err := p.Validate(); err != nil {
			return nil, nil, fmt.Errorf("method (nats): %w", err)
		}
		return nm, p, nil
	}
	return nil, nil, fmt.Errorf("method.name = %q: unknown method%s (known: %s)", m.Name, suggest.DidYouMean(m.Name, methodNames), strings.Join(methodNames, ", "))
}

// TrainsWithMask reports whether the method changes training (its masker has parameters or changes the mask).
func (m MethodConfig) TrainsWithMask() bool { return m.Name == "nats" || m.Name == "streamingllm" }

func (e EvalConfig) validate() error {
	if e.Split == "" {
		return fmt.Errorf("eval.split is empty")
	}
	if e.ContextLen <= 0 {
		return fmt.Errorf("eval.context_len = %d: must be positive", e.ContextLen)
	}
	if e.BatchSize <= 0 {
		return fmt.Errorf("eval.batch_size = %d: must be positive", e.BatchSize)
	}
	if e.MaxWindows < 0 {
		return fmt.Errorf("eval.max_windows = %d: must be ≥ 0", e.MaxWindows)
	}
	if !sort.IntsAreSorted(e.PositionBuckets) {
		return fmt.Errorf("eval.position_buckets = %v: must be increasing", e.PositionBuckets)
	}
	return nil
}

func dirExists(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("data.dir = %q: %w", path, err)
	}
	if !st.IsDir() {
		return fmt.Errorf("data.dir = %q: not a folder", path)
	}
	return nil
}
