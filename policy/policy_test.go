package policy_test

import (
	"strings"
	"testing"

	"natsbench/kvcache"
	"natsbench/policy"
)

// TestCapacityBound: with capacity exactly Capacity(n) and no growth, decoding n tokens never
// overflows and the occupancy during step i never exceeds Capacity(i+1).
func TestCapacityBound(t *testing.T) {
	const L, B, H, n = 2, 2, 2, 50
	evs := []kvcache.Evictor{
		policy.Full{},
		policy.StreamingLLM{Sinks: 4, Budget: 10},
		policy.H2O{Budget: 10, Recent: 3},
		policy.H2O{Budget: 1, Recent: 1},
		policy.TOVA{Budget: 7},
		policy.NAtS{Window: 4},
		policy.NAtS{Window: 4, Chunk: 2},
	}
	for _, ev := range evs {
		simulate(t, ev, L, B, H, n, device{
			cap0: ev.Capacity(n),
			role: func(l, b, h, i int) kvcache.Role { return kvcache.Role((i*7 + l + b + h) % 3) },
			attn: func(l, b, h, i int, pos int32) float32 { return float32((int(pos)*31+i*17+h)%13) / 13 },
			visit: func(st step) {
				if c := ev.Capacity(st.i + 1); st.occ > c {
					t.Fatalf("%T%+v step %d: occupancy %d > Capacity(%d) = %d", ev, ev, st.i, st.occ, st.i+1, c)
				}
			},
		})
	}
}

func TestValidate(t *testing.T) {
	type validator interface{ Validate() error }
	cases := []struct {
		p    validator
		want string // substring of the error; "" = valid
	}{
		{policy.Full{}, ""},
		{policy.StreamingLLM{Sinks: 4, Budget: 64}, ""},
		{policy.StreamingLLM{Sinks: 0, Budget: 1}, ""},
		{policy.StreamingLLM{Sinks: 0, Budget: 0}, "Budget"},
		{policy.StreamingLLM{Sinks: -1, Budget: 4}, "Sinks"},
		{policy.StreamingLLM{Sinks: 4, Budget: 4}, "Sinks (4) must be < Budget (4)"},
		{policy.H2O{Budget: 128, Recent: 64}, ""},
		{policy.H2O{Budget: 4, Recent: 4}, ""},
		{policy.H2O{Budget: 0, Recent: 0}, "Budget"},
		{policy.H2O{Budget: 4, Recent: 0}, "Recent"},
		{policy.H2O{Budget: 4, Recent: 5}, "Recent (5) must be ≤ Budget (4)"},
		{policy.TOVA{Budget: 1}, ""},
		{policy.TOVA{Budget: -3}, "Budget"},
		{policy.NAtS{Window: 64}, ""},
		{policy.NAtS{Window: 64, Chunk: 16}, ""},
		{policy.NAtS{Window: 0}, "Window"},
		{policy.NAtS{Window: 4, Chunk: -1}, "Chunk"},
		{policy.NAtS{Window: 6, Chunk: 4}, "Window (6) must be a multiple of Chunk (4)"},
	}
	for _, tc := range cases {
		err := tc.p.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%T%+v: unexpected error %v", tc.p, tc.p, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%T%+v: error %v, want one containing %q", tc.p, tc.p, err, tc.want)
		}
	}
	// kvcache.New validates the evictor.
	if _, err := kvcache.New(1, 1, 1, 16, policy.H2O{Budget: 0, Recent: 1}); err == nil || !strings.Contains(err.Error(), "Budget") {
		t.Errorf("kvcache.New with invalid H2O: error %v", err)
	}
}

func TestNeedsAndCapacity(t *testing.T) {
	cases := []struct {
		ev    kvcache.Evictor
		needs kvcache.Stat
		cap10 int
	}{
		{policy.Full{}, 0, 10},
		{policy.StreamingLLM{Sinks: 1, Budget: 4}, 0, 4},
		{policy.H2O{Budget: 4, Recent: 2}, kvcache.AccAttn, 4},
		{policy.TOVA{Budget: 16}, kvcache.LastAttn, 10},
		{policy.NAtS{Window: 2}, kvcache.Roles, 10},
	}
	for _, tc := range cases {
		if got := tc.ev.Needs(); got != tc.needs {
			t.Errorf("%T.Needs() = %v, want %v", tc.ev, got, tc.needs)
		}
		if got := tc.ev.Capacity(10); got != tc.cap10 {
			t.Errorf("%T.Capacity(10) = %d, want %d", tc.ev, got, tc.cap10)
		}
	}
}
