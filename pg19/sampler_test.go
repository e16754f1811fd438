package pg19

import (
	"slices"
	"testing"
)

func TestSamplerDeterminismAndBounds(t *testing.T) {
	const n, L, B = 1000, 16, 64
	tokens := make([]uint16, n)
	for i := range tokens {
		tokens[i] = uint16(i) // token value = stream position
	}
	s, err := NewSampler(tokens, L)
	if err != nil {
		t.Fatal(err)
	}
	in1, tg1 := s.Batch(7, 100, B)
	in2, tg2 := s.Batch(7, 100, B)
	if !slices.Equal(in1, in2) || !slices.Equal(tg1, tg2) {
		t.Fatal("same (seed, step) gave different batches")
	}
	// A fresh sampler (a resumed run) gives the same batch; another step or seed a different one.
	s2, _ := NewSampler(tokens, L)
	if in3, _ := s2.Batch(7, 100, B); !slices.Equal(in1, in3) {
		t.Fatal("resumed sampler differs")
	}
	if in4, _ := s.Batch(7, 101, B); slices.Equal(in1, in4) {
		t.Fatal("different step gave the same batch")
	}
	if in5, _ := s.Batch(8, 100, B); slices.Equal(in1, in5) {
		t.Fatal("different seed gave the same batch")
	}
	// Row-major layout, contiguous windows, targets shifted by one, starts within [0, n-L-1].
	seen := map[int]bool{}
	for step := int64(0); step < 200; step++ {
		in, tg := s.Batch(1, step, B)
		if len(in) != B*L || len(tg) != B*L {
			t.Fatalf("lengths %d %d", len(in), len(tg))
		}
		for b := 0; b < B; b++ {
			start := int(in[b*L])
			if start < 0 || start > n-L-1 {
				t.Fatalf("start %d outside [0, %d]", start, n-L-1)
			}
			seen[start] = true
			for j := 0; j < L; j++ {
				if int(in[b*L+j]) != start+j || int(tg[b*L+j]) != start+j+1 {
					t.Fatalf("row %d is not a contiguous window at %d", b, start)
				}
			}
		}
	}
	// 12800 draws over 984 starts: both ends and nearly all starts are hit.
	if !seen[0] || !seen[n-L-1] || len(seen) < n-L-10 {
		t.Fatalf("starts cover %d of %d values (0: %v, last: %v)", len(seen), n-L, seen[0], seen[n-L-1])
	}
	// Golden: the batch of (seed, step) must not change across releases (resumed runs depend on it).
	if got := s.Starts(42, 3, 4); !slices.Equal(got, goldenStarts) {
		t.Fatalf("Starts(42, 3, 4) = %v, want %v", got, goldenStarts)
	}
	// Smallest stream: exactly one window.
	one, err := NewSampler(tokens[:L+1], L)
	if err != nil {
		t.Fatal(err)
	}
	if st := one.Starts(5, 5, 3); !slices.Equal(st, []int{0, 0, 0}) {
		t.Fatalf("starts %v", st)
	}
	if _, err := NewSampler(tokens[:L], L); err == nil {
		t.Fatal("NewSampler accepted a stream shorter than seqLen+1")
	}
	if _, err := NewSampler(tokens, 0); err == nil {
		t.Fatal("NewSampler accepted seqLen 0")
	}
	if in, tg := s.Batch(1, 1, 0); in != nil || tg != nil {
		t.Fatal("batch size 0")
	}
}

var goldenStarts = []int{99, 185, 672, 13}
