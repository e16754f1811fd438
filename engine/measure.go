package engine

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"slices"
	"time"

	"github.com/gomlx/compute"
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"
)

// MeasureOptions configures Measure: one method at one prompt length (the paper's Figure 4 protocol,
// NATS-SPEC §4: warm-up runs, then timed prefill and decoding).
type MeasureOptions struct {
	// Method labels the rows (e.g. "nats", "full").
	Method string
	// PromptLen is the prompt length in tokens; Batch the number of rows (default 1).
	PromptLen, Batch int
	// Chunk is the prefill chunk in tokens (default: the whole prompt, rounded up to the NAtS chunk size).
	Chunk int
	// DecodeTokens is the number of decoding steps per run (default 64).
	DecodeTokens int
	// Warmup untimed runs (default 1; they compile every graph) and Repeats timed runs (default 3).
	Warmup, Repeats int
	// Seed picks the random prompt tokens; Prompt, when set, is used instead (Batch rows of PromptLen tokens).
	Seed   uint64
	Prompt [][]int32
	// CopyBytes is the buffer size of the bandwidth benchmark (default 512 MiB, 16 MiB on the pure-Go backend);
	// negative skips it.
	CopyBytes int64
	// Log, when set, gets one line per run (warm-up or timed) as it ends: its prefill seconds and decode ms per token,
	// each split into its parts (PrefillResult, StepOut), so a long measurement shows where it is and where time goes;
	// and during a prefill, every progressEvery, the prompt positions done.
	Log io.Writer
}

// Result is one method at one prompt length. Times are wall-clock on the host, each decoding step ending with
// the transfer of its greedy tokens (a device synchronisation).
type Result struct {
	Method                           string
	Backend                          string
	PromptLen, Batch, Chunk          int
	DecodeTokens, Repeats            int
	PrefillSeconds                   []float64   // per timed run
	PrefillMedian, PrefillP90        float64     // seconds
	DecodeMsPerToken                 []float64   // per timed run: mean step time in ms
	DecodeMedian, DecodeP90          float64     // ms per token
	HostMsPerToken                   float64     // median over runs of the host-table part of a step, ms
	DeviceMsPerToken                 float64     // median over runs of the step graph's part (launch to tokens on the host), ms
	CommitMsPerToken                 float64     // median over runs of the commits' part (staged tokens moved, growth), ms
	PrepMsPerToken, OutputMsPerToken float64     // medians over runs of the arguments' and the outputs' parts (StepOut), ms
	OverlapMsPerToken                float64     // median over runs of the host work done during the graph call (StepOut.OverlapSeconds), ms
	PeakCacheBytes, PeakChunkBytes   int64       // K/V buffers (committed + staging); the same plus a prefill chunk's K/V
	LiveBytes                        int64       // pure-Go backend: largest Go heap in use seen after prefill or decoding (0 elsewhere)
	KVFraction, KVTokens             float64     // NATS-SPEC §1.9 at the end of the last run: kept/seen, and kept slots
	Cap                              int         // final slots per (layer, row, KV head)
	MaxRowTokens                     int         // most slots any (layer, row, KV head) held at once in the last run (what sets the capacity)
	MaxRow                           [3]int      // that (layer, batch row, KV head)
	RoleRates                        []RoleRates // NAtS decisions per layer in the last run (prompt and decoded tokens); nil for other policies
	KVBytesPerStep                   int64       // K/V bytes a decoding step reads (the whole buffers: capacity + staging)
	KeptKVBytes                      int64       // K/V bytes of the kept tokens only
	ParamBytes                       int64       // model weights (read once per step)
	BandwidthBytesPerSecond          float64     // measured device copy bandwidth (0 when skipped)
	FloorMs, BufferFloorMs           float64     // (KeptKVBytes+ParamBytes) and (KVBytesPerStep+ParamBytes) ÷ bandwidth, ms
	DecodeOverFloor, PrefillTokensS  float64     // DecodeMedian ÷ FloorMs; prompt tokens per second (median)
}

// Row is one long-format result row (STYLE.md B5: one metric per row; the results package adds the run identity
// when it stores them as Parquet).
type Row struct {
	Method    string  `parquet:"method,dict"`
	Metric    string  `parquet:"metric,dict"`
	PromptLen int64   `parquet:"prompt_len"` // the row's x
	Value     float64 `parquet:"value"`
	N         int64   `parquet:"n"` // timed runs (or 1)
}

