package engine

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	"github.com/gomlx/gomlx/core/graph"
)

// A cache that grows during a prefill (NAtS keeps what its roles keep, so its capacity climbs through the buckets
// of kvcache.BucketSteps) needs a new prefill graph and new commit graphs at every bucket, compiled when the first
// chunk at that capacity runs. On the H200 one prefill graph of the 8B-shaped model (8 layers, batch 8, chunk 64)
// took ~12 s to compile, and NAtS's warm-up prefill at 32k spent 284 s of its 344 s in graphs and 52 s in commits
// while its cache grew through 23 buckets to 20,480 slots (results/latency32k/device-2026-11-29e.log). GoMLX compiles
// different shapes of one Exec concurrently, so Prefill compiles the graphs of the buckets the cache may grow
// into ahead of time, on Options.PrecompileWorkers goroutines, smallest bucket first: the compiles run in
// parallel with each other and with the chunks at the smaller capacities, and a chunk that needs a graph still
// being compiled waits for it.

// precompileWorkers is the number of goroutines that compile ahead (0: none).
func (e *Engine) precompileWorkers() int {
	switch w := e.Options.PrecompileWorkers; {
	case w > 0:
		return w
	case w < 0 || e.Backend.String() == "go": // the pure-Go backend "compiles" in milliseconds
		return 0
	}
	return max(1, min(8, runtime.NumCPU()/2))
}

// precompile starts compiling, for batch B and chunk T, the prefill graph of every capacity bucket above from that
// n tokens can make the cache grow into (within Options.MemLimitBytes), the host commit that grows the cache into
// it from the bucket below, and commitDelta at it with lists of 2·rows·T and 4·rows·T changes (a NAtS chunk lists
// its placements and about as many evictions). Per engine, batch and chunk it queues each bucket once: a later
// prefill (a timed run after a warm-up) queues only buckets above those queued before (a longer prompt). The
// returned stop function drops the compiles not yet started (buckets this prefill did not reach; a later prefill
// queues them again) and waits for those in flight, at most one per worker. A compile that fails here fails the
// chunk that waits for it with the same error.
func (e *Engine) precompile(B, T, from, n int) (stop func()) {
	workers := e.precompileWorkers()
	if workers == 0 || e.spec.kind != kindNAtS {
		return func() {}
	}
	if e.precompiledTo == nil {
		e.precompiledTo = map[[2]int]int{}
	}
	key := [2]int{B, T}
	var caps []int
	prev := from // the bucket the first listed one grows from
	for c, top := from, e.growthCap(n); c < top; {
		next := e.growthCap(c + 1)
		if e.checkMem("", B, next, T) != nil {
			break
		}
		if next > e.precompiledTo[key] {
			if len(caps) == 0 {
				prev = c
			}
			caps = append(caps, next)
		}
		c = next
	}
	if len(caps) == 0 {
		return func() {}
	}
	queuedTo := e.precompiledTo[key]
	e.precompiledTo[key] = caps[len(caps)-1] // until stop: a prefill that grows meanwhile queues nothing again
	params := e.paramArgs()
	ps := make([]shapes.Shape, len(params))
	for i, p := range params {
		ps[i] = p.(interface{ Shape() shapes.Shape }).Shape()
	}
	L, KV, hd := e.Cfg.NLayers, e.Cfg.KVHeads(), e.Cfg.HeadDim()
	rows := L * B * KV
	kv := func(n int) []shapes.Shape { // per layer K then V, [B, KV, n, hd]
		s := make([]shapes.Shape, 2*L)
		for i := range s {
			s[i] = shapes.Make(e.computeDType(), B, KV, n, hd)
		}
		return s
	}
	table := func(n int) shapes.Shape { return shapes.Make(dtypes.Int32, L, B, KV, n) }
	list := func(n int) shapes.Shape { return shapes.Make(dtypes.Int32, n) }
	scalar := shapes.Make(dtypes.Int32)
	type job struct {
		exec *graph.Exec
		in   []shapes.Shape
		cap  int // the bucket it is for
	}
	var jobs []job
	add := func(c int, x *graph.Exec, parts ...[]shapes.Shape) {
		var in []shapes.Shape
		for _, p := range parts {
			in = append(in, p...)
		}
		jobs = append(jobs, job{x, in, c})
	}
	for _, c := range caps {
		add(c, e.prefillExec, ps, []shapes.Shape{shapes.Make(dtypes.Int32, B, T), scalar, scalar}, kv(c), []shapes.Shape{table(c), table(c)})
		add(c, e.commitExec, kv(prev), kv(T), []shapes.Shape{table(c)})
		for _, U := range []int{deltaLen(2 * rows * T), deltaLen(4 * rows * T)} {
			add(c, e.commitDeltaExec, kv(c), kv(T), []shapes.Shape{table(c), table(c), list(U), list(U), list(U), scalar})
		}
		prev = c
	}
	ch := make(chan int) // job indices, in order
	done := make(chan struct{})
	started := make([]atomic.Bool, len(jobs))
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range ch {
				select {
				case <-done: // stopped while this job was being handed over
					continue
				default:
				}
				started[i].Store(true)
				e.precompiled.Add(1)
				e.compiling.Add(1)
				time.Sleep(e.precompileDelay)
				_, _ = jobs[i].exec.Compile(jobs[i].in...)
				e.compiling.Add(-1)
			}
		}()
	}
	go func() {
		defer close(ch)
		for i := range jobs {
			select {
			case ch <- i:
			case <-done:
				return
			}
		}
	}()
	return func() {
		if !e.drainPrecompile {
			close(done)
		}
		wg.Wait()
		// Only the buckets whose jobs all started (and all below them) count as queued: a later prefill with the same
		// batch and chunk (the next prompt length of a latency run) queues the dropped ones again.
		to := queuedTo
		for i, j := range jobs {
			if !started[i].Load() {
				break
			}
			if i+1 == len(jobs) || jobs[i+1].cap != j.cap {
				to = j.cap
			}
		}
		e.precompiledTo[key] = to
	}
}
