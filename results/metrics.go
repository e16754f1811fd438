package results

import (
	"fmt"
	"natsbench/internal/suggest"
	"sort"
	"strings"
)

// Metric describes one registered metric name.
type Metric struct {
	Name           string // snake_case name stored in the metric column
	Unit           string // unit of value ("" when dimensionless)
	HigherIsBetter bool   // direction of improvement
	X              string // meaning of the x column ("" when x is NaN)
	Doc            string // one line
}

// registry is the one list of metric names; keep it sorted by group, then name.
var registry = []Metric{
	// training (task "train")
	{Name: "loss", Unit: "nll", X: "", Doc: "mean next-token negative log-likelihood (natural log) of the step's batch"},
	{Name: "val_loss", Unit: "nll", X: "", Doc: "validation next-token NLL measured every eval_every steps"},
	{Name: "lr", Unit: "", HigherIsBetter: false, Doc: "learning rate used at the step"},
	{Name: "grad_norm", Unit: "", Doc: "global gradient norm before clipping"},
	{Name: "tokens_per_second", Unit: "tokens/s", HigherIsBetter: true, Doc: "training throughput of the step"},
	{Name: "mask_density", Unit: "fraction", Doc: "NAtS attention-mask density (fraction of visible keys)"},
	{Name: "sparsity_loss", Unit: "", Doc: "the NAtS λ-weighted sparsity penalty"},
	{Name: "distill_loss", Unit: "mse", Doc: "fine-tuning: MSE of the student's final hidden states to the full-attention teacher's on answer tokens"},
	// passkey retrieval after fine-tuning (task "passkey"; the row's method is the attention pattern scored)
	{Name: "passkey_accuracy", Unit: "fraction", HigherIsBetter: true, X: "seq_len", Doc: "held-out passkey samples whose answer greedy decoding reproduces exactly"},
	{Name: "answer_agreement", Unit: "fraction", HigherIsBetter: true, X: "seq_len", Doc: "held-out samples whose greedy answer tokens equal full attention's"},
	// PG-19 perplexity (task "pg19")
	{Name: "ppl", Unit: "", X: "context_len", Doc: "token perplexity by streaming decoding, exp(mean NLL)"},
	{Name: "nll", Unit: "nll", X: "context_len", Doc: "mean token NLL by streaming decoding"},
	{Name: "ppl_parallel", Unit: "", X: "context_len", Doc: "perplexity of the parallel masked forward (check against ppl)"},
	{Name: "bits_per_byte", Unit: "bits/byte", X: "context_len", Doc: "NLL in bits per UTF-8 byte"},
	{Name: "nll_bucket", Unit: "nll", X: "position", Doc: "mean NLL of the tokens whose position is ≤ x (and above the previous bucket)"},
	{Name: "kv_fraction", Unit: "fraction", X: "context_len", Doc: "mean over queries of keys kept in the cache / keys seen"},
	{Name: "kv_fraction_final", Unit: "fraction", X: "context_len", Doc: "cache occupancy / tokens at the end of each window"},
	{Name: "kv_tokens", Unit: "tokens", X: "context_len", Doc: "mean number of keys kept in the cache per query"},
	{Name: "eval_seconds", Unit: "s", X: "context_len", Doc: "wall time of the evaluation"},
	// LongBench (task "longbench/<dataset>")
	{Name: "qa_f1", Unit: "score", HigherIsBetter: true, Doc: "LongBench token F1 (×100)"},
	{Name: "rouge_l", Unit: "score", HigherIsBetter: true, Doc: "LongBench ROUGE-L F (×100)"},
	{Name: "classification", Unit: "score", HigherIsBetter: true, Doc: "LongBench classification accuracy (×100)"},
	{Name: "retrieval", Unit: "score", HigherIsBetter: true, Doc: "LongBench retrieval accuracy (×100)"},
	{Name: "count", Unit: "score", HigherIsBetter: true, Doc: "LongBench passage-count accuracy (×100)"},
	{Name: "code_sim", Unit: "score", HigherIsBetter: true, Doc: "LongBench code edit similarity (×100)"},
	{Name: "longbench_avg", Unit: "score", HigherIsBetter: true, Doc: "mean of the LongBench task scores"},
	// latency (task "latency")
	{Name: "prefill_ms", Unit: "ms", X: "prompt_len", Doc: "median prefill time of the prompt"},
	{Name: "prefill_ms_p90", Unit: "ms", X: "prompt_len", Doc: "90th percentile prefill time"},
	{Name: "decode_ms_per_token", Unit: "ms", X: "prompt_len", Doc: "median decode time per generated token"},
	{Name: "decode_ms_per_token_p90", Unit: "ms", X: "prompt_len", Doc: "90th percentile decode time per token"},
	{Name: "peak_mem_bytes", Unit: "bytes", X: "prompt_len", Doc: "peak device memory of the KV cache and activations"},
	{Name: "device_used_bytes", Unit: "bytes", X: "prompt_len", Doc: "GPU memory in use as nvidia-smi reports it after a prompt length's timed runs (CUDA backends; the XLA allocator's pool of the process, CUDA context included)"},
	{Name: "kv_cache_bytes", Unit: "bytes", X: "prompt_len", Doc: "peak bytes of the K/V buffers (what the policy keeps, in capacity buckets)"},
	{Name: "host_ms_per_token", Unit: "ms", X: "prompt_len", Doc: "median host-side (slot table) part of a decode step after its graph call (before commit 2b4a796, 2026-11-29: placing the token and window expiries too)"},
	{Name: "device_ms_per_token", Unit: "ms", X: "prompt_len", Doc: "median device part of a decode step"},
	{Name: "commit_ms_per_token", Unit: "ms", X: "prompt_len", Doc: "median part of a decode step spent committing staged tokens (amortised)"},
	{Name: "prep_ms_per_token", Unit: "ms", X: "prompt_len", Doc: "median part of a decode step spent building its arguments and moving them to the device (validity rebuilds, slot updates, tokens)"},
	{Name: "output_ms_per_token", Unit: "ms", X: "prompt_len", Doc: "median part of a decode step after its greedy tokens: other outputs read (before commit ef486aa, 2026-11-29: replaced buffers freed too)"},
	{Name: "overlap_ms_per_token", Unit: "ms", X: "prompt_len", Doc: "median host work of a decode step done while the device runs its graph (placing the token, window expiries, freeing replaced buffers), inside device_ms_per_token"},
	{Name: "prefill_chunk_bytes", Unit: "bytes", X: "prompt_len", Doc: "peak K/V bytes of one prefill chunk"},
	{Name: "kv_bytes_per_step", Unit: "bytes", X: "prompt_len", Doc: "K/V bytes one decode step reads"},
	{Name: "kept_kv_bytes", Unit: "bytes", X: "prompt_len", Doc: "bytes of the keys and values the policy keeps"},
	{Name: "live_buffer_bytes", Unit: "bytes", X: "prompt_len", Doc: "bytes of live buffers (pure-Go backend)"},
	{Name: "bandwidth_bytes_per_second", Unit: "bytes/s", HigherIsBetter: true, X: "prompt_len", Doc: "measured device copy bandwidth"},
	{Name: "bandwidth_floor_ms", Unit: "ms", X: "prompt_len", Doc: "kept K/V bytes plus the weights' bytes over the copy bandwidth: a step's read floor (bandwidth from one buffer size before 2026-11-29: reads low)"},
	{Name: "buffer_floor_ms", Unit: "ms", X: "prompt_len", Doc: "cache buffer bytes plus the weights' bytes over the copy bandwidth"},
	{Name: "cache_slots", Unit: "slots", X: "prompt_len", Doc: "K/V buffer capacity per (layer, batch row, KV head) at the end"},
	{Name: "max_row_kv_tokens", Unit: "tokens", X: "prompt_len", Doc: "most tokens any (layer, batch row, KV head) held at once (before evictions), which sets a growing cache's capacity"},
	{Name: "role_global_rate", Unit: "fraction", X: "prompt_len", Doc: "NAtS: share of decisions that were Global in the timed run (mean over layers)"},
	{Name: "role_local_rate", Unit: "fraction", X: "prompt_len", Doc: "NAtS: share of decisions that were Local in the timed run (mean over layers)"},
	{Name: "role_window_rate", Unit: "fraction", X: "prompt_len", Doc: "NAtS: share of decisions that were Sliding-window in the timed run (mean over layers)"},
	{Name: "calib_embed_scale", Unit: "factor", X: "prompt_len", Doc: "random-weight NAtS: the factor engine.CalibrateRoles scaled the embeddings by (1 on shapes that need no scaling; absent before 2026-11-29's scaling)"},
}

var byName = func() map[string]Metric {
	m := make(map[string]Metric, len(registry))
	for _, r := range registry {
		m[r.Name] = r
	}
	return m
}()

// Metrics returns the registered metrics, sorted by name.
func Metrics() []Metric {
	out := append([]Metric(nil), registry...)
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// LookupMetric returns a registered metric, or an error with the closest name and the known names.
func LookupMetric(name string) (Metric, error) {
	if m, ok := byName[name]; ok {
		return m, nil
	}
	names := make([]string, 0, len(registry))
	for _, r := range registry {
		names = append(names, r.Name)
	}
	sort.Strings(names)
	return Metric{}, fmt.Errorf("unknown metric %q%s (known: %s)", name, suggest.DidYouMean(name, names), strings.Join(names, ", "))
}