// Rows returns the result as long-format rows: prefill_seconds(_p90), decode_ms_per_token(_p90),
// host_ms_per_token, device_ms_per_token, commit_ms_per_token, prep_ms_per_token, output_ms_per_token, peak_cache_bytes, peak_chunk_bytes, live_buffer_bytes, kv_fraction, kv_tokens,
// cache_slots (capacity per row), max_row_kv_tokens (the most slots a row held at once), role_{global,local,window}_rate (NAtS: the
// decisions of the last run, mean over layers),
// kv_bytes_per_step, kept_kv_bytes, bandwidth_bytes_per_second, bandwidth_floor_ms, buffer_floor_ms.
func (r Result) Rows() []Row {
	n := int64(r.Repeats)
	x := int64(r.PromptLen)
	row := func(m string, v float64, n int64) Row {
		return Row{Method: r.Method, Metric: m, PromptLen: x, Value: v, N: n}
	}
	rows := []Row{
		row("prefill_seconds", r.PrefillMedian, n),
		row("prefill_seconds_p90", r.PrefillP90, n),
		row("decode_ms_per_token", r.DecodeMedian, n),
		row("decode_ms_per_token_p90", r.DecodeP90, n),
		row("host_ms_per_token", r.HostMsPerToken, n),
		row("device_ms_per_token", r.DeviceMsPerToken, n),
		row("commit_ms_per_token", r.CommitMsPerToken, n),
		row("prep_ms_per_token", r.PrepMsPerToken, n),
		row("output_ms_per_token", r.OutputMsPerToken, n),
		row("overlap_ms_per_token", r.OverlapMsPerToken, n),
		row("peak_cache_bytes", float64(r.PeakCacheBytes), 1),
		row("peak_chunk_bytes", float64(r.PeakChunkBytes), 1),
		row("kv_fraction", r.KVFraction, 1),
		row("kv_tokens", r.KVTokens, 1),
		row("cache_slots", float64(r.Cap), 1),
		row("max_row_kv_tokens", float64(r.MaxRowTokens), 1),
		row("kv_bytes_per_step", float64(r.KVBytesPerStep), 1),
		row("kept_kv_bytes", float64(r.KeptKVBytes), 1),
	}
	if r.LiveBytes > 0 {
		rows = append(rows, row("live_buffer_bytes", float64(r.LiveBytes), 1))
	}
	if len(r.RoleRates) > 0 {
		var g, l, w float64
		for _, x := range r.RoleRates {
			g, l, w = g+x.Global, l+x.Local, w+x.Window
		}
		n := float64(len(r.RoleRates))
		rows = append(rows, row("role_global_rate", g/n, 1), row("role_local_rate", l/n, 1), row("role_window_rate", w/n, 1))
	}
	if r.BandwidthBytesPerSecond > 0 {
		rows = append(rows, row("bandwidth_bytes_per_second", r.BandwidthBytesPerSecond, 1),
			row("bandwidth_floor_ms", r.FloorMs, 1), row("buffer_floor_ms", r.BufferFloorMs, 1))
	}
	return rows
}

// progressEvery is how often Measure's log reports a prefill's progress.
const progressEvery = 30 * time.Second

