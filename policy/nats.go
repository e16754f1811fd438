package policy

import (
	"fmt"

	"natsbench/kvcache"
)

// NAtS is the Neural Attention Search eviction rule (NATS-SPEC §1.8): the model assigns each token
// (or each chunk of Chunk tokens, §1.7) one [kvcache.Role] per KV head, and the cache keeps exactly
// the keys the hard mask lets the next query see ([NAtSMask], [NAtSChunkMask]).
//
// Token level (Chunk ≤ 1), after token i has attended with role r_i (position 0 is forced Global):
//   - r_i = Global: evict every Local slot of that head (Local keys live until the next Global
//     token, whose own query still saw them);
//   - evict every Window slot j with j + Window ≤ i;
//   - Global slots are never evicted.
//
// Chunk level (Chunk = C > 1, chunk c = positions cC..cC+C−1): tokens of the current chunk stay
// [kvcache.Pending] (kept) until the chunk's last token i = cC+C−1 has attended; then all of the
// chunk's slots take the role given at that step (the first chunk is forced Global); if it is
// Global every Local slot (of earlier chunks) is evicted; a Window chunk's slots are evicted after
// step cC + C − 1 + Window. Roles given at other steps are ignored. A role other than Local or
// Window is treated as Global.
//
// Occupancy during step i equals the row sum of the mask; worst case (all Global) is i+1.
type NAtS struct {
	// Window is the sliding-window length W in tokens (≥ 1; a multiple of Chunk when Chunk > 1):
	// a Window key j is visible to queries j..j+W (chunk: up to the chunk's last token + W).
	Window int `toml:"window"`
	// Chunk is the NAtS chunk size C in tokens; 0 or 1 selects the token-level variant.
	Chunk int `toml:"chunk"`
}

var _ kvcache.Evictor = NAtS{}

// Validate checks Window ≥ 1, Chunk ≥ 0 and, when Chunk > 1, Window a multiple of Chunk.
func (p NAtS) Validate() error {
	switch {
	case p.Chunk < 0:
		return fmt.Errorf("policy.NAtS: Chunk must be ≥ 0 (0 or 1: token level), got %d", p.Chunk)
	case p.Window < 1:
		return fmt.Errorf("policy.NAtS: Window must be ≥ 1, got %d", p.Window)
	case p.Chunk > 1 && p.Window%p.Chunk != 0:
		return fmt.Errorf("policy.NAtS: Window (%d) must be a multiple of Chunk (%d)", p.Window, p.Chunk)
	}
	return nil
}

// Needs returns Roles.
func (NAtS) Needs() kvcache.Stat { return kvcache.Roles }

// Capacity returns n: in the worst case every token is Global.
func (NAtS) Capacity(n int) int { return n }

// After applies the rule in the type comment for the token at pos with the given role.
func (p NAtS) After(_ int, s kvcache.Slots, pos int32, role kvcache.Role) {
	c := int32(max(p.Chunk, 1))
	w := int32(p.Window)
	complete := pos%c == c-1
	if pos < c || isGlobal(role) {
		role = kvcache.Global
	}
	evictLocal := complete && role == kvcache.Global
	for k, j := range s.Pos {
		if j < 0 {
			continue
		}
		r := kvcache.Role(s.Role[k])
		if r == kvcache.Pending {
			if !complete {
				continue
			}
			r = role
			s.Role[k] = uint8(r)
		}
		switch r {
		case kvcache.Local:
			if evictLocal {
				s.Evict(k)
			}
		case kvcache.Window:
			if (j/c)*c+c-1+w <= pos {
				s.Evict(k)
			}
		}
	}
}

// NAtSMask returns the token-level NAtS hard mask for the given roles (one per position) and window
// w, NATS-SPEC §1.1: for j ≤ i,
//
//	m[i][j] = G_j  OR  (L_j AND no Global in positions j+1..i−1)  OR  (W_j AND i − j ≤ w),
//
// and false for j > i. Roles are used as given (the NAtS evictor forces position 0 Global, so pass
// roles[0] = Global to compare with decoding); any role other than Local and Window counts as Global.
func NAtSMask(roles []kvcache.Role, w int) [][]bool {
	n := len(roles)
	m := newMask(n)
	for i := 0; i < n; i++ {
		for j := 0; j <= i; j++ {
			switch roles[j] {
			case kvcache.Local:
				vis := true
				for k := j + 1; k <= i-1; k++ {
					if isGlobal(roles[k]) {
						vis = false
					}
				}
				m[i][j] = vis
			case kvcache.Window:
				m[i][j] = i-j <= w
			default:
				m[i][j] = true
			}
		}
	}
	return m
}

// NAtSChunkMask returns the chunk-level NAtS hard mask for n tokens in chunks of c
// (chunk k = positions kc..kc+c−1), NATS-SPEC §1.7. chunkRoles[k] is chunk k's role; it needs
// ⌈n/c⌉ entries. For j ≤ i with key chunk cj = j/c and query chunk ci = i/c:
//   - ci = cj: visible (a chunk always sees its own earlier tokens);
//   - Global chunk: visible;
//   - Local chunk: visible iff i < (e+1)·c, where e is the first Global chunk after cj (the whole of
//     chunk e still sees it); visible for good if there is none;
//   - Window chunk: visible iff i ≤ cj·c + c − 1 + w.
//
// j > i is false. The role of the last chunk never matters within the sequence. Roles are used as
// given (the evictor forces chunk 0 Global); any role other than Local and Window counts as Global.
// It panics if c < 1 or chunkRoles is too short.
func NAtSChunkMask(chunkRoles []kvcache.Role, n, w, c int) [][]bool {
	if c < 1 {
		panic(fmt.Errorf("policy.NAtSChunkMask: chunk size must be ≥ 1, got %d", c))
	}
	if need := (n + c - 1) / c; len(chunkRoles) < need {
		panic(fmt.Errorf("policy.NAtSChunkMask: %d chunk roles for n=%d, c=%d, need %d", len(chunkRoles), n, c, need))
	}
	m := newMask(n)
	for i := 0; i < n; i++ {
		for j := 0; j <= i; j++ {
			ci, cj := i/c, j/c
			if ci == cj {
				m[i][j] = true
				continue
			}
			switch chunkRoles[cj] {
			case kvcache.Local:
				e := -1
				for k := cj + 1; k < len(chunkRoles); k++ {
					if isGlobal(chunkRoles[k]) {
						e = k
						break
					}
				}
				m[i][j] = e < 0 || i < (e+1)*c
			case kvcache.Window:
				m[i][j] = i <= cj*c+c-1+w
			default:
				m[i][j] = true
			}
		}
	}
	return m
}
