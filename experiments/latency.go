package experiments

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"natsbench/engine"
	"natsbench/model"
	"natsbench/results"
)

// latencyMetric maps the engine's row names to registered result metrics (and a scale).
var latencyMetric = map[string]struct {
	name  string
	scale float64
}{
	"prefill_seconds":            {"prefill_ms", 1000},
	"prefill_seconds_p90":        {"prefill_ms_p90", 1000},
	"decode_ms_per_token":        {"decode_ms_per_token", 1},
	"decode_ms_per_token_p90":    {"decode_ms_per_token_p90", 1},
	"host_ms_per_token":          {"host_ms_per_token", 1},
	"device_ms_per_token":        {"device_ms_per_token", 1},
	"peak_cache_bytes":           {"kv_cache_bytes", 1},
	"peak_chunk_bytes":           {"prefill_chunk_bytes", 1},
	"kv_fraction":                {"kv_fraction", 1},
	"kv_tokens":                  {"kv_tokens", 1},
	"kv_bytes_per_step":          {"kv_bytes_per_step", 1},
	"kept_kv_bytes":              {"kept_kv_bytes", 1},
	"live_buffer_bytes":          {"live_buffer_bytes", 1},
	"bandwidth_bytes_per_second": {"bandwidth_bytes_per_second", 1},
	"bandwidth_floor_ms":         {"bandwidth_floor_ms", 1},
	"buffer_floor_ms":            {"buffer_floor_ms", 1},
}

// runLatency measures prefill and decode latency and KV memory of the run's method at each prompt length with
// the inference engine (the paper's Figure 4). Weights come from the `from` run; without one, random weights
// (the figure says so through the run's config). RoPE needs no learned positions, so the model is used past its
// training length: the numbers are latencies, not quality.
func runLatency(ctx context.Context, rc RunConfig, info runInfo, dir, fromDir string, env Env) error {
	backend, err := model.NewBackend(env.Backend)
	if err != nil {
		return err
	}
	masker, evictor, err := rc.Method.Build()
	if err != nil {
		return err
	}
	var mcfg model.Config
	var params *model.Params
	if fromDir != "" {
		mcfg, params, err = loadFinal(fromDir, masker)
		if err != nil {
			return err
		}
	} else {
		mcfg = rc.Model
		params = model.NewParams(model.Specs(mcfg, masker), info.seed)
	}
	lc := rc.Latency
	longest := 0
	for _, n := range lc.PromptLens {
		longest = max(longest, n)
	}
	mcfg.MaxSeqLen = max(mcfg.MaxSeqLen, longest+lc.DecodeTokens)
	var prompt []int32
	if lc.PromptSource == "pg19:test" || lc.PromptSource == "" {
		data, err := prepareData(rc.Data, info.outRoot, env.Log)
		if err != nil {
			return err
		}
		s, err := data.shard("test")
		if err != nil {
			return err
		}
		for len(prompt) < longest*lc.BatchSize {
			for _, t := range s.Tokens {
				prompt = append(prompt, int32(t))
			}
		}
	} else if lc.PromptSource != "random" {
		return fmt.Errorf("latency.prompt_source = %q: want \"pg19:test\" or \"random\"", lc.PromptSource)
	}
	limit, how := memLimit(lc, env)
	fmt.Fprintf(env.Log, "  K/V memory limit %.1f GiB (%s)\n", float64(limit)/(1<<30), how)
	// Refuse, before any measurement, a prompt whose cache cannot fit: full attention keeps prompt + decoded
	// tokens, the budget policies their budget; NAtS grows with what it keeps and is checked as it grows.
	for _, n := range lc.PromptLens {
		keep := n + lc.DecodeTokens
		if evictor != nil && rc.Method.Budget > 0 && masker == nil {
			keep = min(keep, rc.Method.Budget)
		}
		if masker != nil {
			continue
		}
		elem := int64(4)
		if mcfg.IsBF16() {
			elem = 2
		}
		need := 2 * int64(mcfg.NLayers) * int64(lc.BatchSize) * int64(mcfg.KVHeads()) * int64(keep+32) * int64(mcfg.HeadDim()) * elem
		if limit > 0 && need > limit {
			return fmt.Errorf("%s: latency.prompt_lens: %d tokens (batch %d) need %.1f GiB of K/V cache for %s, over the limit of %.1f GiB (%s)",
				info.key, n, lc.BatchSize, float64(need)/(1<<30), rc.Method.Name, float64(limit)/(1<<30), how)
		}
	}
	var rows []Row
	now := time.Now()
	for _, n := range lc.PromptLens {
		if err := ctx.Err(); err != nil {
			return err
		}
		e, err := engine.New(backend, mcfg, masker, evictor, params, engine.Options{MaxNewTokens: lc.DecodeTokens, MemLimitBytes: limit})
		if err != nil {
			return fmt.Errorf("%s: %w", info.key, err)
		}
		opt := engine.MeasureOptions{Method: rc.Method.Name, PromptLen: n, Batch: lc.BatchSize, DecodeTokens: lc.DecodeTokens,
			Warmup: lc.Warmup, Repeats: lc.Repeats, Seed: info.seed}
		if prompt != nil {
			opt.Prompt = make([][]int32, lc.BatchSize)
			for b := range opt.Prompt {
				opt.Prompt[b] = prompt[b*n : (b+1)*n]
			}
		}
		res, err := engine.Measure(e, opt)
		if err != nil {
			return fmt.Errorf("%s: prompt %d: %w", info.key, n, err)
		}
		// peak_mem_bytes: bytes of live buffers where the backend reports them (pure Go), else the engine's peak
		// K/V bytes (cache plus one prefill chunk).
		var live, cache, chunk float64
		for _, r := range res.Rows() {
			m, ok := latencyMetric[r.Metric]
			if !ok {
				continue
			}
			row := info.row("latency", "test", m.name, float64(n), r.Value*m.scale, r.N)
			row.Time = now
			rows = append(rows, row)
			switch r.Metric {
			case "live_buffer_bytes":
				live = r.Value
			case "peak_cache_bytes":
				cache = r.Value
			case "peak_chunk_bytes":
				chunk = r.Value
			}
		}
		peak := live
		if peak == 0 {
			peak = cache + chunk
		}
		rows = append(rows, info.row("latency", "test", "peak_mem_bytes", float64(n), peak, 1))
		fmt.Fprintf(env.Log, "  latency %-24s prompt %6d: prefill %.1f ms, decode %.2f ms/token, kv fraction %.3f\n",
			short(info.key), n, res.PrefillMedian*1000, res.DecodeMedian, res.KVFraction)
	}
	return results.WriteRows(filepath.Join(dir, results.MetricsFile), rows)
}

