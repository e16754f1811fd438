package engine

import (
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/gomlx/compute"
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	"github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"

	"natsbench/kvcache"
	"natsbench/model"
)

// Options tunes an Engine. The zero value is usable.
type Options struct {
	// EOS lists token ids that end a row's generation in Decode.
	EOS []int32
	// Staging is R, the number of decoded tokens whose K/V wait in a small staging buffer before they are moved
	// into the committed cache (one pass over the cache every R steps, so that no decoding step rewrites the
	// large buffers). Default 32.
	Staging int
	// MaxUpdates bounds the validity changes (freed slots) sent with one decoding step, per (layer, batch row, KV
	// head) on average: past L·B·KV·MaxUpdates queued changes the step uploads the whole validity mask instead. The
	// list is padded to a power of two, one compiled step per size (the sizes only grow). Default 64.
	MaxUpdates int
	// MemLimitBytes bounds the K/V buffers (committed cache plus staging, counted twice because a commit holds the
	// old and the new buffers at once; during prefill also the chunk's K/V), in bytes; 0 means no limit. GoMLX does
	// not report free device memory, so the caller passes the limit.
	MemLimitBytes int64
	// MaxNewTokens is the number of tokens the caller means to decode after the prompt; it only sizes the first
	// allocation of policies with a known bound (Full: prompt + new tokens; StreamingLLM, H2O, TOVA: the budget).
	MaxNewTokens int
	// InitialCap overrides the first capacity (rounded up to a kvcache.Bucket); 0 = automatic: the policy's
	// bound for bounded policies (Full: prompt + MaxNewTokens, see boundCap), kvcache.Bucket(0) for NAtS, which then grows with what it keeps.
	InitialCap int
	// GrowthSteps is the number of capacity buckets per doubling above kvcache.FineFrom slots when a cache must grow
	// (NAtS, which grows with what it keeps; Full and StreamingLLM only past their first allocation; H2O and TOVA
	// grow in powers of two): the buffers are then at most (1 + 1/GrowthSteps)× what the fullest row holds,
	// instead of up to 2× with powers of two, for up to GrowthSteps compiled steps per doubling and more (still
	// geometric) growth copies. A power of two in [1, 64]; 1 = powers of two; 0 = the default, 4.
	GrowthSteps int
	// AllLogits makes Prefill return the logits of every prompt position (tests), not only the last.
	AllLogits bool
	// PrecompileWorkers is the number of goroutines that compile, while a NAtS prefill runs, the graphs of the
	// capacity buckets its cache may grow into (see precompile.go); 0 = automatic (none on the pure-Go backend,
	// else half the CPUs, at most 8), < 0 = none.
	PrecompileWorkers int
	// TableWorkers is the number of goroutines over which the host slot table of Full, StreamingLLM and NAtS splits
	// its rows (contiguous runs of at least 256) for each token's placement and evictions; 0 or 1 = one pass. It
	// rarely pays (BenchmarkPrefillHostTable): on 2 cores 2 runs were ~1.8× slower (a goroutine's hand-off to an
	// idle core costs more than a run's work); on the H200 machine's 16 cores 8 runs took 2,048 rows (8B shape,
	// batch 32) from 97 to 78 ns per row and token, and 4 runs of 1,024 rows from 61 to 104. The results are the
	// same either way.
	TableWorkers int
	// Progress, when set, is called by Prefill after every chunk with the prompt positions done and in all.
	Progress func(done, total int)
}

// Engine is a KV-cache inference engine for one model and one cache policy: chunked prefill of a batch of
// equal-length prompts, then greedy token-by-token decoding. The Masker (nil = causal) gives the NAtS roles
// (model.DecodeRoler); the Evictor (nil = keep everything) decides which keys survive. Set the exported fields
// (or use New) and call Prefill, then Decode or Step. An Engine is not safe for concurrent use.
type Engine struct {
	Cfg     model.Config
	Masker  model.Masker
	Evictor kvcache.Evictor
	Params  *model.Params
	// Backend runs the graphs; nil opens model.NewBackend("") (the pure-Go backend unless NATSBENCH_BACKEND says
	// otherwise).
	Backend compute.Backend
	Options Options

	ok                                           bool
	spec                                         spec
	prefillExec, probeExec, stepExec, commitExec *graph.Exec
	commitDestExec, commitDeltaExec              *graph.Exec

	tab        table
	batch      int
	K, V       []*tensors.Tensor // committed cache per layer `[B, KV, devCap, hd]`
	Kr, Vr     []*tensors.Tensor // staging per layer `[B, KV, R, hd]`
	valid      *tensors.Tensor   // `[L, B, KV, devCap+R]` float32, device copy of the validity
	state      *tensors.Tensor   // `[L, B, d]` float32 NAtS chunk pool
	devCap     int
	pos, base  int32 // next position; first staged position
	next       []int32
	lastLogits *tensors.Tensor
	needFull   bool
	failed     error   // a decoding step that failed after changing the table: decoding needs a Prefill again
	updIdx     []int32 // the validity changes queued for the next step: flat indices into valid
	updVal     []float32
	updCap     int // the update list's padded length (a power of two; it only grows, so that the shapes settle)
	newIdx     []int32
	newVal     []float32
	fullMasks  int // steps that uploaded the whole validity mask (tests)
	// stagedSlots[i·rows + r] is the slot row r gave the token staged at index i (position base + i) during
	// decoding; recN counts the indices recorded since the last commit (−1: a gap, so the next commit takes the
	// host path).
	stagedSlots  []int32
	recN         int
	destCommits  int // commits that took commitDest (tests check that decoding exercises it)
	stepGrowths  int // decoding steps that grew the cache (tests check that decoding exercises it)
	deltaCommits int // prefill commits that took commitDelta (tests check that prefill exercises it)
	garbage      []*tensors.Tensor
	// slotPos and slotRole are the device's copy of the slot table, `[L, B, KV, Cap]` int32, during a prefill with
	// the fast table (Full, StreamingLLM, NAtS): left by the last commitDelta; nil when the next chunk must upload
	// the host's (the first chunk, and after a chunk that grew the cache).
	slotPos, slotRole *tensors.Tensor
	// touched[row] lists the slots a row changed in the current prefill chunk (placed or freed; a slot may repeat).
	touched    [][]int32
	checkSlots bool // tests: after every commitDelta, compare the device's slot table with the host's
	// precompiledTo is, per (batch, chunk), the largest capacity whose graphs precompile has queued; precompiled
	// counts the compiles its workers started, compiling those running (tests).
	precompiledTo          map[[2]int]int
	deltaShapes            map[[2]int]bool // tests, when not nil: the (capacity, list length) of every commitDelta
	precompiled, compiling atomic.Int32
	drainPrecompile        bool          // tests: Prefill waits for every compile ahead, not only those started
	precompileDelay        time.Duration // tests: each compile ahead starts this much later
	// prefillBuilds, commitBuilds and deltaBuilds count the graphs built (one per compiled shape; tests).
	prefillBuilds, commitBuilds, deltaBuilds atomic.Int32
	peakCache                                int64
	peakTotal                                int64

	// bf16 copies of the weights (see paramArgs), the float32 tensors they were made from, and the converter.
	conv, convSrc []*tensors.Tensor
	convExec      *graph.Exec
	zeroExecs     map[string]*graph.Exec // per shape: a graph that makes a zero K/V buffer on the device
	noParamCache  bool                   // tests: pass the float32 weights as before
}

// New returns an engine after checking the configuration, the parameters against the model's specs, and the
// policy (its Validate, and for NAtS that the masker's window and chunk agree with the evictor's).
func New(backend compute.Backend, cfg model.Config, m model.Masker, ev kvcache.Evictor, p *model.Params, opt Options) (*Engine, error) {
	e := &Engine{Cfg: cfg, Masker: m, Evictor: ev, Params: p, Backend: backend, Options: opt}
	return e, e.init()
}

