package policy_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"natsbench/kvcache"
	"natsbench/policy"
)

// Grids in these tests are written ollama style, one string per query row i, one character per key
// j: '.' = attends (bias 0), 'x' = masked (bias −∞). See policy.MaskRows.

// parseRoles reads one letter per role: G(lobal), L(ocal), W(indow), P(ending).
func parseRoles(t testing.TB, s string) []kvcache.Role {
	t.Helper()
	rs := make([]kvcache.Role, len(s))
	for i, c := range s {
		switch c {
		case 'G':
			rs[i] = kvcache.Global
		case 'L':
			rs[i] = kvcache.Local
		case 'W':
			rs[i] = kvcache.Window
		case 'P':
			rs[i] = kvcache.Pending
		default:
			t.Fatalf("bad role letter %q in %q", c, s)
		}
	}
	return rs
}

func checkGrid(t *testing.T, got [][]bool, want []string) {
	t.Helper()
	g := policy.MaskRows(got)
	if !slices.Equal(g, want) {
		t.Fatalf("mask mismatch\n got:\n  %s\nwant:\n  %s", strings.Join(g, "\n  "), strings.Join(want, "\n  "))
	}
}

// step is what the fake device sees during the attention of one query.
type step struct {
	i       int // query position
	l, b, h int
	s       kvcache.Slots // slot table after placement, before eviction
	occ     int           // Cache.Occupancy for (l, b, h)
}

// device describes the fake decode graph of a simulation. Nil functions are not called.
type device struct {
	role  func(l, b, h, i int) kvcache.Role       // role reported for query i
	attn  func(l, b, h, i int, pos int32) float32 // attention of query i to key pos
	visit func(st step)                           // called for every (l, b, h) during step i
	after func(i int, c *kvcache.Cache)           // called after End of step i
	grow  bool                                    // grow on ErrFull (else fail)
	cap0  int                                     // initial capacity
}

// simulate decodes n tokens through a Cache with ev and the fake device d.
func simulate(t *testing.T, ev kvcache.Evictor, L, B, H, n int, d device) *kvcache.Cache {
	t.Helper()
	c, err := kvcache.New(L, B, H, d.cap0, ev)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		slots, err := c.Begin()
		if errors.Is(err, kvcache.ErrFull) && d.grow {
			c.Grow(c.NextCap())
			slots, err = c.Begin()
		}
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		st := c.Stats()
		for l, layer := range c.Layers {
			for b := 0; b < B; b++ {
				for h := 0; h < H; h++ {
					r := (l*B+b)*H + h
					s := layer.View(b, h)
					if got := s.Pos[slots[r]]; got != int32(i) {
						t.Fatalf("step %d (l=%d b=%d h=%d): slot %d holds pos %d", i, l, b, h, slots[r], got)
					}
					if st.Roles != nil && d.role != nil {
						st.Roles[l][b*H+h] = uint8(d.role(l, b, h, i))
					}
					if st.Attn != nil {
						base := (b*H + h) * c.Cap()
						for k, p := range s.Pos {
							st.Attn[l][base+k] = 0
							if p >= 0 && d.attn != nil {
								st.Attn[l][base+k] = d.attn(l, b, h, i, p)
							}
						}
					}
					if d.visit != nil {
						d.visit(step{i: i, l: l, b: b, h: h, s: s, occ: int(c.Occupancy()[r])})
					}
				}
			}
		}
		if err := c.End(); err != nil {
			t.Fatal(err)
		}
		if d.after != nil {
			d.after(i, c)
		}
	}
	return c
}

// positions returns the sorted positions of the occupied slots.
func positions(s kvcache.Slots) []int32 {
	var ps []int32
	for _, p := range s.Pos {
		if p >= 0 {
			ps = append(ps, p)
		}
	}
	slices.Sort(ps)
	return ps
}

// rowPositions returns {j : m[i][j]}.
func rowPositions(m [][]bool, i int) []int32 {
	var ps []int32
	for j, v := range m[i] {
		if v {
			ps = append(ps, int32(j))
		}
	}
	return ps
}

// checkContract decodes n tokens with ev and checks, at every step i and (l, b, h), that the
// occupied positions during query i's attention are exactly {j : mask[i][j]} and that the
// occupancy equals the row sum. masks[(l·B+b)·H+h] is the mask of that (l, b, h).
func checkContract(t *testing.T, ev kvcache.Evictor, L, B, H, n int, masks [][][]bool, role func(l, b, h, i int) kvcache.Role) {
	t.Helper()
	simulate(t, ev, L, B, H, n, device{
		role: role,
		attn: func(l, b, h, i int, pos int32) float32 { return 1 / float32(i+1) },
		grow: true,
		visit: func(st step) {
			m := masks[(st.l*B+st.b)*H+st.h]
			want, got := rowPositions(m, st.i), positions(st.s)
			if !slices.Equal(got, want) || st.occ != len(want) || policy.RowSum(m, st.i) != st.occ {
				t.Fatalf("%T%+v step %d (l=%d b=%d h=%d): valid positions %v (occupancy %d), mask row %v\nmask:\n  %s",
					ev, ev, st.i, st.l, st.b, st.h, got, st.occ, want, strings.Join(policy.MaskRows(m), "\n  "))
			}
		},
	})
}

func TestMaskRows(t *testing.T) {
	got := policy.MaskRows([][]bool{{true, false}, {false, true}})
	if want := []string{".x", "x."}; !slices.Equal(got, want) {
		t.Fatalf("MaskRows = %q, want %q", got, want)
	}
	if fmt.Sprint(policy.RowSum(policy.FullMask(3), 2)) != "3" {
		t.Fatal("RowSum of full row 2 != 3")
	}
}