// Measure times prefill and decoding of one method at one prompt length: Warmup untimed runs, then Repeats timed
// runs, each a Prefill of the prompt followed by DecodeTokens greedy steps (EOS ignored). It reports the median
// and p90 over runs, the peak K/V bytes, the KV fraction and the memory-bandwidth floor of a step.
func Measure(e *Engine, o MeasureOptions) (Result, error) {
	if err := e.init(); err != nil {
		return Result{}, err
	}
	if o.Batch <= 0 {
		o.Batch = 1
	}
	if o.DecodeTokens <= 0 {
		o.DecodeTokens = 64
	}
	if o.Warmup < 0 {
		return Result{}, fmt.Errorf("engine: Measure: Warmup = %d must be ≥ 0", o.Warmup)
	}
	if o.Warmup == 0 && o.Repeats == 0 {
		o.Warmup = 1
	}
	if o.Repeats <= 0 {
		o.Repeats = 3
	}
	prompt := o.Prompt
	if prompt == nil {
		if o.PromptLen <= 0 {
			return Result{}, fmt.Errorf("engine: Measure: PromptLen = %d must be ≥ 1", o.PromptLen)
		}
		r := rand.New(rand.NewPCG(o.Seed, 0x6c6174))
		prompt = make([][]int32, o.Batch)
		for b := range prompt {
			prompt[b] = make([]int32, o.PromptLen)
			for i := range prompt[b] {
				prompt[b][i] = int32(r.IntN(e.Cfg.VocabSize))
			}
		}
	}
	o.Batch, o.PromptLen = len(prompt), len(prompt[0])
	if o.PromptLen+o.DecodeTokens > e.Cfg.MaxSeqLen {
		return Result{}, fmt.Errorf("engine: Measure: prompt %d + %d decoded tokens is past model.max_seq_len = %d",
			o.PromptLen, o.DecodeTokens, e.Cfg.MaxSeqLen)
	}
	C := max(e.spec.chunk, 1)
	if o.Chunk <= 0 {
		o.Chunk = (o.PromptLen + C - 1) / C * C
	}
	saved := e.Options
	defer func() { e.Options = saved }()
	e.Options.EOS, e.Options.AllLogits = nil, false
	if e.Options.MaxNewTokens == 0 {
		e.Options.MaxNewTokens = o.DecodeTokens
	}
	res := Result{Method: o.Method, Backend: e.Backend.String(), PromptLen: o.PromptLen, Batch: o.Batch, Chunk: o.Chunk,
		DecodeTokens: o.DecodeTokens, Repeats: o.Repeats}
	goBackend := e.Backend.String() == "go"
	// The bandwidth first, before this measurement allocates its cache (the benchmark's chain holds 16 buffers).
	var bw float64
	if o.CopyBytes >= 0 {
		n := o.CopyBytes
		if n == 0 {
			n = 512 << 20
			if goBackend {
				n = 16 << 20
			}
		}
		var err error
		if bw, err = MeasureBandwidth(e.Backend, n, bandwidthIters); err != nil {
			return res, err
		}
	}
	var host, dev, commit, prep, outs, overlap []float64
	defer func(p func(done, total int)) { e.Options.Progress = p }(e.Options.Progress) // the caller's, after the runs
	for i := 0; i < o.Warmup+o.Repeats; i++ {
		if o.Log != nil { // a long prefill (the first compiles its graphs) says where it is every 30 s
			start, last := time.Now(), time.Now()
			e.Options.Progress = func(done, total int) {
				if now := time.Now(); now.Sub(last) >= progressEvery && done < total {
					last = now
					fmt.Fprintf(o.Log, "      prefill: %d of %d positions after %.0f s, %d slots\n", done, total, now.Sub(start).Seconds(), e.Cap())
				}
			}
		}
		pr, err := e.Prefill(prompt, o.Chunk)
		if err != nil {
			return res, err
		}
		live := heapInUse(goBackend)
		dr, err := e.Decode(o.DecodeTokens)
		if err != nil {
			return res, err
		}
		live = max(live, heapInUse(goBackend))
		var s float64 // the steps alone (not Decode's checks and final logits copy)
		for _, x := range dr.StepSeconds {
			s += x
		}
		steps := float64(max(len(dr.StepSeconds), 1))
		if o.Log != nil {
			kind, k, n := "timed run", i-o.Warmup+1, o.Repeats
			if i < o.Warmup {
				kind, k, n = "warm-up", i+1, o.Warmup
			}
			fmt.Fprintf(o.Log, "    %s %d/%d: prefill %.2f s (%d chunks of %d; graphs %.2f s, arguments %.2f, host table %.2f, commits %.2f, other %.2f), decode %.3f ms/token (device %.3f, host table %.3f, commit %.3f, arguments %.3f, outputs %.3f; host work during the graph call %.3f), %d slots\n",
				kind, k, n, pr.Seconds, pr.Chunks, pr.Chunk, pr.GraphSeconds, pr.ArgsSeconds, pr.HostSeconds, pr.CommitSeconds,
				pr.Seconds-pr.GraphSeconds-pr.ArgsSeconds-pr.HostSeconds-pr.CommitSeconds, 1e3*s/steps, 1e3*dr.DeviceSeconds/steps,
				1e3*dr.HostSeconds/steps, 1e3*dr.CommitSeconds/steps, 1e3*dr.PrepSeconds/steps, 1e3*dr.OutputSeconds/steps, 1e3*dr.OverlapSeconds/steps, e.Cap())
		}
		if i < o.Warmup {
			continue
		}
		res.LiveBytes = max(res.LiveBytes, live)
		res.PrefillSeconds = append(res.PrefillSeconds, pr.Seconds)
		res.DecodeMsPerToken = append(res.DecodeMsPerToken, 1e3*s/steps)
		host = append(host, 1e3*dr.HostSeconds/steps)
		dev = append(dev, 1e3*dr.DeviceSeconds/steps)
		commit = append(commit, 1e3*dr.CommitSeconds/steps)
		prep = append(prep, 1e3*dr.PrepSeconds/steps)
		outs = append(outs, 1e3*dr.OutputSeconds/steps)
		overlap = append(overlap, 1e3*dr.OverlapSeconds/steps)
	}
	res.PrefillMedian, res.PrefillP90 = quantile(res.PrefillSeconds, 0.5), quantile(res.PrefillSeconds, 0.9)
	res.DecodeMedian, res.DecodeP90 = quantile(res.DecodeMsPerToken, 0.5), quantile(res.DecodeMsPerToken, 0.9)
	res.HostMsPerToken, res.DeviceMsPerToken = quantile(host, 0.5), quantile(dev, 0.5)
	res.CommitMsPerToken = quantile(commit, 0.5)
	res.PrepMsPerToken, res.OutputMsPerToken = quantile(prep, 0.5), quantile(outs, 0.5)
	res.OverlapMsPerToken = quantile(overlap, 0.5)
	if res.PrefillMedian > 0 {
		res.PrefillTokensS = float64(o.PromptLen*o.Batch) / res.PrefillMedian
	}
	res.PeakCacheBytes, res.PeakChunkBytes = e.PeakCacheBytes()
	res.KVFraction, res.KVTokens = e.KVFraction(), e.KVTokens()
	res.Cap, res.MaxRowTokens = e.Cap(), e.MaxRowTokens()
	res.MaxRow[0], res.MaxRow[1], res.MaxRow[2] = e.MaxRow()
	res.RoleRates = e.RoleRates()
	res.KVBytesPerStep = e.CacheBytes()
	rows := float64(e.Cfg.NLayers * e.batch * e.Cfg.KVHeads())
	res.KeptKVBytes = int64(2 * res.KVTokens * rows * float64(e.Cfg.HeadDim()) * float64(e.elemBytes()))
	for _, s := range e.Params.Specs {
		res.ParamBytes += int64(s.Size()) * e.elemBytes()
	}
	if bw > 0 {
		res.BandwidthBytesPerSecond = bw
		res.FloorMs = 1e3 * BandwidthFloor(res.KeptKVBytes+res.ParamBytes, bw)
		res.BufferFloorMs = 1e3 * BandwidthFloor(res.KVBytesPerStep+res.ParamBytes, bw)
		if res.FloorMs > 0 {
			res.DecodeOverFloor = res.DecodeMedian / res.FloorMs
		}
	}
	return res, nil
}

