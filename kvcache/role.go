package kvcache

import (
	"fmt"
	"strings"
)

// Role is the NAtS token role of a key for one KV head (NATS-SPEC §1.1, one-hot order of the code).
//
// With W the sliding-window length, a key j is visible to query i ≥ j when:
//   - [Global]: always (kept for the rest of the sequence);
//   - [Local]: no Global token lies in positions j+1..i−1, i.e. until and including the next
//     Global token, which still sees j;
//   - [Window]: i − j ≤ W (W+1 queries including j itself).
//
// [Pending] marks a slot whose role is not decided yet: a fresh token before its role is known, or a
// token of the current, incomplete NAtS chunk. Pending slots are kept. Any value other than Local and
// Window is treated as Global by the NAtS evictor and the reference masks.
type Role uint8

const (
	// Global keys are visible to every later query.
	Global Role = 0
	// Local keys are visible until the next Global token (inclusive).
	Local Role = 1
	// Window keys are visible to the W queries that follow them.
	Window Role = 2
	// Pending marks a kept slot whose role is not decided yet.
	Pending Role = 3
)

// String returns "Global", "Local", "Window", "Pending" or "Role(n)".
func (r Role) String() string {
	switch r {
	case Global:
		return "Global"
	case Local:
		return "Local"
	case Window:
		return "Window"
	case Pending:
		return "Pending"
	}
	return fmt.Sprintf("Role(%d)", uint8(r))
}

// Stat is a bit set of the per-step statistics the decode graph must emit for an [Evictor]
// (STYLE.md §B3: the graph computes only what [Evictor.Needs] asks for, so full attention never pays
// for H2O's bookkeeping).
type Stat uint8

const (
	// AccAttn asks for the current query's attention per slot, accumulated by the host into
	// [Slots.Acc] over all queries so far (H2O).
	AccAttn Stat = 1 << iota
	// LastAttn asks for the current query's attention per slot, kept by the host in [Slots.Last]
	// (TOVA).
	LastAttn
	// Roles asks for the NAtS role of the current token per KV head (NAtS).
	Roles
)

// Has reports whether every bit of q is set in s.
func (s Stat) Has(q Stat) bool { return s&q == q }

// String lists the set bits, e.g. "AccAttn|Roles"; "0" when empty.
func (s Stat) String() string {
	if s == 0 {
		return "0"
	}
	var parts []string
	for _, b := range []struct {
		bit  Stat
		name string
	}{{AccAttn, "AccAttn"}, {LastAttn, "LastAttn"}, {Roles, "Roles"}} {
		if s&b.bit != 0 {
			parts = append(parts, b.name)
			s &^= b.bit
		}
	}
	if s != 0 {
		parts = append(parts, fmt.Sprintf("Stat(%#x)", uint8(s)))
	}
	return strings.Join(parts, "|")
}
