package policy_test

import (
	"math/rand/v2"
	"slices"
	"testing"

	"natsbench/kvcache"
	"natsbench/policy"
)

// tokenCases are hand-written token-level role sequences with their expected NAtS masks.
var tokenCases = []struct {
	name  string
	roles string
	w     int
	want  []string
}{
	{
		name:  "every role W=1",
		roles: "GLWLGWL",
		w:     1,
		want: []string{
			".xxxxxx",
			"..xxxxx",
			"...xxxx",
			"....xxx",
			"..x..xx", // W@2 out of window (4−2 > 1); Locals 1, 3 still seen by the Global at 4
			".xxx..x", // Global 4 ended Locals 1 and 3
			".xxx...",
		},
	},
	{
		name:  "every role W=2",
		roles: "GLWLGWL",
		w:     2,
		want: []string{
			".xxxxxx",
			"..xxxxx",
			"...xxxx",
			"....xxx",
			".....xx",
			".xxx..x",
			".xxx...",
		},
	},
	{
		name:  "W >= N",
		roles: "GWLWLGLW",
		w:     100,
		want: []string{
			".xxxxxxx",
			"..xxxxxx",
			"...xxxxx",
			"....xxxx",
			".....xxx",
			"......xx",
			"..x.x..x",
			"..x.x...",
		},
	},
	{
		name:  "consecutive globals",
		roles: "GGLGGLLGW",
		w:     1,
		want: []string{
			".xxxxxxxx",
			"..xxxxxxx",
			"...xxxxxx",
			"....xxxxx",
			"..x..xxxx",
			"..x...xxx",
			"..x....xx",
			"..x.....x", // the Local run 5-6 is still seen by the Global at 7
			"..x..xx..",
		},
	},
	{
		name:  "locals with no following global",
		roles: "GLWLLWL",
		w:     2,
		want: []string{
			".xxxxxx",
			"..xxxxx",
			"...xxxx",
			"....xxx",
			".....xx",
			"..x...x",
			"..x....",
		},
	},
	{
		name:  "all window W=1",
		roles: "GWWWW",
		w:     1,
		want: []string{
			".xxxx",
			"..xxx",
			"...xx",
			".x..x",
			".xx..",
		},
	},
	{
		name:  "single token",
		roles: "G",
		w:     1,
		want:  []string{"."},
	},
}

func TestNAtSMask(t *testing.T) {
	for _, tc := range tokenCases {
		t.Run(tc.name, func(t *testing.T) {
			checkGrid(t, policy.NAtSMask(parseRoles(t, tc.roles), tc.w), tc.want)
		})
	}
}

// TestNAtSDecodeMatchesMask runs every hand-written case through the cache: the valid slots at
// every step are exactly the mask row.
func TestNAtSDecodeMatchesMask(t *testing.T) {
	for _, tc := range tokenCases {
		t.Run(tc.name, func(t *testing.T) {
			rs := parseRoles(t, tc.roles)
			m := policy.NAtSMask(rs, tc.w)
			for _, chunk := range []int{0, 1} { // both spell the token level
				ev := policy.NAtS{Window: tc.w, Chunk: chunk}
				checkContract(t, ev, 1, 1, 1, len(rs), [][][]bool{m},
					func(_, _, _, i int) kvcache.Role { return rs[i] })
			}
		})
	}
}