func (e *Engine) init() error {
	if e.ok {
		return nil
	}
	if err := e.Cfg.Validate(); err != nil {
		return fmt.Errorf("engine: %w", err)
	}
	if e.Params == nil {
		return errors.New("engine: no parameters (Engine.Params is nil)")
	}
	want := model.Specs(e.Cfg, e.Masker)
	if len(want) != len(e.Params.Specs) {
		return fmt.Errorf("engine: %d parameters, the model with masker %T has %d", len(e.Params.Specs), e.Masker, len(want))
	}
	for i, s := range want {
		if got := e.Params.Specs[i]; got.Name != s.Name || !slices.Equal(got.Dims, s.Dims) {
			return fmt.Errorf("engine: parameter %d is %q %v, the model wants %q %v", i, got.Name, got.Dims, s.Name, s.Dims)
		}
	}
	sp, err := newSpec(e.Masker, e.Evictor)
	if err != nil {
		return err
	}
	e.spec = sp
	if e.Options.Staging <= 0 {
		e.Options.Staging = 32
	}
	if e.Options.MaxUpdates < 1 {
		e.Options.MaxUpdates = 64
	}
	if e.Options.GrowthSteps == 0 {
		e.Options.GrowthSteps = 4
	}
	if !kvcache.ValidSteps(e.Options.GrowthSteps) {
		return fmt.Errorf("engine: Options.GrowthSteps = %d: must be a power of two in [1, 64]", e.Options.GrowthSteps)
	}
	if e.Options.MemLimitBytes < 0 {
		return fmt.Errorf("engine: Options.MemLimitBytes = %d: must be ≥ 0", e.Options.MemLimitBytes)
	}
	if e.Backend == nil {
		if e.Backend, err = model.NewBackend(""); err != nil {
			return err
		}
	}
	n := len(e.Params.Specs)
	mk := func(fn func(in []*graph.Node) []*graph.Node) (*graph.Exec, error) {
		x, err := graph.NewExec(e.Backend, fn)
		if err != nil {
			return nil, err
		}
		return x.SetMaxCache(512), nil
	}
	if e.prefillExec, err = mk(func(in []*graph.Node) []*graph.Node {
		e.prefillBuilds.Add(1)
		return e.prefillGraph(in[:n], in[n:], false)
	}); err != nil {
		return err
	}
	if e.probeExec, err = mk(func(in []*graph.Node) []*graph.Node { return e.prefillGraph(in[:n], in[n:], true) }); err != nil {
		return err
	}
	if e.stepExec, err = mk(func(in []*graph.Node) []*graph.Node { return e.stepGraph(in[:n], in[n:]) }); err != nil {
		return err
	}
	if e.commitExec, err = mk(func(in []*graph.Node) []*graph.Node { e.commitBuilds.Add(1); return e.commitGraph(in) }); err != nil {
		return err
	}
	if e.commitDestExec, err = mk(e.commitDestGraph); err != nil {
		return err
	}
	if e.commitDeltaExec, err = mk(func(in []*graph.Node) []*graph.Node { e.deltaBuilds.Add(1); return e.commitDeltaGraph(in) }); err != nil {
		return err
	}
	e.ok = true
	return nil
}

// elemBytes is the size of one K/V element.
func (e *Engine) elemBytes() int64 { return int64(e.computeDType().Size()) }

// cacheBytes is the size of the K/V buffers (committed capacity plus staging) for batch b.
func (e *Engine) cacheBytes(b, capacity int) int64 {
	return 2 * int64(e.Cfg.NLayers) * int64(b) * int64(e.Cfg.KVHeads()) * int64(capacity+e.Options.Staging) *
		int64(e.Cfg.HeadDim()) * e.elemBytes()
}

// checkMem reports whether a cache of capacity slots for batch b, with extra tokens' K/V beside it (a prefill chunk),
// fits Options.MemLimitBytes while a commit runs: a commit gathers the whole cache into new buffers, so the old and
// the new are live at once. A growth holds the smaller old cache beside the new one, but the commits after it, at
// the new capacity, hold two of the new size, so growths are checked at twice the new size too.
func (e *Engine) checkMem(what string, b, capacity, extra int) error {
	lim := e.Options.MemLimitBytes
	if lim == 0 {
		return nil
	}
	cache := e.cacheBytes(b, capacity)
	need := 2*cache + 2*int64(e.Cfg.NLayers)*int64(b)*int64(e.Cfg.KVHeads())*int64(extra)*int64(e.Cfg.HeadDim())*e.elemBytes()
	if need > lim {
		chunk := ""
		if extra > 0 {
			chunk = fmt.Sprintf(", plus %d tokens' K/V", extra)
		}
		return fmt.Errorf("engine: %s: the K/V buffers need %d bytes (capacity %d, batch %d: %d for the cache, twice that while a commit copies it%s), over the limit (Options.MemLimitBytes = %d)",
			what, need, capacity, b, cache, chunk, lim)
	}
	return nil
}

// initialCap is the first capacity for n = prompt + MaxNewTokens tokens.
func (e *Engine) initialCap(n int) int {
	switch {
	case e.Options.InitialCap > 0:
		return kvcache.Bucket(e.Options.InitialCap)
	case e.spec.kind == kindNAtS:
		return kvcache.Bucket(0)
	case e.Evictor == nil:
		return boundCap(n)
	}
	return kvcache.Bucket(e.Evictor.Capacity(n))
}

// growthCap is the capacity a growing table allocates for n slots: kvcache.BucketSteps with Options.GrowthSteps for
// the fast tables (Full, StreamingLLM, NAtS), a power of two for kvcache.Cache (H2O, TOVA, …).
func (e *Engine) growthCap(n int) int {
	if e.spec.kind == kindGeneric {
		return kvcache.Bucket(n)
	}
	return kvcache.BucketSteps(n, e.Options.GrowthSteps)
}

// boundCap is the capacity for a policy that keeps all n tokens (full attention): a kvcache.Bucket up to 1024
// slots, then n rounded up to a multiple of 1024. A power of two would nearly double the buffers, and every
// step's cache read, when prompt + new tokens just passes one (32k + 64 tokens: 64k slots); full attention never
// grows, so the one compiled step per capacity stays one.
func boundCap(n int) int {
	if n <= 1024 {
		return kvcache.Bucket(n)
	}
	return (n + 1023) / 1024 * 1024
}

// maxStatsBytes bounds the per-chunk attention statistics that H2O/TOVA prefill copies to the host.
const maxStatsBytes = 1 << 30

// PrefillResult is what Prefill returns.
type PrefillResult struct {
	// Logits are `[batch, vocab]` for the last prompt token, or `[batch, len, vocab]` with Options.AllLogits.
	Logits []float32
	// Next is the greedy next token per row (the first token Decode emits).
	Next []int32
	// Seconds is the wall time of the prefill; HostSeconds the part spent in the host slot table.
	Seconds, HostSeconds float64
	// ArgsSeconds is the part spent building each chunk's arguments and moving them to the device (the tokens and,
	// for the first chunk, after a chunk that grew the cache, and for H2O and TOVA always, the slot table's
	// positions and roles, `[layers, batch, KV heads, slots]` int32 each); GraphSeconds the chunk graphs, from launch
	// to their outputs on the host; CommitSeconds the commits of each chunk's K/V into the cache (the gather graph
	// and its sources: the changed slots, or a host-built source map of the table's size for H2O, TOVA and a chunk
	// that grew the cache). The rest of Seconds is resetting the cache (the empty buffers are made on the device),
	// freeing replaced buffers and copying the logits.
	ArgsSeconds, GraphSeconds, CommitSeconds float64
	// Chunks is the number of chunk graphs run; Chunk the chunk length used (tokens).
	Chunks, Chunk int
}

