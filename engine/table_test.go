package engine

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"natsbench/kvcache"
	"natsbench/model"
	"natsbench/policy"
)

// TestFastTableEqualsKVCache: the engine's fast table leaves, after every token, exactly the slot table of
// kvcache.Cache driven by the policy's evictor (same position in every slot, same roles), including growth; it
// never holds more than its capacity, never evicts a Global slot, and reuses freed slots (lowest first) — run
// over all rows in order, and split into runs of rows on goroutines (as large batches are), where the freed slots
// must also be reported in the same order.
func TestFastTableEqualsKVCache(t *testing.T) {
	const L, B, H, n = 2, 2, 3, 400
	freedLog := map[string][]int32{}     // per case, every freed (row, slot, position), serial run
	ratesLog := map[string][]RoleRates{} // per case, the NAtS decision rates per layer, serial run
	for _, parallel := range []bool{false, true} {
		if parallel {
			defer func(a int) { minPartRows = a }(minPartRows)
			minPartRows = 2
		}
		testFastTableEqualsKVCache(t, L, B, H, n, parallel, false, freedLog, ratesLog)
	}
	// Expire before every End, as decoding does while the device runs the step: the same table, the same slots freed.
	testFastTableEqualsKVCache(t, L, B, H, n, false, true, freedLog, ratesLog)
	testFastTableEqualsKVCache(t, L, B, H, n, true, true, freedLog, ratesLog)
}

func testFastTableEqualsKVCache(t *testing.T, L, B, H, n int, parallel, expire bool, freedLog map[string][]int32, ratesLog map[string][]RoleRates) {
	cases := []struct {
		name string
		ev   kvcache.Evictor
	}{
		{"full", policy.Full{}},
		{"streamingllm", policy.StreamingLLM{Sinks: 3, Budget: 20}},
		{"streamingllm-nosink", policy.StreamingLLM{Sinks: 0, Budget: 1}},
		{"nats-token", policy.NAtS{Window: 5}},
		{"nats-chunk", policy.NAtS{Window: 8, Chunk: 4}},
		{"nats-chunk-w", policy.NAtS{Window: 4, Chunk: 4}},
	}
	for _, tc := range cases {
		for _, gp := range []int{3, 30} { // one Global every ~gp decisions
			key := fmt.Sprintf("%s/global1in%d", tc.name, gp)
			t.Run(fmt.Sprintf("%s/parallel=%v/expire=%v", key, parallel, expire), func(t *testing.T) {
				sp, err := newSpec(nil, tc.ev)
				if tc.name[:4] == "nats" {
					sp = spec{kind: kindNAtS, window: tc.ev.(policy.NAtS).Window, chunk: max(tc.ev.(policy.NAtS).Chunk, 1), needs: kvcache.Roles}
				} else if err != nil {
					t.Fatal(err)
				}
				workers := 1
				if parallel {
					workers = 5
				}
				ft, err := newTable(sp, tc.ev, L, B, H, 16, 1, workers)
				if err != nil {
					t.Fatal(err)
				}
				ref, err := kvcache.New(L, B, H, 16, tc.ev)
				if err != nil {
					t.Fatal(err)
				}
				r := rand.New(rand.NewPCG(uint64(gp), 1))
				roles := make([]uint8, L*B*H)
				globals := map[[2]int]bool{} // (row, pos) decided Global
				evicted := 0
				var freed []int32
				for i := 0; i < n; i++ {
					pos := int32(i)
					for k := range roles {
						roles[k] = uint8(kvcache.Local) + uint8(r.IntN(2))
						if r.IntN(gp) == 0 {
							roles[k] = uint8(kvcache.Global)
						}
					}
					if err := placeGrowing(ft, pos); err != nil {
						t.Fatal(err)
					}
					_, err := ref.Begin()
					if errors.Is(err, kvcache.ErrFull) {
						ref.Grow(ref.NextCap())
						_, err = ref.Begin()
					}
					if err != nil {
						t.Fatal(err)
					}
					if st := ref.Stats(); st.Roles != nil {
						for l := range st.Roles {
							copy(st.Roles[l], roles[l*B*H:(l+1)*B*H])
						}
					}
					if err := ref.End(); err != nil {
						t.Fatal(err)
					}
					evict := func(row, slot int, p int32) {
						evicted++
						freed = append(freed, int32(row), int32(slot), p)
						if globals[[2]int{row, int(p)}] {
							t.Fatalf("step %d: Global position %d of row %d evicted", i, p, row)
						}
					}
					if expire {
						ft.Expire(pos, evict)
					}
					if err := ft.End(pos, roles, nil, evict); err != nil {
						t.Fatal(err)
					}
					if ft.Cap() != ref.Cap() {
						t.Fatalf("step %d: capacity %d, kvcache %d", i, ft.Cap(), ref.Cap())
					}
					for li, l := range ft.Layers() {
						rl := ref.Layers[li]
						if !slices.Equal(l.Pos, rl.Pos) {
							t.Fatalf("step %d layer %d: slots\n%v\nkvcache\n%v", i, li, l.Pos, rl.Pos)
						}
						for k, p := range l.Pos {
							if p >= 0 && l.Role[k] != rl.Role[k] {
								t.Fatalf("step %d layer %d slot %d (pos %d): role %v, kvcache %v", i, li, k, p, kvcache.Role(l.Role[k]), kvcache.Role(rl.Role[k]))
							}
							if p >= 0 && kvcache.Role(l.Role[k]) == kvcache.Global {
								globals[[2]int{li*B*H + k/l.Cap, int(p)}] = true
							}
						}
					}
					for row := 0; row < L*B*H; row++ {
						if o := ft.Occupied(row); o > ft.Cap() || o != len(rowPositions(ft, row)) {
							t.Fatalf("step %d row %d: occupancy %d, capacity %d", i, row, o, ft.Cap())
						}
					}
				}
				if tc.name != "full" && evicted == 0 {
					t.Fatal("nothing evicted: test is vacuous")
				}
				if tc.name != "full" && ft.Cap() >= n {
					t.Fatalf("capacity %d for %d tokens: freed slots were not reused", ft.Cap(), n)
				}
				if ft, ok := ft.(*fastTable); ok && parallel && len(ft.parts) < 2 {
					t.Fatalf("%d runs of rows: the parallel path was not taken", len(ft.parts))
				}
				var rates []RoleRates
				if ft, ok := ft.(*fastTable); ok {
					rates = ft.RoleRates()
				}
				if expire { // Expire reports its slots first: the same slots, per step in another order
					serial, ok := freedLog[key]
					if !ok {
						t.Fatal("no serial run of this case to compare the freed slots with")
					}
					if !slices.Equal(sortedTriples(freed), sortedTriples(serial)) {
						t.Fatalf("freed slots differ from the serial run's (%d and %d entries)", len(freed), len(serial))
					}
					if !slices.Equal(rates, ratesLog[key]) {
						t.Fatalf("decision rates %v, serial run %v", rates, ratesLog[key])
					}
				} else if !parallel {
					freedLog[key], ratesLog[key] = freed, rates
				} else if serial, ok := freedLog[key]; !ok {
					t.Log("no serial run of this case to compare the order of the freed slots with")
				} else if !slices.Equal(freed, serial) {
					t.Fatalf("freed slots reported in another order than by the serial run (%d and %d entries)", len(freed), len(serial))
				} else if !slices.Equal(rates, ratesLog[key]) {
					t.Fatalf("decision rates %v, serial run %v", rates, ratesLog[key])
				}
			})
		}
	}
}

