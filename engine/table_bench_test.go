package engine

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"natsbench/kvcache"
	"natsbench/model"
	"natsbench/policy"
)

// BenchmarkPrefillHostTable times the host's share of a NAtS prefill per token: the fast table's Place and End for
// every (layer, batch row, KV head) — 8 layers, batch 16 or 32 and 8 KV heads (1,024 or 2,048 rows, as the
// 8B-shaped latency runs) with roles drawn at pg19 λ = 5e-7's rates — alone ("table"), with the bookkeeping of the
// slots each chunk of 64 changes and the list commitDelta builds from it at the chunk's end ("table+touch"), and
// with the rows split over 8 goroutines (Options.TableWorkers; "parts": 4 runs of rows at batch 16, 8 at 32).
// With 2 cores here (2026-11-29) "parts" was 2.0–2.6× slower than one pass (b16 238–305 ns per row and token, against
// 115–119; with the hole heap below, 97–99 against 54). On the H200 machine's 16 cores with the hole heap
// (results/latency32k/bench-2026-11-29l.txt): b16 table 61, parts 104; b32 table 97, parts 78; b32 full 49. On the H200 machine that share was 14.1 s of
// NAtS's 32.5 s prefill at batch 16 and 32k (results/latency32k/device-2026-11-29h.log): ~0.42 µs per row and token.
// Measured here (2 cores, 2026-11-29, -benchtime 20000x, 3 runs each): with the code of those runs (Place also
// zeroed H2O's and TOVA's Acc and Last; a mark per slot kept the list free of repeats), table 145–149 ns per row
// and token and table+touch 198–205 without building the list; now table 118–128 and table+touch 152–157 with it
// (128 list entries per row and chunk, padding included). Since the heap holds only the holes evictions left (a
// counter gives the never-used slots): b16 table 115–119 → 54, table+touch 148–152 → 70–76; b32 table 176 → 72;
// full attention ("full", growing to 20,480 slots) 174 → 109.
//
//	go test -run '^$' -bench PrefillHostTable -benchtime 20000x ./engine
func BenchmarkPrefillHostTable(b *testing.B) {
	const L, KV, W, T = 8, 8, 16, 64
	for _, c := range []struct {
		B                  int
		touch, parts, full bool
	}{{16, false, false, false}, {16, true, false, false}, {16, false, true, false}, {32, false, false, false}, {32, false, true, false}, {32, false, false, true}} {
		B, touch := c.B, c.touch
		rows := L * B * KV
		name := fmt.Sprintf("b%d/table", B)
		if c.full {
			name = fmt.Sprintf("b%d/full", B)
		}
		if touch {
			name += "+touch"
		}
		if c.parts {
			name += "/parts"
		}
		b.Run(name, func(b *testing.B) {
			sp := spec{kind: kindNAtS, window: W, chunk: 1, needs: kvcache.Roles}
			if c.full {
				sp = spec{kind: kindFull}
			}
			tab := newFastTable(sp, L, B, KV, 1024)
			tab.steps = 4
			if c.parts {
				tab.workers = 8 // 4 runs of rows at batch 16, 8 at batch 32
			}
			e := &Engine{Cfg: model.Config{NLayers: L, NHeads: KV, NKVHeads: KV}, batch: B, tab: tab}
			var evicted func(row, slot int, pos int32)
			if touch {
				evicted = func(row, slot int, _ int32) { e.touchSlot(row, int32(slot)) }
			}
			pool := rolePool(rows) // role vectors drawn ahead, so that the timing leaves the draws out
			listed := 0
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				pos := int32(i)
				if touch && i%T == 0 {
					if i > 0 { // what commitDelta builds on the host at a chunk's end
						e.devCap = tab.Cap()
						idx, _, _ := e.deltaList()
						listed += len(idx)
					}
					e.beginTouch()
				}
				if err := placeGrowing(tab, pos); err != nil {
					b.Fatal(err)
				}
				if touch {
					for row, s := range tab.Slots() {
						e.touchSlot(row, s)
					}
				}
				if err := tab.End(pos, pool[i%len(pool)], nil, evicted); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*rows), "ns/row-token")
			b.ReportMetric(float64(tab.Cap()), "slots")
			if touch {
				b.ReportMetric(float64(listed)/float64(b.N/T*rows), "list/row-chunk")
			}
		})
	}
}