// chunkCases are hand-written chunk-level role sequences with their expected NAtS masks.
var chunkCases = []struct {
	name    string
	roles   string // one per chunk
	n, w, c int
	want    []string
}{
	{
		name:  "C=2 W=C",
		roles: "GWLWGLL",
		n:     14, w: 2, c: 2,
		want: []string{
			".xxxxxxxxxxxxx",
			"..xxxxxxxxxxxx",
			"...xxxxxxxxxxx",
			"....xxxxxxxxxx",
			".....xxxxxxxxx",
			"......xxxxxxxx", // W chunk 2-3 visible up to 3+2
			"..xx...xxxxxxx",
			"..xx....xxxxxx",
			"..xx.....xxxxx",
			"..xx......xxxx", // L chunk 4-5 still seen by the whole G chunk 8-9; W chunk 6-7 up to 7+2
			"..xxxxxx...xxx",
			"..xxxxxx....xx",
			"..xxxxxx.....x",
			"..xxxxxx......",
		},
	},
	{
		name:  "C=2 W=C incomplete last chunk",
		roles: "GWLWGLG",
		n:     13, w: 2, c: 2,
		want: []string{
			".xxxxxxxxxxxx",
			"..xxxxxxxxxxx",
			"...xxxxxxxxxx",
			"....xxxxxxxxx",
			".....xxxxxxxx",
			"......xxxxxxx",
			"..xx...xxxxxx",
			"..xx....xxxxx",
			"..xx.....xxxx",
			"..xx......xxx",
			"..xxxxxx...xx",
			"..xxxxxx....x",
			"..xxxxxx.....",
		},
	},
	{
		name:  "C=2 W=2C",
		roles: "GWLGWL",
		n:     12, w: 4, c: 2,
		want: []string{
			".xxxxxxxxxxx",
			"..xxxxxxxxxx",
			"...xxxxxxxxx",
			"....xxxxxxxx",
			".....xxxxxxx",
			"......xxxxxx",
			".......xxxxx",
			"........xxxx",
			"..xxxx...xxx",
			"..xxxx....xx",
			"..xxxx.....x",
			"..xxxx......",
		},
	},
	{
		name:  "C=4 W=C incomplete last chunk",
		roles: "GWLGL",
		n:     18, w: 4, c: 4,
		want: []string{
			".xxxxxxxxxxxxxxxxx",
			"..xxxxxxxxxxxxxxxx",
			"...xxxxxxxxxxxxxxx",
			"....xxxxxxxxxxxxxx",
			".....xxxxxxxxxxxxx",
			"......xxxxxxxxxxxx",
			".......xxxxxxxxxxx",
			"........xxxxxxxxxx",
			".........xxxxxxxxx",
			"..........xxxxxxxx",
			"...........xxxxxxx",
			"............xxxxxx", // W chunk 4-7 visible up to 7+4
			"....xxxx.....xxxxx",
			"....xxxx......xxxx",
			"....xxxx.......xxx",
			"....xxxx........xx", // L chunk 8-11 seen by the whole G chunk 12-15
			"....xxxxxxxx.....x",
			"....xxxxxxxx......",
		},
	},
	{
		name:  "C=4 W=2C",
		roles: "GWWLG",
		n:     20, w: 8, c: 4,
		want: []string{
			".xxxxxxxxxxxxxxxxxxx",
			"..xxxxxxxxxxxxxxxxxx",
			"...xxxxxxxxxxxxxxxxx",
			"....xxxxxxxxxxxxxxxx",
			".....xxxxxxxxxxxxxxx",
			"......xxxxxxxxxxxxxx",
			".......xxxxxxxxxxxxx",
			"........xxxxxxxxxxxx",
			".........xxxxxxxxxxx",
			"..........xxxxxxxxxx",
			"...........xxxxxxxxx",
			"............xxxxxxxx",
			".............xxxxxxx",
			"..............xxxxxx",
			"...............xxxxx",
			"................xxxx", // W chunk 4-7 visible up to 7+8
			"....xxxx.........xxx",
			"....xxxx..........xx",
			"....xxxx...........x",
			"....xxxx............",
		},
	},
}

func TestNAtSChunkMask(t *testing.T) {
	for _, tc := range chunkCases {
		t.Run(tc.name, func(t *testing.T) {
			checkGrid(t, policy.NAtSChunkMask(parseRoles(t, tc.roles), tc.n, tc.w, tc.c), tc.want)
		})
	}
}

// TestNAtSChunkDecodeMatchesMask runs every chunk case through the cache. At steps that do not
// complete a chunk the fake device reports noise, which the evictor must ignore.
func TestNAtSChunkDecodeMatchesMask(t *testing.T) {
	noise := []kvcache.Role{kvcache.Global, kvcache.Local, kvcache.Window}
	for _, tc := range chunkCases {
		t.Run(tc.name, func(t *testing.T) {
			rs := parseRoles(t, tc.roles)
			m := policy.NAtSChunkMask(rs, tc.n, tc.w, tc.c)
			checkContract(t, policy.NAtS{Window: tc.w, Chunk: tc.c}, 1, 1, 1, tc.n, [][][]bool{m},
				func(_, _, _, i int) kvcache.Role {
					if i%tc.c == tc.c-1 {
						return rs[i/tc.c]
					}
					return noise[i%3]
				})
		})
	}
}

// TestNAtSChunkLastRoleIrrelevant: the role of the last (complete or incomplete) chunk does not
// change the mask.
func TestNAtSChunkLastRoleIrrelevant(t *testing.T) {
	for _, n := range []int{12, 13, 14} {
		base := policy.MaskRows(policy.NAtSChunkMask(parseRoles(t, "GLWLWLLG"[:(n+1)/2]), n, 2, 2))
		for _, last := range []kvcache.Role{kvcache.Global, kvcache.Local, kvcache.Window, kvcache.Pending} {
			rs := parseRoles(t, "GLWLWLLG"[:(n+1)/2])
			rs[len(rs)-1] = last
			if got := policy.MaskRows(policy.NAtSChunkMask(rs, n, 2, 2)); !slices.Equal(got, base) {
				t.Errorf("n=%d last=%v: mask changed\n%q\n%q", n, last, got, base)
			}
		}
	}
}

// TestNAtSChunkOneIsToken: chunks of one token give the token-level mask.
func TestNAtSChunkOneIsToken(t *testing.T) {
	for _, tc := range tokenCases {
		rs := parseRoles(t, tc.roles)
		checkGrid(t, policy.NAtSChunkMask(rs, len(rs), tc.w, 1), tc.want)
	}
}