// sortedTriples sorts a flat list of (row, slot, position) triples (by position, then row, then slot) and returns
// it flattened again.
func sortedTriples(f []int32) []int32 {
	tr := make([][3]int32, len(f)/3)
	for i := range tr {
		tr[i] = [3]int32{f[3*i+2], f[3*i], f[3*i+1]}
	}
	slices.SortFunc(tr, func(a, b [3]int32) int { return slices.Compare(a[:], b[:]) })
	out := make([]int32, 0, len(f))
	for _, x := range tr {
		out = append(out, x[1], x[2], x[0])
	}
	return out
}

// placeGrowing places pos, growing the table to its next capacity when a row is full (as Engine.place does, without
// the memory check).
func placeGrowing(tab table, pos int32) error {
	err := tab.Place(pos)
	if errors.Is(err, kvcache.ErrFull) {
		tab.Grow(tab.NextCap())
		err = tab.Place(pos)
	}
	return err
}

// TestPeakRow: the fullest row is named, and Engine.MaxRow turns it into (layer, batch row, KV head): NAtS with one
// row deciding Global every time (it keeps everything) and the others Window.
func TestPeakRow(t *testing.T) {
	const L, B, H = 3, 2, 4
	rows := L * B * H
	defer func(a int) { minPartRows = a }(minPartRows)
	minPartRows = 5
	// tie: a second row that keeps everything too; the first row to reach the peak is named (with 4 workers the rows
	// are in 4 runs of 6, so 7 and 13 are in different runs).
	for _, c := range []struct{ want, tie, workers int }{{0, -1, 1}, {13, -1, 1}, {rows - 1, -1, 1}, {0, -1, 4}, {13, -1, 4}, {rows - 1, -1, 4},
		{7, 13, 1}, {7, 13, 4}} {
		want := c.want
		tab := newFastTable(spec{kind: kindNAtS, window: 2, chunk: 1, needs: kvcache.Roles}, L, B, H, 16)
		tab.workers = c.workers
		roles := make([]uint8, rows)
		for r := range roles {
			roles[r] = uint8(kvcache.Window)
		}
		roles[want] = uint8(kvcache.Global)
		if c.tie >= 0 {
			roles[c.tie] = uint8(kvcache.Global)
		}
		for pos := int32(0); pos < 40; pos++ {
			if err := placeGrowing(tab, pos); err != nil {
				t.Fatal(err)
			}
			if err := tab.End(pos, roles, nil, nil); err != nil {
				t.Fatal(err)
			}
		}
		if tab.PeakOccupied() != 40 || tab.PeakRow() != want {
			t.Fatalf("peak %d slots in row %d, want 40 in row %d", tab.PeakOccupied(), tab.PeakRow(), want)
		}
		e := &Engine{Cfg: model.Config{NLayers: L, NHeads: H, NKVHeads: H}, batch: B, tab: tab}
		if l, b, h := e.MaxRow(); (l*B+b)*H+h != want || l >= L || b >= B || h >= H {
			t.Fatalf("MaxRow = layer %d, b %d, head %d, want row %d", l, b, h, want)
		}
	}
}