// Prefill resets the engine and feeds a batch of equal-length prompts into the cache, chunk tokens at a time.
// Each chunk runs one compiled graph per (batch, chunk, capacity) — the last, partial chunk is padded to the same
// length and its padding masked — then the host applies the policy token by token, and one more graph moves the
// chunk's surviving K/V into the committed cache (growing it when the policy needs more slots). For NAtS the chunk
// must be a multiple of the NAtS chunk size.
//
// With the fast table (Full, StreamingLLM, NAtS) the slot table lives on the device between chunks: the host sends
// only the slots each row changed during the chunk (placed or freed, with their new positions and roles, O(chunk)
// per row), and commitDelta updates the device's table and moves the K/V (commitDeltaGraph). A chunk that grows
// the cache, and every chunk of H2O and TOVA, instead uploads the whole slot table (positions and roles, `[L, B, KV,
// Cap]` int32 each) and commits through a host-built source map of the same size. That O(Cap) work per chunk was
// ~0.25 s per chunk for the 8B shape at batch 8 and 32k (17.3M slots, 512 chunks of 64: 127 of the 141 s prefill;
// results/latency32k/device-2026-11-29c.log).
func (e *Engine) Prefill(prompt [][]int32, chunk int) (PrefillResult, error) {
	if err := e.init(); err != nil {
		return PrefillResult{}, err
	}
	B := len(prompt)
	if B == 0 || len(prompt[0]) == 0 {
		return PrefillResult{}, errors.New("engine: Prefill: empty prompt")
	}
	P := len(prompt[0])
	for b, row := range prompt {
		if len(row) != P {
			return PrefillResult{}, fmt.Errorf("engine: Prefill: prompt row %d has %d tokens, row 0 has %d (rows must have equal length)", b, len(row), P)
		}
		for i, tok := range row {
			if tok < 0 || int(tok) >= e.Cfg.VocabSize {
				return PrefillResult{}, fmt.Errorf("engine: Prefill: prompt row %d position %d: token %d outside the vocabulary [0, %d)", b, i, tok, e.Cfg.VocabSize)
			}
		}
	}
	if P > e.Cfg.MaxSeqLen {
		return PrefillResult{}, fmt.Errorf("engine: Prefill: prompt of %d tokens is longer than model.max_seq_len = %d", P, e.Cfg.MaxSeqLen)
	}
	if chunk < 1 {
		return PrefillResult{}, fmt.Errorf("engine: Prefill: chunk = %d: must be ≥ 1", chunk)
	}
	C := max(e.spec.chunk, 1)
	if chunk%C != 0 {
		return PrefillResult{}, fmt.Errorf("engine: Prefill: chunk = %d is not a multiple of the NAtS chunk size %d", chunk, C)
	}
	T := min(chunk, (P+C-1)/C*C)
	capacity := e.initialCap(P + e.Options.MaxNewTokens)
	if e.spec.needs&(kvcache.AccAttn|kvcache.LastAttn) != 0 {
		// The chunk's attention comes to the host as statistics for the evictor: `[L, B, KV, T, Cap+T]` float32.
		if n := 4 * int64(e.Cfg.NLayers*B*e.Cfg.KVHeads()) * int64(T) * int64(capacity+T); n > maxStatsBytes {
			return PrefillResult{}, fmt.Errorf("engine: Prefill: chunk = %d: the attention statistics of %T would take %d bytes per chunk (limit %d); use a smaller chunk",
				chunk, e.Evictor, n, int64(maxStatsBytes))
		}
	}
	if err := e.checkMem("prefill", B, capacity, T); err != nil {
		return PrefillResult{}, err
	}
	start := time.Now()
	if err := e.reset(B, capacity); err != nil {
		return PrefillResult{}, err
	}
	// No compile ahead outlives Prefill, so that none runs during what the caller times next.
	defer e.precompile(B, T, capacity, P+e.Options.MaxNewTokens)()
	L, H, V := e.Cfg.NLayers, e.Cfg.KVHeads(), e.Cfg.VocabSize
	rows := L * B * H
	res := PrefillResult{Chunk: T}
	if e.Options.AllLogits {
		res.Logits = make([]float32, B*P*V)
	}
	var hostDur time.Duration
	tokens := make([]int32, B*T)
	roles := make([]uint8, rows)
	var attnT [][]float32
	delta := e.spec.kind != kindGeneric // the fast table: commitDelta
	var evicted func(row, slot int, pos int32)
	if delta {
		evicted = func(row, slot int, _ int32) { e.touchSlot(row, int32(slot)) }
	}
	for pos0 := 0; pos0 < P; pos0 += T {
		n := min(T, P-pos0)
		clear(tokens)
		for b := range prompt {
			copy(tokens[b*T:], prompt[b][pos0:pos0+n])
		}
		argsStart := time.Now()
		tok := tensors.FromFlatDataAndDimensions(tokens, B, T)
		var sPos, sRole *tensors.Tensor
		if delta && e.slotPos != nil { // the table the last commitDelta left on the device
			sPos, sRole = e.slotPos, e.slotRole
		} else {
			sPos, sRole = e.slotTensors()
			if delta {
				e.slotPos, e.slotRole = sPos, sRole
			}
		}
		if err := e.toDevice(tok, sPos, sRole); err != nil {
			return res, err
		}
		args := e.paramArgs()
		args = append(args, tok, int32(pos0), int32(n-1))
		for _, k := range e.K {
			args = append(args, k)
		}
		for _, v := range e.V {
			args = append(args, v)
		}
		args = append(args, sPos, sRole)
		graphStart := time.Now()
		res.ArgsSeconds += graphStart.Sub(argsStart).Seconds()
		out, err := e.prefillExec.Exec(args...)
		if err != nil {
			return res, fmt.Errorf("engine: prefill chunk at position %d: %w", pos0, err)
		}
		kc, vc := out[:L], out[L:2*L]
		logits, argmax, state := out[2*L], out[2*L+1], out[2*L+2]
		k := 2*L + 3
		var hRoles []int32
		if e.spec.kind == kindNAtS {
			hRoles = tensors.MustCopyFlatData[int32](out[k]) // [L, B, KV, T]
			k++
		}
		var hAttn []float32
		if e.spec.needs&(kvcache.AccAttn|kvcache.LastAttn) != 0 {
			hAttn = tensors.MustCopyFlatData[float32](out[k]) // [L, B, KV, T, devCap+T]
			if attnT == nil {
				attnT = make([][]float32, L)
			}
		}
		e.next = tensors.MustCopyFlatData[int32](argmax)
		res.GraphSeconds += time.Since(graphStart).Seconds()
		// Read to the host: the device copies go now (the tokens, the greedy picks, roles and attention statistics),
		// with the last commit's replaced buffers, rather than whenever Go's collector runs their finalizers.
		e.garbage = append(e.garbage, tok, argmax)
		e.garbage = append(e.garbage, out[2*L+3:]...)
		e.flushGarbage()
		e.track(int64(2*L*B*H*T*e.Cfg.HeadDim()) * e.elemBytes())
		hostStart := time.Now()
		devCap := e.devCap
		if delta {
			e.beginTouch()
		}
		for t := 0; t < n; t++ {
			pos := int32(pos0 + t)
			if err := e.place(pos, T); err != nil {
				return res, err
			}
			if delta {
				for r, s := range e.tab.Slots() {
					e.touchSlot(r, s)
				}
			}
			if hRoles != nil {
				for r := range roles {
					roles[r] = uint8(hRoles[r*T+t])
				}
			}
			var at [][]float32
			if hAttn != nil {
				at = e.chunkAttn(attnT, hAttn, t, T, devCap, int32(pos0))
			}
			var rr []uint8
			if hRoles != nil {
				rr = roles
			}
			if err := e.tab.End(pos, rr, at, evicted); err != nil {
				return res, err
			}
		}
		hostDur += time.Since(hostStart)
		commitStart := time.Now()
		if delta && e.tab.Cap() == devCap {
			if err := e.commitDelta(kc, vc, int32(pos0), int32(pos0+n)); err != nil {
				return res, err
			}
		} else {
			if err := e.commit(kc, vc, int32(pos0), int32(pos0+n)); err != nil {
				return res, err
			}
			e.dropSlots() // the table changed beyond this chunk's slots: the next chunk uploads it
		}
		res.CommitSeconds += time.Since(commitStart).Seconds()
		// The commit has replaced the cache: the old K/V (a whole cache's size) and this chunk's K/V are freed before
		// the next chunk's graph runs, so that it does not hold two caches beside its own temporaries. Holding them
		// until the next chunk's host read, full attention at 32k, batch 32 on the 8B shape (35.5 GB of cache, 8 GiB
		// of attention scores per chunk) ran out of the H200's memory mid-prefill once in three calls
		// (results/latency32k/device-2026-11-29t.log).
		e.garbage = append(append(e.garbage, kc...), vc...)
		e.garbage = append(e.garbage, e.state, e.lastLogits) // flushGarbage skips nil
		e.flushGarbage()
		e.state = state
		e.lastLogits = logits
		if e.Options.AllLogits {
			lg := tensors.MustCopyFlatData[float32](logits)
			for b := 0; b < B; b++ {
				copy(res.Logits[(b*P+pos0)*V:(b*P+pos0+n)*V], lg[b*T*V:(b*T+n)*V])
			}
		}
		res.Chunks++
		if e.Options.Progress != nil {
			e.Options.Progress(pos0+n, P)
		}
	}
	e.dropSlots() // decoding does not read the device's slot table
	// The last commit left the validity of exactly this table (every position < P placed, evictions applied, R empty
	// staging columns) on the device, so the first decoding step needs no host rebuild of it (an O(L·B·KV·Cap)
	// build and upload: 69 MB at 32k, batch 8). On the H200 the step's argument part, which timed that build but not
	// the upload, was 0.95 ms per token over 64 tokens at 16k, batch 8 (results/latency_parts/device-2026-11-29.log).
	e.pos, e.base = int32(P), int32(P)
	if !e.Options.AllLogits {
		res.Logits = tensors.MustCopyFlatData[float32](e.lastLogits)
	}
	res.Next = slices.Clone(e.next)
	res.Seconds = time.Since(start).Seconds()
	res.HostSeconds = hostDur.Seconds()
	return res, nil
}