// TestNAtSSlotGrid follows the slot table of one head step by step: placement in the lowest free
// slot, reuse of freed slots, roles written by the evictor.
func TestNAtSSlotGrid(t *testing.T) {
	const F = kvcache.Free
	rs := parseRoles(t, "GLWLGWL")
	want := []struct {
		pos   []int32 // Pos per slot after the step's eviction
		roles string  // Role per occupied slot, '-' for free
	}{
		{[]int32{0, F, F, F, F, F, F}, "G------"},
		{[]int32{0, 1, F, F, F, F, F}, "GL-----"},
		{[]int32{0, 1, 2, F, F, F, F}, "GLW----"},
		{[]int32{0, 1, F, 3, F, F, F}, "GL-L---"}, // W@2 leaves the window (2+1 ≤ 3)
		{[]int32{0, F, 4, F, F, F, F}, "G-G----"}, // 4 reuses slot 2; Global 4 drops Locals 1, 3
		{[]int32{0, 5, 4, F, F, F, F}, "GWG----"},
		{[]int32{0, F, 4, 6, F, F, F}, "G-GL---"},
	}
	c, err := kvcache.New(1, 1, 1, 7, policy.NAtS{Window: 1})
	if err != nil {
		t.Fatal(err)
	}
	for i, w := range want {
		if _, err := c.Begin(); err != nil {
			t.Fatal(err)
		}
		c.Stats().Roles[0][0] = uint8(rs[i])
		if err := c.End(); err != nil {
			t.Fatal(err)
		}
		s := c.Layers[0].View(0, 0)
		var got []byte
		for k, p := range s.Pos {
			if p < 0 {
				got = append(got, '-')
			} else {
				got = append(got, kvcache.Role(s.Role[k]).String()[0])
			}
		}
		if !slices.Equal(s.Pos, w.pos) || string(got) != w.roles {
			t.Fatalf("after step %d: slots %v roles %s, want %v %s", i, s.Pos, got, w.pos, w.roles)
		}
	}
}

// TestNAtSForcesFirstGlobal: position 0 (token level) and chunk 0 (chunk level) are kept as
// Global whatever role the device reports.
func TestNAtSForcesFirstGlobal(t *testing.T) {
	rs := parseRoles(t, "LLGLW")
	forced := parseRoles(t, "GLGLW")
	checkContract(t, policy.NAtS{Window: 1}, 1, 1, 1, len(rs), [][][]bool{policy.NAtSMask(forced, 1)},
		func(_, _, _, i int) kvcache.Role { return rs[i] })

	crs := parseRoles(t, "WGLW")
	cforced := parseRoles(t, "GGLW")
	checkContract(t, policy.NAtS{Window: 2, Chunk: 2}, 1, 1, 1, 8, [][][]bool{policy.NAtSChunkMask(cforced, 8, 2, 2)},
		func(_, _, _, i int) kvcache.Role { return crs[i/2] })
}

// randomRoles draws n roles with roles[0] = Global.
func randomRoles(r *rand.Rand, n int) []kvcache.Role {
	rs := make([]kvcache.Role, n)
	for i := 1; i < n; i++ {
		switch x := r.IntN(10); {
		case x < 2:
			rs[i] = kvcache.Global
		case x < 6:
			rs[i] = kvcache.Local
		default:
			rs[i] = kvcache.Window
		}
	}
	return rs
}

// TestNAtSContractRandom is the equivalence contract over random role sequences, token and chunk
// level, with a different sequence for every (layer, batch, head). It also checks that a Global
// key, once its role is decided, is never evicted, and that the cache grows on demand.
func TestNAtSContractRandom(t *testing.T) {
	const L, B, H = 2, 2, 2
	for seed := uint64(0); seed < 300; seed++ {
		r := rand.New(rand.NewPCG(seed, 42))
		n := 1 + r.IntN(48)
		c := []int{1, 1, 2, 3, 4}[r.IntN(5)]
		nChunks := (n + c - 1) / c
		w := c * (1 + r.IntN(nChunks+1))
		roles := make([][]kvcache.Role, L*B*H) // per chunk
		masks := make([][][]bool, L*B*H)
		for k := range roles {
			roles[k] = randomRoles(r, nChunks)
			if c == 1 {
				masks[k] = policy.NAtSMask(roles[k], w)
			} else {
				masks[k] = policy.NAtSChunkMask(roles[k], n, w, c)
			}
		}
		ev := policy.NAtS{Window: w, Chunk: c}
		role := func(l, b, h, i int) kvcache.Role {
			if i%c != c-1 {
				return kvcache.Role(r.IntN(4)) // ignored: chunk not complete
			}
			return roles[(l*B+b)*H+h][i/c]
		}
		checkContract(t, ev, L, B, H, n, masks, role)

		// Globals are never evicted.
		simulate(t, ev, L, B, H, n, device{role: role, grow: true, visit: func(st step) {
			rs := roles[(st.l*B+st.b)*H+st.h]
			got := positions(st.s)
			for j := 0; j < (st.i/c)*c; j++ {
				if rs[j/c] == kvcache.Global {
					if _, ok := slices.BinarySearch(got, int32(j)); !ok {
						t.Fatalf("seed %d: Global key %d evicted before step %d", seed, j, st.i)
					}
				}
			}
		}})
	}
}
