package experiments

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"natsbench/engine"
	"natsbench/internal/devmem"
	"natsbench/kvcache"
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
	"commit_ms_per_token":        {"commit_ms_per_token", 1},
	"prep_ms_per_token":          {"prep_ms_per_token", 1},
	"output_ms_per_token":        {"output_ms_per_token", 1},
	"overlap_ms_per_token":       {"overlap_ms_per_token", 1},
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
	"cache_slots":                {"cache_slots", 1},
	"max_row_kv_tokens":          {"max_row_kv_tokens", 1},
	"role_global_rate":           {"role_global_rate", 1},
	"role_local_rate":            {"role_local_rate", 1},
	"role_window_rate":           {"role_window_rate", 1},
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
	if strings.Contains(how, "nvidia-smi") {
		// The weights are not on the device yet: leave room for them.
		limit = max(limit-weightBytes(mcfg, params), 1)
		how += ", less the weights"
	}
	fmt.Fprintf(env.Log, "  K/V memory limit %.1f GiB (%s)\n", float64(limit)/(1<<30), how)
	// One engine for the checks, the calibration and every length: its compiled graphs serve the lengths that share
	// their shapes (decoding steps and commits at a capacity bucket; prefill graphs only where the lengths' chunks
	// agree, as H2O's and TOVA's do), so only the first length to need a graph compiles it (each length's warm-up
	// run keeps compiles out of the timings), and the weights' device copies are made once.
	eopt := engine.Options{MaxNewTokens: lc.DecodeTokens, MemLimitBytes: limit, GrowthSteps: lc.GrowthSteps, TableWorkers: lc.TableWorkers}
	e, err := engine.New(backend, mcfg, masker, evictor, params, eopt)
	if err != nil {
		return fmt.Errorf("%s: %w", info.key, err)
	}
	// Refuse, before any measurement, a prompt whose cache cannot fit (the engine's own first allocation: full
	// attention keeps prompt + decoded tokens, the budget policies their budget; NAtS grows with what it keeps and
	// is checked as it grows) or that is past the position limit.
	for _, n := range lc.PromptLens {
		if err := e.CheckFits(lc.BatchSize, n, prefillChunk(mcfg, rc.Method, lc.BatchSize, n)); err != nil {
			return fmt.Errorf("%s: latency.prompt_lens: %d tokens (batch %d): %w (K/V limit %.1f GiB: %s)",
				info.key, n, lc.BatchSize, err, float64(limit)/(1<<30), how)
		}
	}
	calScale := 0.0 // the calibration's embedding scale (random-weight NAtS only), stored with every length's rows
	if fromDir == "" && rc.Method.Name == "nats" {
		// Random weights: give the NAtS scorer trained-like role rates (engine.CalibrateRoles).
		if len(lc.RoleRates) != 3 {
			return fmt.Errorf("%s: method nats without `from` needs latency.role_rates = [global, local, window]", info.key)
		}
		calib := calibPrompt(prompt, lc.calibLen(longest), mcfg.VocabSize, info.seed)
		got, err := engine.CalibrateRoles(e, [][]int32{calib}, engine.RoleRates{Global: lc.RoleRates[0], Local: lc.RoleRates[1], Window: lc.RoleRates[2]}, info.seed)
		if err != nil {
			return fmt.Errorf("%s: %w", info.key, err)
		}
		fmt.Fprintf(env.Log, "  latency %s: random weights calibrated to role rates %v on %d tokens, embeddings ×%g (common share %.2f; layer 0: %v)\n",
			short(info.key), lc.RoleRates, len(calib), got.EmbedScale, got.CommonShare, got.Rates[0])
		calScale = got.EmbedScale
	}
	// The rows are written after every prompt length, so a run cut short (a device call's time limit, a crash) keeps
	// the lengths it finished: a later attempt reads them back and measures only the others.
	path := filepath.Join(dir, results.MetricsFile)
	rows, done := earlierLatencyRows(path, env.Log, calScale)
	gpu := cudaSampler(env)
	now := time.Now()
	for _, n := range lc.PromptLens {
		if err := ctx.Err(); err != nil {
			return err
		}
		if done[n] {
			fmt.Fprintf(env.Log, "  latency %-24s prompt %6d: measured by an earlier attempt of this run, kept\n", short(info.key), n)
			continue
		}
		opt := engine.MeasureOptions{Method: rc.Method.Name, PromptLen: n, Batch: lc.BatchSize, DecodeTokens: lc.DecodeTokens,
			Warmup: lc.Warmup, Repeats: lc.Repeats, Seed: info.seed, Chunk: prefillChunk(mcfg, rc.Method, lc.BatchSize, n),
			Log: env.Log}
		if prompt != nil {
			opt.Prompt = make([][]int32, lc.BatchSize)
			for b := range opt.Prompt {
				opt.Prompt[b] = prompt[b*n : (b+1)*n]
			}
		}
		res, err := engine.Measure(e, opt)
		var used int64
		if gpu != nil && err == nil {
			// One reading after the timed runs (polling during them would time nvidia-smi too): XLA's allocator keeps
			// what it reserved, so it is the most the length needed.
			var serr error
			if used, serr = gpu.Sample(); serr != nil { // used is 0: no row
				fmt.Fprintf(env.Log, "  latency %s: %v (no device_used_bytes row)\n", short(info.key), serr)
			}
		}
		e.Release() // the next length measures the copy bandwidth and allocates its cache without this one's
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
		dev := ""
		if used > 0 {
			row := info.row("latency", "test", "device_used_bytes", float64(n), float64(used), 1)
			row.Time = now
			rows = append(rows, row)
			dev = fmt.Sprintf(", GPU memory used %.2f GiB", float64(used)/(1<<30))
		}
		if res.BandwidthBytesPerSecond > 0 {
			dev += fmt.Sprintf(", copy bandwidth %.3g B/s (floor of kept K/V + weights %.2f ms, of the buffers + weights %.2f)",
				res.BandwidthBytesPerSecond, res.FloorMs, res.BufferFloorMs)
		}
		if calScale > 0 {
			row := info.row("latency", "test", "calib_embed_scale", float64(n), calScale, 1)
			row.Time = now
			rows = append(rows, row)
		}
		row := info.row("latency", "test", "peak_mem_bytes", float64(n), peak, 1)
		row.Time = now
		rows = append(rows, row)
		fmt.Fprintf(env.Log, "  latency %-24s prompt %6d: prefill %.1f ms, decode %.2f ms/token, kv fraction %.3f, %d slots (fullest row %d: layer %d, batch row %d, KV head %d)%s\n",
			short(info.key), n, res.PrefillMedian*1000, res.DecodeMedian, res.KVFraction, res.Cap, res.MaxRowTokens,
			res.MaxRow[0], res.MaxRow[1], res.MaxRow[2], dev)
		if rr := res.RoleRates; len(rr) > 0 {
			// What the scorers decided on this prompt (with random weights: against the calibration's target).
			parts := make([]string, len(rr))
			for l, x := range rr {
				parts[l] = x.String()
			}
			fmt.Fprintf(env.Log, "  latency %-24s prompt %6d: roles per layer: %s\n", short(info.key), n, strings.Join(parts, "; "))
		}
		if err := results.WriteRows(path, rows); err != nil {
			return err
		}
	}
	return nil // every length's rows are in path
}