// chunkAttn fills, for chunk token t, the attention per table slot from the chunk graph's attention
// `[L, B, KV, T, devCap+T]`: a cached slot reads its own column, a slot holding chunk token u reads column devCap+u.
func (e *Engine) chunkAttn(dst [][]float32, src []float32, t, T, devCap int, pos0 int32) [][]float32 {
	cp := e.tab.Cap()
	w := devCap + T
	bh := e.batch * e.Cfg.KVHeads()
	for l, layer := range e.tab.Layers() {
		if len(dst[l]) != bh*cp {
			dst[l] = make([]float32, bh*cp)
		}
		for r := 0; r < bh; r++ {
			row := src[((l*bh+r)*T+t)*w : ((l*bh+r)*T+t+1)*w]
			out := dst[l][r*cp : (r+1)*cp]
			for s, p := range layer.Pos[r*cp : (r+1)*cp] {
				switch {
				case p < 0:
					out[s] = 0
				case p < pos0:
					out[s] = row[s]
				default:
					out[s] = row[devCap+int(p-pos0)]
				}
			}
		}
	}
	return dst
}

// reset empties the engine for a new batch with the given capacity.
func (e *Engine) reset(B, capacity int) error {
	t, err := newTable(e.spec, e.Evictor, e.Cfg.NLayers, B, e.Cfg.KVHeads(), capacity, e.Options.GrowthSteps, e.Options.TableWorkers)
	if err != nil {
		return err
	}
	// The last prefill's buffers go now, not when the collector finds them: the new ones would sit beside them on the
	// device (every call before this has read its outputs, so none is in use).
	e.Release()
	e.tab, e.batch = t, B
	L, KV, hd, R := e.Cfg.NLayers, e.Cfg.KVHeads(), e.Cfg.HeadDim(), e.Options.Staging
	e.K, e.V = make([]*tensors.Tensor, L), make([]*tensors.Tensor, L)
	e.Kr, e.Vr = make([]*tensors.Tensor, L), make([]*tensors.Tensor, L)
	zero := func(slots int) *tensors.Tensor { // the first error stops the rest
		if err != nil {
			return nil
		}
		var z *tensors.Tensor
		z, err = e.zeros(B, KV, slots, hd)
		return z
	}
	for l := 0; l < L; l++ {
		e.K[l], e.V[l], e.Kr[l], e.Vr[l] = zero(capacity), zero(capacity), zero(R), zero(R)
	}
	if err != nil {
		return err
	}
	e.devCap = capacity
	e.state = tensors.FromFlatDataAndDimensions(make([]float32, L*B*e.Cfg.DModel), L, B, e.Cfg.DModel)
	e.pos, e.base = 0, 0 // Release left no validity, logits, next tokens or queued updates
	e.failed = nil
	rows := L * B * KV
	e.stagedSlots, e.recN = make([]int32, rows*R), 0
	e.needFull = true
	e.peakCache, e.peakTotal = 0, 0
	e.track(0)
	return nil
}

// zeros is a zero K/V tensor in the storage dtype, made on the device: a host tensor would be allocated, zeroed
// and uploaded at its full size (the cache of the 8B shape at batch 16 and 32k is 17.7 GB) in every Prefill.
func (e *Engine) zeros(dims ...int) (*tensors.Tensor, error) {
	sh := shapes.Make(e.computeDType(), dims...)
	key := sh.String()
	x := e.zeroExecs[key]
	if x == nil {
		var err error
		if x, err = graph.NewExec(e.Backend, func(g *graph.Graph) *graph.Node { return graph.Zeros(g, sh) }); err != nil {
			return nil, fmt.Errorf("engine: zero K/V buffer %s: %w", sh, err)
		}
		if e.zeroExecs == nil {
			e.zeroExecs = map[string]*graph.Exec{}
		}
		e.zeroExecs[key] = x
	}
	out, err := x.Exec()
	if err != nil {
		return nil, fmt.Errorf("engine: zero K/V buffer %s: %w", sh, err)
	}
	return out[0], nil
}

// track records the peak K/V bytes: the committed cache and staging, plus extra (a prefill chunk's K/V).
func (e *Engine) track(extra int64) {
	c := e.cacheBytes(e.batch, e.devCap)
	e.peakCache = max(e.peakCache, c)
	e.peakTotal = max(e.peakTotal, c+extra)
}

func (e *Engine) paramArgs() []any {
	args := make([]any, 0, len(e.Params.Values)+8*e.Cfg.NLayers+8)
	if !e.Cfg.IsBF16() || e.noParamCache {
		for _, v := range e.Params.Values {
			args = append(args, v)
		}
		return args
	}
	// bf16: the graphs convert every float32 weight to bf16 on entry (model.NodesFrom), so passing the float32
	// weights would make each decoding step read 4 bytes and write 2 per weight before its matmuls. Convert once,
	// on the device, and keep the bf16 copies (the conversion in the graphs is then a no-op); a parameter whose
	// tensor changed (CalibrateRoles) is converted again.
	if len(e.convSrc) != len(e.Params.Values) {
		e.convSrc, e.conv = make([]*tensors.Tensor, len(e.Params.Values)), make([]*tensors.Tensor, len(e.Params.Values))
	}
	for i, v := range e.Params.Values {
		if e.convSrc[i] != v {
			if e.convExec == nil {
				x, err := graph.NewExec(e.Backend, func(x *graph.Node) *graph.Node { return graph.ConvertDType(x, dtypes.BFloat16) })
				if err != nil {
					panic(fmt.Errorf("engine: bf16 weight conversion: %w", err))
				}
				e.convExec = x.SetMaxCache(256)
			}
			if e.conv[i] != nil {
				e.conv[i].FinalizeAll()
			}
			e.conv[i], e.convSrc[i] = e.convExec.MustExec1(v), v
		}
		args = append(args, e.conv[i])
	}
	return args
}

// toDevice moves arguments built on the host for one graph call to the device before the call (freeing their host
// copies), so that the timings count the upload as building the arguments, not as the graph (Exec would upload them
// itself). A tensor already on the device is left as it is.
func (e *Engine) toDevice(ts ...*tensors.Tensor) error {
	for _, t := range ts {
		if err := t.ToDevice(e.Backend, 0); err != nil {
			return fmt.Errorf("engine: moving an argument to the device: %w", err)
		}
	}
	return nil
}

// slotTensors returns the table's positions and roles `[L, B, KV, Cap]` as int32 tensors.
func (e *Engine) slotTensors() (pos, role *tensors.Tensor) {
	L, B, H, cp := e.Cfg.NLayers, e.batch, e.Cfg.KVHeads(), e.tab.Cap()
	p := make([]int32, 0, L*B*H*cp)
	r := make([]int32, 0, L*B*H*cp)
	for _, l := range e.tab.Layers() {
		p = append(p, l.Pos...)
		for _, x := range l.Role {
			r = append(r, int32(x))
		}
	}
	return tensors.FromFlatDataAndDimensions(p, L, B, H, cp), tensors.FromFlatDataAndDimensions(r, L, B, H, cp)
}

