package engine

import (
	"math/rand/v2"
	"testing"

	"natsbench/kvcache"
	"natsbench/model"
)

// BenchmarkPrefillHostTable times the host's share of a NAtS prefill per token: the fast table's Place and End for
// every (layer, batch row, KV head) — 8 layers, batch 16 and 8 KV heads (1,024 rows, as the 8B-shaped latency run
// at batch 16) with roles drawn at pg19 λ = 5e-7's rates — alone ("table"), and with the bookkeeping of the slots
// each chunk of 64 changes, which commitDelta sends ("table+touch"). On the H200 machine that share was 14.1 s of
// NAtS's 32.5 s prefill at batch 16 and 32k (results/latency32k/device-2026-11-29h.log): ~0.42 µs per row and token.
// Measured here (2 cores, 2026-11-29, -benchtime 20000x, 3 runs each, side by side): table 145–149 ns per row and
// token and table+touch 198–205 with the binaries of those runs (Place also zeroed H2O's and TOVA's Acc and Last;
// a mark per slot removed repeated listings); table 117–119 and table+touch 124–129 now.
//
//	go test -run '^$' -bench PrefillHostTable -benchtime 20000x ./engine
func BenchmarkPrefillHostTable(b *testing.B) {
	const L, B, KV, W, T = 8, 16, 8, 16, 64
	rows := L * B * KV
	for _, touch := range []bool{false, true} {
		name := "table"
		if touch {
			name = "table+touch"
		}
		b.Run(name, func(b *testing.B) {
			tab := newFastTable(spec{kind: kindNAtS, window: W, chunk: 1, needs: kvcache.Roles}, L, B, KV, 1024)
			tab.steps = 4
			e := &Engine{Cfg: model.Config{NLayers: L, NHeads: KV, NKVHeads: KV}, batch: B, tab: tab}
			var evicted func(row, slot int, pos int32)
			if touch {
				evicted = func(row, slot int, _ int32) { e.touchSlot(row, int32(slot)) }
			}
			r := rand.New(rand.NewPCG(1, 2))
			pool := make([][]uint8, 97) // role vectors drawn ahead, so that the timing leaves the draws out
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
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				pos := int32(i)
				if touch && i%T == 0 {
					e.beginTouch()
				}
				if err := tab.Place(pos); err != nil {
					tab.Grow(tab.NextCap())
					if err := tab.Place(pos); err != nil {
						b.Fatal(err)
					}
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
		})
	}
}