// memLimit returns the K/V byte limit of a latency run and where it comes from: latency.mem_limit_gib, else 90% of
// the free memory of the device (nvidia-smi for CUDA backends, /proc/meminfo's MemAvailable for the pure-Go
// backend); 0 when neither can be read.
func memLimit(lc LatencyConfig, env Env) (int64, string) {
	if lc.MemLimitGiB > 0 {
		return int64(lc.MemLimitGiB * (1 << 30)), "latency.mem_limit_gib"
	}
	if strings.HasPrefix(env.Backend, "xla") && !strings.Contains(env.Backend, "cpu") {
		args := []string{"--query-gpu=memory.free", "--format=csv,noheader,nounits"}
		if env.Device >= 0 {
			args = append(args, "-i", strconv.Itoa(env.Device))
		}
		if out, err := exec.Command("nvidia-smi", args...).Output(); err == nil {
			if mib, err := strconv.ParseFloat(strings.TrimSpace(strings.Split(string(out), "\n")[0]), 64); err == nil && mib > 0 {
				return int64(0.9 * mib * (1 << 20)), "90% of the GPU's free memory (nvidia-smi)"
			}
		}
		return 0, "no limit: nvidia-smi did not answer"
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemAvailable:" {
				if kb, err := strconv.ParseFloat(f[1], 64); err == nil {
					return int64(0.9 * kb * 1024), "90% of MemAvailable"
				}
			}
		}
	}
	return 0, "no limit: free memory unknown"
}