// place puts pos in the table, growing it (up to the memory limit) when a row is full. extra is the number of
// chunk tokens whose K/V are held beside the cache meanwhile (for the memory check).
func (e *Engine) place(pos int32, extra int) error {
	err := e.tab.Place(pos)
	if errors.Is(err, kvcache.ErrFull) {
		nc := e.tab.NextCap()
		if err := e.checkMem(fmt.Sprintf("growing the cache to %d slots at position %d", nc, pos), e.batch, nc, extra); err != nil {
			return err
		}
		e.tab.Grow(nc)
		err = e.tab.Place(pos)
	}
	if err != nil {
		return fmt.Errorf("engine: position %d: %w", pos, err)
	}
	return nil
}

// commit moves the staged tokens at positions [base, upto) into the committed cache, resizing it to the table's
// capacity; sk, sv are the staged K/V per layer (`[B, KV, S, hd]`, position base at index 0). The same graph
// derives the validity mask of the new layout (a slot is valid iff it holds a position below upto; the staging
// columns start empty), so the step after a commit uploads no mask: the table's evictions up to now are in it,
// and the updates queued for the old layout are dropped.
func (e *Engine) commit(sk, sv []*tensors.Tensor, base, upto int32) error {
	L, B, H := e.Cfg.NLayers, e.batch, e.Cfg.KVHeads()
	nc := e.tab.Cap()
	defer func() { e.recN = 0 }()
	if R := e.Options.Staging; nc == e.devCap && !e.needFull && e.valid != nil && sk[0].Shape().Dimensions[2] == R &&
		e.recN == int(upto-base) && (e.Backend.String() != "go" || L*B*H*nc*R <= maxDestElems) {
		return e.commitDest(sk, sv, base, upto)
	}
	src := make([]int32, L*B*H*nc) // source column in [committed | staged], or −1: the slot is not valid
	for li, l := range e.tab.Layers() {
		for k, p := range l.Pos {
			s := k % nc
			i := li*B*H*nc + k
			switch {
			case p < 0 || p >= upto: // free, or placed after upto (it is staged anew)
				src[i] = -1
			case p >= base:
				src[i] = int32(e.devCap) + p - base
			default: // committed before: p < base holds only in the slots the old layout had
				src[i] = int32(s)
			}
		}
	}
	if _, err := e.runCommit(e.commitExec, sk, sv, base, upto, tensors.FromFlatDataAndDimensions(src, L, B, H, nc)); err != nil {
		return err
	}
	e.devCap = nc
	e.track(0)
	return nil
}

// runCommit runs a commit graph on the committed K and V, the staged sk and sv and extra inputs, and adopts its
// outputs (K, V and the validity of the new layout; the replaced buffers go to the garbage list):
// positions below upto are committed, and the updates queued for the old validity are dropped.
func (e *Engine) runCommit(exec *graph.Exec, sk, sv []*tensors.Tensor, base, upto int32, extra ...any) ([]*tensors.Tensor, error) {
	L := e.Cfg.NLayers
	args := make([]any, 0, 4*L+len(extra))
	for _, t := range [][]*tensors.Tensor{e.K, e.V, sk, sv} {
		for _, x := range t {
			args = append(args, x)
		}
	}
	out, err := exec.Exec(append(args, extra...)...)
	if err != nil {
		return nil, fmt.Errorf("engine: moving positions [%d, %d) into the cache: %w", base, upto, err)
	}
	e.garbage = append(e.garbage, e.K...)
	e.garbage = append(e.garbage, e.V...)
	if e.valid != nil {
		e.garbage = append(e.garbage, e.valid)
	}
	e.K, e.V, e.valid = out[:L], out[L:2*L], out[2*L]
	e.base = upto
	e.needFull = false
	e.clearUpdates()
	return out, nil
}

// commitDelta is commit for a prefill chunk of the fast table at an unchanged capacity: the host sends the slots
// the rows changed during the chunk as one list of flat slot indices into `[L, B, KV, Cap]` with their positions
// and roles after it (int32 each, padded to a power of two, deltaLen; a slot listed twice has the same values
// twice), and commitDeltaGraph updates the device's slot table and builds the gather's sources from it, so nothing
// of size Cap is built on the host or uploaded.
func (e *Engine) commitDelta(sk, sv []*tensors.Tensor, base, upto int32) error {
	defer func() { e.recN = 0 }()
	L := e.Cfg.NLayers
	idx, pos, role := e.deltaList()
	U := len(idx)
	if e.deltaShapes != nil {
		e.deltaShapes[[2]int{e.devCap, U}] = true
	}
	ten := func(v []int32) *tensors.Tensor { return tensors.FromFlatDataAndDimensions(v, U) }
	out, err := e.runCommit(e.commitDeltaExec, sk, sv, base, upto, e.slotPos, e.slotRole, ten(idx), ten(pos), ten(role), base)
	if err != nil {
		return err
	}
	e.garbage = append(e.garbage, e.slotPos, e.slotRole)
	e.slotPos, e.slotRole = out[2*L+1], out[2*L+2]
	e.deltaCommits++
	e.track(0)
	if e.checkSlots {
		return e.compareSlots()
	}
	return nil
}

// deltaList is commitDelta's list: every listed slot's flat index into `[L, B, KV, Cap]`, position and role as the
// table now holds them, padded to deltaLen with the spare index L·B·KV·Cap.
func (e *Engine) deltaList() (idx, pos, role []int32) {
	cp, bh := e.devCap, e.batch*e.Cfg.KVHeads()
	n := 0
	for _, t := range e.touched {
		n += len(t)
	}
	U := deltaLen(n)
	idx, pos, role = make([]int32, U), make([]int32, U), make([]int32, U)
	layers := e.tab.Layers()
	k := 0
	for r, t := range e.touched {
		l, o := layers[r/bh], (r%bh)*cp
		for _, s := range t {
			idx[k], pos[k], role[k] = int32(r*cp)+s, l.Pos[o+int(s)], int32(l.Role[o+int(s)])
			k++
		}
	}
	for ; k < U; k++ {
		idx[k] = int32(len(e.touched) * cp) // the graph's spare element
	}
	return idx, pos, role
}

// deltaLen is the length of commitDelta's list for n changes: the power of two ≥ max(n, 64), so that a prefill
// meets few list lengths (each is a compiled commit per capacity).
func deltaLen(n int) int {
	U := 64
	for U < n {
		U *= 2
	}
	return U
}

// compareSlots checks that the device's slot table equals the host's (tests, Engine.checkSlots).
func (e *Engine) compareSlots() error {
	hp, hr := e.slotTensors()
	for _, c := range []struct {
		what      string
		dev, host *tensors.Tensor
	}{{"positions", e.slotPos, hp}, {"roles", e.slotRole, hr}} {
		d, h := tensors.MustCopyFlatData[int32](c.dev), tensors.MustCopyFlatData[int32](c.host)
		for i := range h {
			if d[i] != h[i] {
				return fmt.Errorf("engine: after commitDelta at position %d the device's slot %s differ from the host's at flat index %d: %d, want %d",
					e.base, c.what, i, d[i], h[i])
			}
		}
	}
	return nil
}

// beginTouch starts listing the slots the rows change in a prefill chunk.
func (e *Engine) beginTouch() {
	rows := e.Cfg.NLayers * e.batch * e.Cfg.KVHeads()
	if len(e.touched) != rows {
		e.touched = make([][]int32, rows)
	}
	for r := range e.touched {
		e.touched[r] = e.touched[r][:0]
	}
}

// touchSlot lists a slot a row changed in this chunk. A slot may be listed more than once (placed, freed and placed
// again): commitDelta sends each listing with the slot's final position and role, and its graph takes the maximum
// of equal values. Removing the repeats on the host (a mark per slot, or a sort per row and chunk) cost as much as
// the table's own work per token (BenchmarkPrefillHostTable).
func (e *Engine) touchSlot(row int, slot int32) { e.touched[row] = append(e.touched[row], slot) }