// BenchmarkPrefillHostGeneric times the host's share of an H2O or TOVA prefill per token, as Prefill runs it: the
// chunk's attention row of each (layer, KV head) mapped onto the slots (chunkAttn), then kvcache.Cache's Begin and
// End through genericTable, evictions reported — pg19 shape at batch 1 (8 layers, 8 KV heads), budget 256, 512
// slots, chunks of 64. On the H200 machine an H2O prefill of 64k tokens took 20.3 s (~0.31 ms a token,
// results/latency_random/device-2026-11-29b.log). Measured here (2 cores, 2026-11-29, 3 runs): H2O 94–95 µs a token,
// TOVA 92–96; chunkAttn and H2O's victim search are ~30% each. Running the layers on goroutines (per token: the
// attention mapping, Cache.End, the search for freed slots) was tried and made it slower here, 125–158 µs with one
// goroutine per layer or per core: a goroutine's hand-off costs more than a layer's ~10 µs of work.
//
//	go test -run '^$' -bench PrefillHostGeneric -benchtime 3000x ./engine
func BenchmarkPrefillHostGeneric(b *testing.B) {
	const L, B, KV, T, budget = 8, 1, 8, 64, 256
	for _, ev := range []kvcache.Evictor{policy.H2O{Budget: budget, Recent: 32}, policy.TOVA{Budget: budget}} {
		b.Run(fmt.Sprintf("%T", ev), func(b *testing.B) {
			s, err := newSpec(nil, ev)
			if err != nil {
				b.Fatal(err)
			}
			tab, err := newTable(s, ev, L, B, KV, kvcache.Bucket(ev.Capacity(1<<16)), 0, 1)
			if err != nil {
				b.Fatal(err)
			}
			e := &Engine{Cfg: model.Config{NLayers: L, NHeads: KV, NKVHeads: KV}, batch: B, tab: tab, spec: s}
			cp := tab.Cap()
			r := rand.New(rand.NewPCG(1, 3))
			src := make([]float32, L*B*KV*T*(cp+T))
			for i := range src {
				src[i] = r.Float32()
			}
			dst := make([][]float32, L)
			evicted := 0
			onEvict := func(int, int, int32) { evicted++ }
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				pos := int32(i)
				if err := tab.Place(pos); err != nil {
					b.Fatal(err)
				}
				at := e.chunkAttn(dst, src, i%T, T, cp, pos-int32(i%T))
				if err := tab.End(pos, nil, at, onEvict); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1e3, "µs/token")
			if b.N > budget && evicted == 0 {
				b.Fatal("nothing evicted")
			}
		})
	}
}

// rolePool returns 97 role vectors of rows decisions at pg19 λ = 5e-7's rates (Global 0.045, Local 0.05, Window
// 0.905), drawn with a fixed seed.
func rolePool(rows int) [][]uint8 {
	r := rand.New(rand.NewPCG(1, 2))
	pool := make([][]uint8, 97)
	for k := range pool {
		pool[k] = make([]uint8, rows)
		for j := range pool[k] {
			switch x := r.Float64(); {
			case x < 0.045:
				pool[k][j] = uint8(kvcache.Global)
			case x < 0.095:
				pool[k][j] = uint8(kvcache.Local)
			default:
				pool[k][j] = uint8(kvcache.Window)
			}
		}
	}
	return pool
}

// BenchmarkDecodeHostTable splits the host table's work per decoding step as Engine.step does it — 8 layers,
// batch 32, 8 KV heads (2,048 rows, the 8B-shaped latency runs), NAtS roles at pg19 λ = 5e-7's rates, the
// evictions reported as the engine queues them: Place and Expire run during the graph call ("overlapped"), End
// after it, on the step's critical path ("serial"). Here (2 cores, 2026-11-29, 3 runs): overlapped 103–112 µs a
// step, serial 40–43 µs (before the engine placed during the call: Place and End 93–98, Expire 48–50).
//
//	go test -run '^$' -bench DecodeHostTable -benchtime 20000x ./engine
func BenchmarkDecodeHostTable(b *testing.B) {
	const L, B, KV, W = 8, 32, 8, 16
	rows := L * B * KV
	tab := newFastTable(spec{kind: kindNAtS, window: W, chunk: 1, needs: kvcache.Roles}, L, B, KV, 1024)
	tab.steps = 4
	pool := rolePool(rows)
	var queued []int32
	evict := func(row, slot int, _ int32) { queued = append(queued, int32(row), int32(slot)) }
	var serial, overlapped time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		pos := int32(i)
		queued = queued[:0]
		t0 := time.Now()
		if err := placeGrowing(tab, pos); err != nil {
			b.Fatal(err)
		}
		tab.Expire(pos, evict)
		t1 := time.Now()
		if err := tab.End(pos, pool[i%len(pool)], nil, evict); err != nil {
			b.Fatal(err)
		}
		overlapped += t1.Sub(t0)
		serial += time.Since(t1)
	}
	n := float64(b.N)
	b.ReportMetric(float64(serial.Microseconds())/n, "µs-serial/step")
	b.ReportMetric(float64(overlapped.Microseconds())/n, "µs-overlapped/step")
	b.ReportMetric(float64(tab.Cap()), "slots")
}
