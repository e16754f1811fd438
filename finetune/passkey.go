package finetune

import (
	"fmt"
	"math/rand/v2"
	"strings"
)

// natoWords is the NATO alphabet the passkeys are drawn from (as in DuoAttention's multi-passkey task).
var natoWords = []string{"alfa", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliett",
	"kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango", "uniform", "victor",
	"whiskey", "xray", "yankee", "zulu"}

var ordinals = []string{"first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth"}

// Passkey is one synthetic multi-passkey retrieval sample (NATS-SPEC.md §3.5): a haystack of book text with
// numbered passkeys inserted at given depths, a question about one of them, and its answer.
type Passkey struct {
	Context  string // haystack with the needles, ending with the question
	Answer   string // the asked passkey (the only tokens distilled)
	Asked    int    // which passkey (0-based)
	Passkeys []string
}

// NewPasskey builds a sample deterministically from (seed, index): numKeys passkeys of `words` NATO words
// inserted into haystack (whole words, at depths spread uniformly over 0.05–0.95) with the official needle and
// question wording, including its "Remeber" typo.
func NewPasskey(haystack string, numKeys, words int, seed, index uint64) (Passkey, error) {
	if numKeys < 1 || numKeys > len(ordinals) {
		return Passkey{}, fmt.Errorf("passkey: %d passkeys, want 1..%d", numKeys, len(ordinals))
	}
	hay := strings.Fields(haystack)
	if len(hay) < numKeys {
		return Passkey{}, fmt.Errorf("passkey: haystack of %d words is too short for %d passkeys", len(hay), numKeys)
	}
	r := rand.New(rand.NewPCG(seed, index))
	p := Passkey{Asked: r.IntN(numKeys)}
	depths := make([]int, numKeys)
	for k := range depths {
		lo := 0.05 + 0.9*float64(k)/float64(numKeys)
		hi := 0.05 + 0.9*float64(k+1)/float64(numKeys)
		depths[k] = int((lo + (hi-lo)*r.Float64()) * float64(len(hay)))
	}
	var sb strings.Builder
	next := 0
	for i, w := range hay {
		for next < numKeys && depths[next] == i {
			key := make([]string, words)
			for j := range key {
				key[j] = natoWords[r.IntN(len(natoWords))]
			}
			p.Passkeys = append(p.Passkeys, strings.Join(key, " "))
			fmt.Fprintf(&sb, "Remeber this sequence of words, it's the %s passkey to the vault: %s. ", ordinals[next], p.Passkeys[next])
			next++
		}
		sb.WriteString(w)
		sb.WriteByte(' ')
	}
	fmt.Fprintf(&sb, "\nBased on the content of the book, what is the %s passkey to the vault?\nPasskey: ", ordinals[p.Asked])
	p.Context = sb.String()
	p.Answer = p.Passkeys[p.Asked]
	return p, nil
}