// dropSlots forgets the device's slot table (freed with the garbage list).
func (e *Engine) dropSlots() {
	if e.slotPos != nil {
		e.garbage = append(e.garbage, e.slotPos, e.slotRole)
	}
	e.slotPos, e.slotRole = nil, nil
}

// maxDestElems bounds commitDestGraph's [L, B, KV, Cap, R] slot-matching intermediate on the pure-Go backend,
// which materialises it (XLA fuses it into one reduction); past it the host builds the sources (commit).
const maxDestElems = 1 << 24

// commitDest is commit for decoding's staging at an unchanged capacity, without the host's O(slots) pass: the
// graph builds the gather's sources and the new validity from the staged tokens' slots (recorded when they were
// placed), the validity the last step left and the updates queued since; a staged token evicted meanwhile is dead
// in that validity and moves nowhere, even when a later staged token took its slot.
func (e *Engine) commitDest(sk, sv []*tensors.Tensor, base, upto int32) error {
	L, B, H, R := e.Cfg.NLayers, e.batch, e.Cfg.KVHeads(), e.Options.Staging
	rows := L * B * H
	dest := make([]int32, rows*R) // [L, B, KV, R]
	for r := 0; r < rows; r++ {
		for i := 0; i < R; i++ {
			dest[r*R+i] = -1
			if i < int(upto-base) {
				dest[r*R+i] = e.stagedSlots[i*rows+r]
			}
		}
	}
	ui, uv := e.updates(nil) // the queued updates only
	if _, err := e.runCommit(e.commitDestExec, sk, sv, base, upto, tensors.FromFlatDataAndDimensions(dest, L, B, H, R), e.valid,
		ui, uv); err != nil {
		return err
	}
	e.destCommits++
	e.track(0)
	return nil
}

// Release frees the cache's device buffers (K/V, staging, validity, slot table, decoder state) now instead of at
// the next Prefill, keeping the compiled graphs: an engine reused across prompt lengths then holds no cache while
// the next length measures the copy bandwidth or allocates its own. Decoding needs a Prefill again.
func (e *Engine) Release() {
	for _, ts := range [][]*tensors.Tensor{e.K, e.V, e.Kr, e.Vr, {e.valid, e.state, e.lastLogits}} {
		e.garbage = append(e.garbage, ts...)
	}
	e.dropSlots()
	e.flushGarbage()
	e.K, e.V, e.Kr, e.Vr = nil, nil, nil, nil
	e.valid, e.state, e.lastLogits, e.next = nil, nil, nil, nil
	e.tab, e.devCap, e.batch = nil, 0, 0
	e.clearUpdates()
}

// flushGarbage frees replaced device buffers. It may run while a graph that read them is still executing (prefill
// flushes right after a commit, decoding during the next step's call): PJRT frees a buffer once its pending uses are
// done (and go-xla's Execute returns only when the device has finished).
func (e *Engine) flushGarbage() {
	for _, t := range e.garbage {
		if t != nil {
			_ = t.FinalizeAll()
		}
	}
	e.garbage = e.garbage[:0]
}

// buildValid returns the validity `[L, B, KV, devCap+R]` from the table: a slot holding a committed position
// marks its cache column, a staged position its staging column.
func (e *Engine) buildValid() *tensors.Tensor {
	L, B, H, R := e.Cfg.NLayers, e.batch, e.Cfg.KVHeads(), e.Options.Staging
	w := e.devCap + R
	v := make([]float32, L*B*H*w)
	cp := e.tab.Cap()
	for li, l := range e.tab.Layers() {
		for k, p := range l.Pos {
			if p < 0 {
				continue
			}
			row := li*B*H + k/cp
			if p < e.base {
				v[row*w+k%cp] = 1
			} else if int(p-e.base) < R {
				v[row*w+e.devCap+int(p-e.base)] = 1
			}
		}
	}
	return tensors.FromFlatDataAndDimensions(v, L, B, H, w)
}

// onEvict queues the validity change of a freed slot for the next step.
func (e *Engine) onEvict(row, slot int, pos int32) {
	if e.needFull {
		return
	}
	w := e.devCap + e.Options.Staging
	idx := row*w + slot
	if pos >= e.base {
		idx = row*w + e.devCap + int(pos-e.base)
	}
	if len(e.updIdx) >= e.Cfg.NLayers*e.batch*e.Cfg.KVHeads()*e.Options.MaxUpdates {
		e.needFull = true
		e.clearUpdates()
		return
	}
	e.updIdx, e.updVal = append(e.updIdx, int32(idx)), append(e.updVal, -1)
}

// clearUpdates empties the queue of validity changes.
func (e *Engine) clearUpdates() { e.updIdx, e.updVal = e.updIdx[:0], e.updVal[:0] }

// updates returns the queued validity changes followed by more (flat index, value) pairs as the graphs take them,
// `[U, 1]` int32 and `[U]` float32, padded to U = updCap (a power of two ≥ 16 raised to fit) with zero changes at
// distinct indices (adds of 0 to one element would queue up on a GPU).
func (e *Engine) updates(more []int32, moreVal ...float32) (idx, val *tensors.Tensor) {
	ix, vs := e.updateLists(more, moreVal...)
	return tensors.FromFlatDataAndDimensions(ix, len(ix), 1), tensors.FromFlatDataAndDimensions(vs, len(vs))
}

// updateLists is updates as flat slices.
func (e *Engine) updateLists(more []int32, moreVal ...float32) (idx []int32, val []float32) {
	n := len(e.updIdx) + len(more)
	for e.updCap < max(n, 16) {
		e.updCap = max(16, 2*e.updCap)
	}
	ix, vs := make([]int32, e.updCap), make([]float32, e.updCap)
	size := e.Cfg.NLayers * e.batch * e.Cfg.KVHeads() * (e.devCap + e.Options.Staging) // of the validity
	for k := n; k < len(ix); k++ {
		ix[k] = int32(k % size)
	}
	copy(ix, e.updIdx)
	copy(ix[len(e.updIdx):], more)
	copy(vs, e.updVal)
	copy(vs[len(e.updVal):], moreVal)
	return ix, vs
}

// stepSmall packs a step's small arguments into the one int32 vector stepGraph takes: the tokens, pos, ridx, the
// update indices, then the update values (whole numbers: −1, 0 or 1).
func stepSmall(tokens []int32, pos, ridx int32, ix []int32, vs []float32) *tensors.Tensor {
	B, U := len(tokens), len(ix)
	v := make([]int32, B+2+2*U)
	copy(v, tokens)
	v[B], v[B+1] = pos, ridx
	copy(v[B+2:], ix)
	for i, x := range vs {
		v[B+2+U+i] = int32(x)
	}
	return tensors.FromFlatDataAndDimensions(v, len(v))
}

// stepArgs is the argument list of the step graph: the weights, the small arguments (stepSmall), the committed
// K/V, the staged K/V kr and vr, the validity and the decoder state.
func (e *Engine) stepArgs(small *tensors.Tensor, kr, vr []*tensors.Tensor, valid, state *tensors.Tensor) []any {
	args := append(e.paramArgs(), small)
	for _, t := range [][]*tensors.Tensor{e.K, e.V, kr, vr} {
		for _, x := range t {
			args = append(args, x)
		}
	}
	return append(args, valid, state)
}

// StepOut is the result of one decoding step.
type StepOut struct {
	// Logits are `[batch, vocab]` (only from Step; Decode keeps the last step's on the device).
	Logits []float32
	// Argmax is the greedy next token per row.
	Argmax []int32
	// Seconds is the wall time of the step; HostSeconds the part spent in the host table after the graph call (the
	// policy's decisions on its outputs; before 2026-11-29's commit 2b4a796 also placing the token and the window
	// expiries); DeviceSeconds the time from launching the step graph to having its greedy tokens on the host
	// (OverlapSeconds ran meanwhile).
	Seconds, HostSeconds, DeviceSeconds float64
	// CommitSeconds is the part spent moving staged tokens into the committed buffers (every Options.Staging steps,
	// and when the capacity grows).
	CommitSeconds float64
	// PrepSeconds is the part spent building the step's arguments and moving them to the device (the validity mask
	// when it is rebuilt, the slot updates, the tokens); OutputSeconds the part after the greedy tokens arrive: the
	// other outputs read to the host (attention statistics) and converted.
	PrepSeconds, OutputSeconds float64
	// OverlapSeconds is the host work done while the device ran the step (placing the token in the table, the
	// table's window expiries, freeing the buffers the last step replaced): part of DeviceSeconds, unless it outlasted
	// the device.
	OverlapSeconds float64
}