// heapInUse is the Go heap in use (the pure-Go backend keeps its buffers there); 0 on other backends.
func heapInUse(goBackend bool) int64 {
	if !goBackend {
		return 0
	}
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapInuse)
}

// quantile is the q-quantile of xs with linear interpolation (0 for none).
func quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(xs))
	f := q * float64(len(s)-1)
	i := int(f)
	if i+1 >= len(s) {
		return s[len(s)-1]
	}
	return s[i] + (f-float64(i))*(s[i+1]-s[i])
}

// BandwidthFloor is the shortest time, in seconds, to read bytes at bandwidth bytes per second: the
// memory-bandwidth floor of a decoding step when bytes is what the step must read (kept K/V plus weights).
func BandwidthFloor(bytes int64, bandwidth float64) float64 {
	if bandwidth <= 0 {
		return 0
	}
	return float64(bytes) / bandwidth
}

// bandwidthIters is the chain length of Measure's bandwidth benchmark. With 256 MiB and 10 calls (about 1.5 ms of
// copying on the H200) five runs of session 9 measured 2.4e12 to 3.8e12 B/s (the README's engine section): the
// slope between two short chains is noisy. With 512 MiB and 16 calls a chain copies ~17 GB; the chain holds its
// inputs until it ends (8 GiB at 512 MiB).
const bandwidthIters = 16

