package pg19

import (
	"slices"
	"testing"
)

func TestWindowsWorkedExample(t *testing.T) {
	stream := []uint16{0, 1, 2, 3, 4, 5, 6, 7, 8, 9} // t0..t9
	ws := Windows(len(stream), 3, 0)
	want := []Window{{Index: 0, Start: 0, Context: 3}, {Index: 1, Start: 4, Context: 3}}
	if !slices.Equal(ws, want) {
		t.Fatalf("Windows(10, 3, 0) = %+v", ws)
	}
	if in, tg := ws[0].Inputs(stream), ws[0].Targets(stream); !slices.Equal(in, []int32{0, 1, 2}) || !slices.Equal(tg, []int32{1, 2, 3}) {
		t.Fatalf("window 0: inputs %v targets %v", in, tg)
	}
	if in, tg := ws[1].Inputs(stream), ws[1].Targets(stream); !slices.Equal(in, []int32{4, 5, 6}) || !slices.Equal(tg, []int32{5, 6, 7}) {
		t.Fatalf("window 1: inputs %v targets %v", in, tg)
	}
	if ws[1].End() != 8 {
		t.Fatal("End")
	}
}

// Every scored position is scored exactly once; window starts and the remainder are never scored.
func TestWindowsCoverage(t *testing.T) {
	for _, c := range []struct{ n, ctx int }{{10, 3}, {11, 3}, {12, 3}, {1025, 1024}, {5000, 1024}, {100, 1}, {7, 7}} {
		ws := Windows(c.n, c.ctx, 0)
		size := c.ctx + 1
		if len(ws) != c.n/size {
			t.Fatalf("n=%d ctx=%d: %d windows, want %d", c.n, c.ctx, len(ws), c.n/size)
		}
		scored := make([]int, c.n)
		for k, w := range ws {
			if w.Index != k || w.Start != k*size || w.Context != c.ctx {
				t.Fatalf("window %d = %+v", k, w)
			}
			stream := make([]uint16, c.n)
			for i := range stream {
				stream[i] = uint16(i)
			}
			for _, p := range w.Targets(stream) {
				scored[p]++
			}
		}
		for p, k := range scored {
			want := 1
			if p%size == 0 || p >= len(ws)*size {
				want = 0
			}
			if k != want {
				t.Fatalf("n=%d ctx=%d: position %d scored %d times, want %d", c.n, c.ctx, p, k, want)
			}
		}
	}
	if Windows(3, 3, 0) != nil || Windows(10, 0, 0) != nil || Windows(0, 1, 0) != nil {
		t.Fatal("degenerate plans must be empty")
	}
}

func TestWindowsMaxWindows(t *testing.T) {
	all := Windows(10*1025+7, 1024, 0)
	if len(all) != 10 {
		t.Fatal(len(all))
	}
	var idx []int
	for _, w := range Windows(10*1025+7, 1024, 4) {
		idx = append(idx, w.Index)
		if w != all[w.Index] {
			t.Fatalf("subsampled window %+v differs from the full plan's", w)
		}
	}
	if !slices.Equal(idx, []int{0, 2, 5, 7}) { // floor(k*10/4)
		t.Fatalf("evenly spaced indices %v", idx)
	}
	if len(Windows(10*1025, 1024, 10)) != 10 || len(Windows(10*1025, 1024, 50)) != 10 {
		t.Fatal("maxWindows >= total keeps all")
	}
	if !slices.Equal(Windows(10*1025, 1024, 3), Windows(10*1025, 1024, 3)) {
		t.Fatal("not deterministic")
	}
}