// Step feeds tokens `[batch]` at the next position (teacher forcing) and returns the step's logits and argmax.
func (e *Engine) Step(tokens []int32) (StepOut, error) {
	out, err := e.step(tokens)
	if err != nil {
		return out, err
	}
	out.Logits = tensors.MustCopyFlatData[float32](e.lastLogits)
	return out, nil
}

// step runs one decoding step; the logits stay on the device (e.lastLogits).
func (e *Engine) step(tokens []int32) (StepOut, error) {
	if e.tab == nil || e.next == nil {
		return StepOut{}, errors.New("engine: decoding before Prefill")
	}
	if e.failed != nil {
		return StepOut{}, fmt.Errorf("engine: an earlier step failed, Prefill again (%w)", e.failed)
	}
	if len(tokens) != e.batch {
		return StepOut{}, fmt.Errorf("engine: step with %d tokens, the batch has %d rows", len(tokens), e.batch)
	}
	for b, tok := range tokens {
		if tok < 0 || int(tok) >= e.Cfg.VocabSize {
			return StepOut{}, fmt.Errorf("engine: step row %d: token %d outside the vocabulary [0, %d)", b, tok, e.Cfg.VocabSize)
		}
	}
	pos := e.pos
	if int(pos) >= e.Cfg.MaxSeqLen {
		return StepOut{}, fmt.Errorf("engine: position %d is past model.max_seq_len = %d", pos, e.Cfg.MaxSeqLen)
	}
	start := time.Now()
	R := e.Options.Staging
	var commitDur time.Duration
	if int(pos-e.base) >= R {
		if err := e.commit(e.Kr, e.Vr, e.base, pos); err != nil {
			return StepOut{}, err
		}
		commitDur = time.Since(start)
	}
	ridx := pos - e.base
	L, B, H := e.Cfg.NLayers, e.batch, e.Cfg.KVHeads()
	rows := L * B * H
	prepStart := time.Now()
	w := e.devCap + R
	if e.needFull { // the whole mask, from the table (the new token is not placed yet: its updates below mark it)
		e.fullMasks++
		if e.valid != nil {
			e.garbage = append(e.garbage, e.valid)
		}
		e.valid = e.buildValid()
		e.clearUpdates()
	}
	// The queued evictions, then every row's new token in its staging column.
	if len(e.newIdx) != rows {
		e.newIdx, e.newVal = make([]int32, rows), make([]float32, rows)
	}
	for r := range e.newIdx {
		e.newIdx[r], e.newVal[r] = int32(r*w+e.devCap+int(ridx)), 1
	}
	ix, vs := e.updateLists(e.newIdx, e.newVal...)
	small := stepSmall(tokens, pos, ridx, ix, vs)
	if err := e.toDevice(small, e.valid); err != nil {
		return StepOut{}, err
	}
	args := e.stepArgs(small, e.Kr, e.Vr, e.valid, e.state)
	e.needFull = false // the next step's updates: queued from here on
	e.clearUpdates()
	devStart := time.Now()
	prep := devStart.Sub(prepStart)
	// The graph call returns when the device is done (go-xla waits for it), so it runs on another goroutine while
	// this one does the host work that needs nothing the step computes: placing the new token in the table (the
	// step reads it from its staging column, whatever its slot), the table's window expiries at pos, and freeing
	// the buffers the last step replaced. On the H200 at batch 32 that took NAtS's host table after the call from
	// 0.43 to 0.15 ms a step (results/latency32k, device-2026-11-29q and -r).
	type result struct {
		out   []*tensors.Tensor
		picks []int32
		err   error
	}
	done := make(chan result, 1)
	go func() {
		defer func() { // a panic here would end the process: the runner recovers only on its own goroutine
			if r := recover(); r != nil {
				done <- result{err: fmt.Errorf("panic: %v", r)}
			}
		}()
		out, err := e.stepExec.Exec(args...)
		if err != nil {
			done <- result{err: err}
			return
		}
		picks, err := tensors.CopyFlatData[int32](out[2*L+2]) // NAtS: then the roles [L, B, KV]
		done <- result{out: out, picks: picks, err: err}
	}()
	hostStart := time.Now()
	placeErr := e.place(pos, 0)
	if placeErr == nil {
		if e.recN == int(ridx) { // the slots of this staged token, for the next commit (commitDest)
			copy(e.stagedSlots[int(ridx)*rows:], e.tab.Slots())
			e.recN++
		} else {
			e.recN = -1
		}
		e.tab.Expire(pos, e.onEvict)
	}
	e.flushGarbage()
	overlap := time.Since(hostStart)
	res := <-done
	dev := time.Since(devStart)
	if placeErr != nil { // nothing placed: the table is as before the step, and the whole mask is rebuilt from it
		e.garbage = append(e.garbage, res.out...)
		e.flushGarbage()
		e.needFull = true
		return StepOut{}, placeErr
	}
	// Past here the table has placed the token and queued evictions for a validity the step did not return: a failed
	// step leaves the engine unusable until the next Prefill.
	if res.err != nil {
		e.garbage = append(e.garbage, res.out...)
		e.failed = fmt.Errorf("engine: decoding step at position %d: %w", pos, res.err)
		return StepOut{}, e.failed
	}
	out, argmax := res.out, res.picks
	if want := B + rows; e.spec.kind == kindNAtS && len(argmax) != want {
		e.garbage = append(e.garbage, out...)
		e.failed = fmt.Errorf("engine: decoding step at position %d: %d greedy tokens and roles, want %d + %d (is %T a model.DecodeRoler?)",
			pos, len(argmax), B, rows, e.Masker)
		return StepOut{}, e.failed
	}
	e.garbage = append(e.garbage, e.Kr...)
	e.garbage = append(e.garbage, e.Vr...)
	e.garbage = append(e.garbage, e.valid, e.state)
	if e.lastLogits != nil {
		e.garbage = append(e.garbage, e.lastLogits)
	}
	e.Kr, e.Vr = out[:L], out[L:2*L]
	e.valid, e.state = out[2*L], out[2*L+1]
	outStart := time.Now()
	e.lastLogits = out[2*L+3]
	k := 2*L + 4
	var roles []uint8
	if e.spec.kind == kindNAtS {
		r32 := argmax[B:]
		argmax = argmax[:B:B]
		roles = make([]uint8, len(r32))
		for i, x := range r32 {
			roles[i] = uint8(x)
		}
	}
	var attn [][]float32
	if e.spec.needs&(kvcache.AccAttn|kvcache.LastAttn) != 0 {
		a := tensors.MustCopyFlatData[float32](out[k])
		attn = e.stepAttn(a)
	}
	outDur := time.Since(outStart)
	hostStart = time.Now()
	if err := e.tab.End(pos, roles, attn, e.onEvict); err != nil {
		e.failed = err
		return StepOut{}, err
	}
	host := time.Since(hostStart)
	e.pos++
	e.next = argmax
	if e.tab.Cap() != e.devCap { // placing the token grew the table: the buffers grow now, the token committed with them
		growStart := time.Now()
		if err := e.commit(e.Kr, e.Vr, e.base, e.pos); err != nil {
			e.failed = err
			return StepOut{}, err
		}
		commitDur += time.Since(growStart)
		e.stepGrowths++
	}
	return StepOut{Argmax: argmax, Seconds: time.Since(start).Seconds(), HostSeconds: host.Seconds(), DeviceSeconds: dev.Seconds(),
		CommitSeconds: commitDur.Seconds(), PrepSeconds: prep.Seconds(), OutputSeconds: outDur.Seconds(), OverlapSeconds: overlap.Seconds()}, nil
}