// earlierLatencyRows returns the rows an earlier, unfinished attempt of a latency run left in path and the prompt
// lengths they complete (a length's rows are written together, its peak_mem_bytes row last), or nothing when there
// is no such file. A file that cannot be read is reported and measured again. calScale > 0 is this attempt's role
// calibration (engine.Calibration.EmbedScale): a finished length whose calib_embed_scale row differs or is missing
// was measured with other weights (the run ID hashes the config, not the calibration code), so every length is
// measured again.
func earlierLatencyRows(path string, log io.Writer, calScale float64) ([]Row, map[int]bool) {
	done := map[int]bool{}
	if _, err := os.Stat(path); err != nil {
		return nil, done
	}
	prev, err := results.ReadRows(path)
	if err != nil {
		fmt.Fprintf(log, "  %s: %v; measuring every prompt length again\n", path, err)
		return nil, done
	}
	scale := map[int]float64{}
	for _, r := range prev {
		if r.Task == "latency" && r.Metric == "peak_mem_bytes" {
			done[int(r.X)] = true
		}
		if r.Task == "latency" && r.Metric == "calib_embed_scale" {
			scale[int(r.X)] = r.Value
		}
	}
	if calScale > 0 {
		for n := range done {
			if scale[n] != calScale {
				fmt.Fprintf(log, "  %s: prompt %d was measured with another role calibration (embeddings ×%g, now ×%g); measuring every prompt length again\n",
					path, n, scale[n], calScale)
				return nil, map[int]bool{}
			}
		}
	}
	var rows []Row
	for _, r := range prev {
		if done[int(r.X)] {
			rows = append(rows, r)
		}
	}
	return rows, done
}