// MeasureBandwidth measures the device's copy bandwidth in bytes per second: a float32 buffer is read and written
// (y = x + s) iters times in a dependent chain, after a warm-up chain, best of five, once with about n bytes and
// once with n/8; every call moves twice its buffer. The bandwidth is the slope between the two sizes
// (slopeBandwidth), which leaves out what a call costs whatever its size. With one size only (n bytes over the
// chain's time, what this returned until 2026-11-29), that per-call cost counted as copy time: on the H200 a
// 256 MiB buffer gave 1.9e12 B/s, and full attention's decoding step on the 8B shape at batch 8 then ran faster
// (6.10 ms) than the "floor" derived from it (6.41 ms; results/latency32k).
func MeasureBandwidth(backend compute.Backend, n int64, iters int) (float64, error) {
	if n < 1024 || iters < 1 {
		return 0, fmt.Errorf("engine: MeasureBandwidth(%d bytes, %d iterations): need ≥ 1024 bytes and ≥ 1 iteration", n, iters)
	}
	exec, err := NewExec(backend, func(x, s *Node) (*Node, *Node) {
		y := Add(x, s)
		return y, Slice(y, AxisRange(0, 1))
	})
	if err != nil {
		return 0, err
	}
	defer exec.Finalize()
	small, large := n/32*4, n/4*4 // whole float32 elements; n ≥ 1024, so small ≥ 128 bytes
	tSmall, err := chainTime(exec, int(small/4), iters)
	if err != nil {
		return 0, err
	}
	tLarge, err := chainTime(exec, int(large/4), iters)
	if err != nil {
		return 0, err
	}
	return slopeBandwidth(2*small*int64(iters), 2*large*int64(iters), tSmall, tLarge)
}

// slopeBandwidth returns the bandwidth of transfers that moved bytesSmall in tSmall and bytesLarge in tLarge,
// where each time is a fixed cost plus bytes over the bandwidth: (bytesLarge − bytesSmall) / (tLarge − tSmall).
// When noise makes that slope meaningless (the larger transfer not slower, or a slope below what the larger transfer
// achieved including its fixed cost) it returns bytesLarge / tLarge, the lower bound.
func slopeBandwidth(bytesSmall, bytesLarge int64, tSmall, tLarge time.Duration) (float64, error) {
	if tLarge <= 0 || bytesLarge <= bytesSmall {
		return 0, errors.New("engine: bandwidth benchmark took no measurable time")
	}
	plain := float64(bytesLarge) / tLarge.Seconds()
	if tLarge <= tSmall {
		return plain, nil
	}
	return max(plain, float64(bytesLarge-bytesSmall)/(tLarge-tSmall).Seconds()), nil
}

// chainTime is the best of five timings of iters dependent calls of exec on a float32 buffer of size elements,
// after a warm-up chain (compilation and the allocator's first buffers).
func chainTime(exec *Exec, size, iters int) (time.Duration, error) {
	x := tensors.FromShape(shapes.Make(dtypes.Float32, size))
	s := tensors.FromScalar(float32(1))
	defer func() { _ = x.FinalizeAll() }()
	run := func() (time.Duration, error) {
		start := time.Now()
		var first *tensors.Tensor
		used := make([]*tensors.Tensor, 0, iters)
		for i := 0; i < iters; i++ {
			out, err := exec.Exec(x, s)
			if err != nil {
				return 0, err
			}
			used = append(used, x)
			x, first = out[0], out[1]
		}
		_ = tensors.MustCopyFlatData[float32](first) // waits for the chain
		d := time.Since(start)
		for _, t := range used { // free after the synchronisation
			_ = t.FinalizeAll()
		}
		return d, nil
	}
	if _, err := run(); err != nil {
		return 0, fmt.Errorf("engine: bandwidth benchmark: %w", err)
	}
	var d time.Duration
	for k := 0; k < 5; k++ {
		dk, err := run()
		if err != nil {
			return 0, fmt.Errorf("engine: bandwidth benchmark: %w", err)
		}
		if k == 0 || dk < d {
			d = dk
		}
	}
	return d, nil
}