// stepAttn maps the step's attention `[L, B, KV, devCap+R]` to table slots `[L][B·KV·Cap]`.
func (e *Engine) stepAttn(a []float32) [][]float32 {
	cp, w := e.tab.Cap(), e.devCap+e.Options.Staging
	bh := e.batch * e.Cfg.KVHeads()
	out := make([][]float32, e.Cfg.NLayers)
	for li, l := range e.tab.Layers() {
		out[li] = make([]float32, bh*cp)
		for k, p := range l.Pos {
			r := li*bh + k/cp
			switch {
			case p < 0:
			case p < e.base:
				out[li][k] = a[r*w+k%cp]
			default:
				out[li][k] = a[r*w+e.devCap+int(p-e.base)]
			}
		}
	}
	return out
}

// DecodeResult is what Decode returns.
type DecodeResult struct {
	// Tokens are the emitted tokens per row (a row stops after an EOS token).
	Tokens [][]int32
	// Logits are `[batch, vocab]` of the last step (they predict Next); nil when no step ran.
	Logits []float32
	// Next is the greedy token after the last step.
	Next []int32
	// StepSeconds is the wall time of every step; Seconds the total; HostSeconds the host-table part;
	// DeviceSeconds the step graphs' part (launch to greedy tokens on the host).
	StepSeconds                         []float64
	Seconds, HostSeconds, DeviceSeconds float64
	// CommitSeconds is the part spent moving staged tokens into the committed buffers (every Options.Staging steps,
	// and when the capacity grows).
	CommitSeconds float64
	// PrepSeconds, OutputSeconds and OverlapSeconds sum the steps' StepOut parts of the same names.
	PrepSeconds, OutputSeconds, OverlapSeconds float64
}

// Decode emits up to n tokens per row greedily: each emitted token is the pending greedy choice (the first comes
// from Prefill), and is then fed through one decoding step whose argmax becomes the next pending choice. A row
// ends after emitting an EOS token (Options.EOS); decoding stops when every row has ended (the last EOS is not
// fed) or after n steps.
func (e *Engine) Decode(n int) (DecodeResult, error) {
	if n < 0 {
		return DecodeResult{}, fmt.Errorf("engine: Decode(%d): n must be ≥ 0", n)
	}
	if e.tab == nil || e.next == nil {
		return DecodeResult{}, errors.New("engine: Decode before Prefill")
	}
	if int(e.pos)+n > e.Cfg.MaxSeqLen {
		return DecodeResult{}, fmt.Errorf("engine: Decode(%d) at position %d would pass model.max_seq_len = %d", n, e.pos, e.Cfg.MaxSeqLen)
	}
	if e.spec.kind != kindNAtS {
		bound := int(e.pos) + n
		if e.Evictor != nil {
			bound = e.Evictor.Capacity(bound)
		}
		need := e.tab.Cap() // enough when the tokens fit (full attention's boundCap is not a power of two)
		if bound > need {
			need = e.growthCap(bound) // what growth allocates
		}
		if err := e.checkMem(fmt.Sprintf("decoding %d tokens", n), e.batch, need, 0); err != nil {
			return DecodeResult{}, err
		}
	}
	start := time.Now()
	res := DecodeResult{Tokens: make([][]int32, e.batch)}
	done := make([]bool, e.batch)
	tok := make([]int32, e.batch)
	for i := 0; i < n; i++ {
		all := true
		for b := range tok {
			tok[b] = e.next[b]
			if !done[b] {
				res.Tokens[b] = append(res.Tokens[b], tok[b])
				done[b] = slices.Contains(e.Options.EOS, tok[b])
			}
			all = all && done[b]
		}
		if all {
			break
		}
		so, err := e.step(tok)
		if err != nil {
			return res, err
		}
		res.StepSeconds = append(res.StepSeconds, so.Seconds)
		res.HostSeconds += so.HostSeconds
		res.DeviceSeconds += so.DeviceSeconds
		res.CommitSeconds += so.CommitSeconds
		res.PrepSeconds += so.PrepSeconds
		res.OutputSeconds += so.OutputSeconds
		res.OverlapSeconds += so.OverlapSeconds
	}
	if len(res.StepSeconds) > 0 {
		res.Logits = tensors.MustCopyFlatData[float32](e.lastLogits)
	}
	e.flushGarbage() // the last step's replaced buffers (the next step would free them during its graph call)
	res.Next = slices.Clone(e.next)
	res.Seconds = time.Since(start).Seconds()
	return res, nil
}

// Len returns the number of tokens in the cache's history (the position of the next token).
func (e *Engine) Len() int { return int(e.pos) }

// Cap returns the slots per (layer, batch row, KV head) of the committed cache.
func (e *Engine) Cap() int { return e.devCap }

// Table returns the host slot tables per layer (`[B, KV, Cap]` positions and roles); read-only.
func (e *Engine) Table() []*kvcache.Layer {
	if e.tab == nil {
		return nil
	}
	return e.tab.Layers()
}

// KVFraction is the NATS-SPEC §1.9 KV size: the slots kept after the last token divided by the tokens seen, mean
// over layers, batch rows and KV heads.
func (e *Engine) KVFraction() float64 {
	if e.tab == nil || e.pos == 0 {
		return 0
	}
	rows := e.Cfg.NLayers * e.batch * e.Cfg.KVHeads()
	var s float64
	for r := 0; r < rows; r++ {
		s += float64(e.tab.Occupied(r))
	}
	return s / float64(rows) / float64(e.pos)
}

// MaxRowTokens is the most slots any (layer, batch row, KV head) has held at once since the last Prefill began
// (right after a token is placed, before the policy's evictions): the row that sets a growing cache's capacity,
// which all rows share.
func (e *Engine) MaxRowTokens() int {
	if e.tab == nil {
		return 0
	}
	return e.tab.PeakOccupied()
}

// MaxRow is the (layer, batch row, KV head) that first held MaxRowTokens slots (zeros before a Prefill).
func (e *Engine) MaxRow() (layer, b, head int) {
	if e.tab == nil {
		return 0, 0, 0
	}
	r, KV := e.tab.PeakRow(), e.Cfg.KVHeads()
	return r / (e.batch * KV), r / KV % e.batch, r % KV
}

// RoleRates returns the NAtS role decisions per layer since the last Prefill began (the first chunk, forced
// Global, left out): what the scorers decided on this input, to compare with a calibration's target rates. Nil
// for other policies.
func (e *Engine) RoleRates() []RoleRates {
	if t, ok := e.tab.(*fastTable); ok {
		return t.RoleRates()
	}
	return nil
}

// KVTokens is the mean number of kept slots per (layer, batch row, KV head).
func (e *Engine) KVTokens() float64 { return e.KVFraction() * float64(e.pos) }

// CacheBytes returns the bytes of the K/V buffers now (committed capacity plus staging).
func (e *Engine) CacheBytes() int64 { return e.cacheBytes(e.batch, e.devCap) }

// PeakCacheBytes returns the largest CacheBytes since the last Prefill began, and the largest K/V bytes including
// a prefill chunk's own K/V.
func (e *Engine) PeakCacheBytes() (cache, withChunk int64) { return e.peakCache, e.peakTotal }

// CheckFits reports, before any work, whether a Prefill of batch rows of n prompt tokens (chunk tokens per
// graph) plus Options.MaxNewTokens fits Options.MemLimitBytes with the first capacity the policy allocates (the
// whole bound for Full, StreamingLLM, H2O and TOVA; NAtS, which grows with what it keeps, is checked again at
// every growth), and whether n is within model.max_seq_len.
func (e *Engine) CheckFits(batch, n, chunk int) error {
	if err := e.init(); err != nil {
		return err
	}
	if batch < 1 || n < 1 || chunk < 1 {
		return fmt.Errorf("engine: CheckFits(batch %d, prompt %d, chunk %d): all must be ≥ 1", batch, n, chunk)
	}
	if n+e.Options.MaxNewTokens > e.Cfg.MaxSeqLen {
		return fmt.Errorf("engine: prompt of %d tokens plus %d new tokens is longer than model.max_seq_len = %d",
			n, e.Options.MaxNewTokens, e.Cfg.MaxSeqLen)
	}
	return e.checkMem(fmt.Sprintf("prompt %d", n), batch, e.initialCap(n+e.Options.MaxNewTokens), min(chunk, n))
}