// memLimit returns the K/V byte limit of a latency run and where it comes from: latency.mem_limit_gib, else 90% of
// the free memory of the device (nvidia-smi for CUDA backends, /proc/meminfo's MemAvailable for the pure-Go
// backend); 0 when neither can be read.
func memLimit(lc LatencyConfig, env Env) (int64, string) {
	if lc.MemLimitGiB > 0 {
		return int64(lc.MemLimitGiB * (1 << 30)), "latency.mem_limit_gib"
	}
	spec := model.BackendSpec(env.Backend)
	if strings.HasPrefix(spec, "xla") && !strings.Contains(spec, "cpu") {
		args := []string{"--query-gpu=memory.free,memory.total", "--format=csv,noheader,nounits"}
		if env.Device >= 0 {
			args = append(args, "-i", strconv.Itoa(env.Device))
		}
		if out, err := exec.Command("nvidia-smi", args...).Output(); err == nil {
			if free, total, ok := parseFreeTotal(string(out)); ok {
				return gpuMemLimit(free, total, model.XLAMemoryFraction(spec))
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

// cudaSampler returns the reading of the GPU's memory in use (nvidia-smi memory.used) for a CUDA backend that
// answers, else nil. A latency length's device_used_bytes row is one reading after its timed runs: the whole GPU, and
// XLA's allocator keeps what it reserved, so it is the allocator's pool so far (the CUDA context, the weights, every
// graph's buffers and temporaries, earlier runs' in the same process included, rounded up to the pool's growth:
// coarse, not a count of live bytes). One run per process (runner -only, as scripts/device_pending.sh runs them)
// and lengths in increasing order make it the run's peak device memory at that length, as the device reports it.
func cudaSampler(env Env) devmem.Sampler {
	spec := model.BackendSpec(env.Backend)
	if !strings.HasPrefix(spec, "xla") || strings.Contains(spec, "cpu") {
		return nil
	}
	g := devmem.GPU{Index: max(env.Device, 0)}
	if _, err := g.Sample(); err != nil {
		fmt.Fprintf(env.Log, "  device memory: %v (no device_used_bytes rows)\n", err)
		return nil
	}
	return g
}

// parseFreeTotal reads nvidia-smi's first "free, total" line (MiB).
func parseFreeTotal(out string) (free, total float64, ok bool) {
	f := strings.Split(strings.Split(out, "\n")[0], ",")
	if len(f) != 2 {
		return 0, 0, false
	}
	free, e1 := strconv.ParseFloat(strings.TrimSpace(f[0]), 64)
	total, e2 := strconv.ParseFloat(strings.TrimSpace(f[1]), 64)
	return free, total, e1 == nil && e2 == nil && free > 0 && total > 0
}

// gpuMemLimit is the K/V limit on a CUDA GPU with free and total MiB: 90% of the free memory or 90% of what the XLA
// allocator may hand out (fraction of the total), whichever is smaller; the other 10% is headroom for a prefill
// chunk's scores and the graphs' temporaries, which the engine's check does not count. An H200's 143,771 MiB at
// go-xla's default fraction 0.75 allow 105 GiB, so 90% of the free memory, 126 GiB, let through caches the
// allocator then refused.
func gpuMemLimit(free, total, fraction float64) (int64, string) {
	byFree, byAlloc := 0.9*free*(1<<20), 0.9*fraction*total*(1<<20)
	if byAlloc < byFree {
		return int64(byAlloc), fmt.Sprintf("90%% of the XLA allocator's memory_fraction %.2g of the GPU's %.0f GiB (nvidia-smi; raise it with -backend xla:cuda,memory_fraction=0.95)", fraction, total/1024)
	}
	return int64(byFree), "90% of the GPU's free memory (nvidia-smi)"
}

// weightBytes is the size of the model's weights in the compute dtype.
func weightBytes(cfg model.Config, p *model.Params) int64 {
	es := int64(4)
	if cfg.IsBF16() {
		es = 2
	}
	return int64(p.Count()) * es
}

// prefillChunk is the prefill chunk for a prompt of n tokens: the largest power of two (at least 64, at most the
// prompt rounded up to one) whose attention scores `[batch, heads, chunk, n]` in float32 stay within 4 GiB and,
// for H2O and TOVA, whose attention statistics `[layers, batch, kv_heads, chunk, budget+chunk]` stay within the
// engine's 1 GiB bound. A whole 64k prompt in one graph would need hundreds of GB of scores.
func prefillChunk(cfg model.Config, m MethodConfig, batch, n int) int {
	fits := func(T int) bool {
		if int64(batch)*int64(cfg.NHeads)*int64(T)*int64(n+T)*4 > 4<<30 {
			return false
		}
		if m.Name == "h2o" || m.Name == "tova" {
			capacity := kvcache.Bucket(m.Budget)
			return int64(cfg.NLayers)*int64(batch)*int64(cfg.KVHeads())*int64(T)*int64(capacity+T)*4 <= 1<<30
		}
		return true
	}
	T := 64
	for T < n && fits(2*T) {
		T *= 2
	}
	if c := m.ChunkSize; c > 1 && T%c != 0 {
		T = (T + c - 1) / c * c
	}
	return T
}

// calibLen is the length of the role calibration prompt: latency.calib_tokens (default 1024), at most the longest
// prompt.
func (l LatencyConfig) calibLen(longest int) int {
	n := 1024
	if l.CalibTokens > 0 {
		n = l.CalibTokens
	}
	return min(longest, n)
}

// calibPrompt is the first n tokens of prompt, or n seeded random tokens when there is no prompt.
func calibPrompt(prompt []int32, n, vocab int, seed uint64) []int32 {
	if len(prompt) >= n {
		return prompt[:n]
	}
	r := rand.New(rand.NewPCG(seed, 0x63616c))
	out := make([]int32, n)
	for i := range out {
		out[i] = int32(r.IntN(vocab))
	}
	return out
}
