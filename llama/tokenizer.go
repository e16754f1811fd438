package llama

import (
	"bytes"
	"container/heap"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Tokenizer turns text into token ids and back.
type Tokenizer interface {
	// Encode returns the ids of text without BOS/EOS (prepend BOS() yourself). Special tokens written in the text
	// (e.g. "<|eot_id|>", "[INST]") are recognised as their ids, as Hugging Face tokenizers do by default.
	Encode(text string) []int
	// Decode returns the text of ids. Special tokens are written as their text (skip_special_tokens=False),
	// except where noted by the implementation.
	Decode(ids []int) string
	// BOS returns the beginning-of-sequence id (-1 if none).
	BOS() int
	// EOS returns the end-of-sequence id (-1 if none).
	EOS() int
	// VocabSize returns the number of ids (the largest id + 1).
	VocabSize() int
}

// LoadTokenizer opens a tokenizer by its file: a Hugging Face tokenizer.json with a byte-level BPE model
// (Llama 3), a SentencePiece model protobuf (tokenizer.model, tokenizer.model.v3: Llama 2, Mistral), or a
// llama2.c tokenizer .bin (tok512.bin). A folder is searched for tokenizer.json, tokenizer.model.v3,
// tokenizer.model, tokenizer.bin in that order.
func LoadTokenizer(path string) (Tokenizer, error) {
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		for _, n := range []string{"tokenizer.json", "tokenizer.model.v3", "tokenizer.model", "tokenizer.bin"} {
			if _, err := os.Stat(filepath.Join(path, n)); err == nil {
				return LoadTokenizer(filepath.Join(path, n))
			}
		}
		return nil, fmt.Errorf("tokenizer: no tokenizer.json, tokenizer.model(.v3) or tokenizer.bin in %s", path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	switch {
	case strings.HasSuffix(path, ".json"):
		return parseHFTokenizer(data, path)
	case strings.HasSuffix(path, ".bin"):
		return parseLlama2CTokenizer(data, path)
	case strings.Contains(filepath.Base(path), ".model"):
		return parseSentencePiece(data, path)
	}
	if t := bytes.TrimSpace(data); len(t) > 0 && t[0] == '{' {
		return parseHFTokenizer(data, path)
	}
	return nil, fmt.Errorf("tokenizer %s: unknown format (want tokenizer.json, a SentencePiece .model or a llama2.c .bin)", path)
}

// LoadTokenizerFor is LoadTokenizer plus a check that the tokenizer's ids fit the model: a vocabulary larger than
// vocab_size is an error naming the file. (A smaller one is fine: models pad their embeddings.)
func LoadTokenizerFor(path string, c Config) (Tokenizer, error) {
	t, err := LoadTokenizer(path)
	if err != nil {
		return nil, err
	}
	if t.VocabSize() > c.VocabSize {
		return nil, fmt.Errorf("tokenizer %s: %d ids, but the model's vocab_size is %d", path, t.VocabSize(), c.VocabSize)
	}
	return t, nil
}

// pairFunc says whether adjacent symbols a, b merge, into which id, and with which priority (higher first).
type pairFunc func(a, b int) (merged int, priority float64, ok bool)

// bpeMerge repeatedly merges the adjacent pair of highest priority, leftmost among equals (the order of
// llama2.c's encode, SentencePiece's BPE and HF's BPE with priority −rank). Symbols < 0 never merge. It runs in
// O(n log n) with a heap over a linked list.
func bpeMerge(syms []int, pair pairFunc) []int {
	n := len(syms)
	if n < 2 {
		return syms
	}
	next := make([]int, n)
	prev := make([]int, n)
	dead := make([]bool, n)
	for i := range syms {
		next[i], prev[i] = i+1, i-1
	}
	next[n-1] = -1
	h := &mergeHeap{}
	push := func(l int) {
		if l < 0 || next[l] < 0 {
			return
		}
		r := next[l]
		if syms[l] < 0 || syms[r] < 0 {
			return
		}
		if m, p, ok := pair(syms[l], syms[r]); ok {
			heap.Push(h, mergeItem{prio: p, left: l, a: syms[l], b: syms[r], merged: m})
		}
	}
	for i := 0; i < n-1; i++ {
		push(i)
	}
	for h.Len() > 0 {
		it := heap.Pop(h).(mergeItem)
		l := it.left
		r := next[l]
		if dead[l] || r < 0 || syms[l] != it.a || syms[r] != it.b {
			continue // stale: one side was merged since
		}
		syms[l] = it.merged
		dead[r] = true
		next[l] = next[r]
		if next[r] >= 0 {
			prev[next[r]] = l
		}
		if prev[l] >= 0 {
			push(prev[l])
		}
		push(l)
	}
	out := make([]int, 0, n)
	for i := 0; i >= 0; i = next[i] {
		out = append(out, syms[i])
	}
	return out
}

type mergeItem struct {
	prio         float64
	left         int
	a, b, merged int
}

type mergeHeap []mergeItem

func (h mergeHeap) Len() int { return len(h) }
func (h mergeHeap) Less(i, j int) bool {
	if h[i].prio != h[j].prio {
		return h[i].prio > h[j].prio
	}
	return h[i].left < h[j].left
}
func (h mergeHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *mergeHeap) Push(x any)   { *h = append(*h, x.(mergeItem)) }
func (h *mergeHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// specialSplitter cuts text at special-token strings, leftmost-longest (as HF's added-vocabulary matching).
type specialSplitter struct {
	ids     map[string]int
	byFirst map[byte][]string // candidates by first byte, longest first
}

func newSpecialSplitter(ids map[string]int) *specialSplitter {
	s := &specialSplitter{ids: ids, byFirst: map[byte][]string{}}
	for t := range ids {
		if t == "" {
			continue
		}
		s.byFirst[t[0]] = append(s.byFirst[t[0]], t)
	}
	for k, l := range s.byFirst {
		sortByLenDesc(l)
		s.byFirst[k] = l
	}
	return s
}

func sortByLenDesc(l []string) {
	for i := 1; i < len(l); i++ {
		for j := i; j > 0 && (len(l[j]) > len(l[j-1]) || (len(l[j]) == len(l[j-1]) && l[j] < l[j-1])); j-- {
			l[j], l[j-1] = l[j-1], l[j]
		}
	}
}

// segment is a piece of text, or a special token (id ≥ 0).
type segment struct {
	text  string
	id    int
	start int // byte offset in the original text
}

func (s *specialSplitter) split(text string) []segment {
	var out []segment
	last := 0
	for i := 0; i < len(text); i++ {
		for _, cand := range s.byFirst[text[i]] {
			if strings.HasPrefix(text[i:], cand) {
				if i > last {
					out = append(out, segment{text: text[last:i], id: -1, start: last})
				}
				out = append(out, segment{text: cand, id: s.ids[cand], start: i})
				i += len(cand) - 1
				last = i + 1
				break
			}
		}
	}
	if last < len(text) {
		out = append(out, segment{text: text[last:], id: -1, start: last})
	}
	return out
}

// parseByteToken reads "<0xAB>" and returns the byte.
func parseByteToken(s string) (byte, bool) {
	if len(s) != 6 || s[:3] != "<0x" || s[5] != '>' {
		return 0, false
	}
	hex := func(c byte) (byte, bool) {
		switch {
		case c >= '0' && c <= '9':
			return c - '0', true
		case c >= 'A' && c <= 'F':
			return c - 'A' + 10, true
		case c >= 'a' && c <= 'f':
			return c - 'a' + 10, true
		}
		return 0, false
	}
	hi, ok1 := hex(s[3])
	lo, ok2 := hex(s[4])
	return hi<<4 | lo, ok1 && ok2
}
