package llama

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"
)

// llama3Pattern is the pre-tokenizer regex of the Llama-3 tokenizer.json, implemented by hand in splitLlama3
// (Go's regexp has no lookahead).
const llama3Pattern = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`

// ByteLevelBPE is a Hugging Face byte-level BPE tokenizer (tokenizer.json of Llama 3): special tokens in the text
// are split out first (leftmost-longest), the rest is cut by the Llama-3 regex, each piece's UTF-8 bytes are
// mapped to GPT-2's printable byte alphabet and merged by merge rank (lowest first, leftmost among equals); with
// ignore_merges, a piece that is a whole vocabulary entry is taken as is.
type ByteLevelBPE struct {
	vocab        map[string]int
	idToToken    []string
	special      map[int]string // added tokens: id → content
	splitter     *specialSplitter
	pairs        map[[2]int]pairVal
	byteID       [256]int
	ignoreMerges bool
	bos, eos     int
	size         int
	mu           sync.Mutex
	cache        map[string][]int
}

// byteToRune is GPT-2's bytes_to_unicode: printable bytes map to themselves, the others to 256, 257, ...
var byteToRune, runeToByte = func() ([256]rune, map[rune]byte) {
	var b2r [256]rune
	r2b := map[rune]byte{}
	n := 0
	for b := 0; b < 256; b++ {
		if (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF) {
			b2r[b] = rune(b)
		} else {
			b2r[b] = rune(256 + n)
			n++
		}
		r2b[b2r[b]] = byte(b)
	}
	return b2r, r2b
}()

type hfTokenizerJSON struct {
	AddedTokens []struct {
		ID      int    `json:"id"`
		Content string `json:"content"`
		Special bool   `json:"special"`
	} `json:"added_tokens"`
	Normalizer   json.RawMessage `json:"normalizer"`
	PreTokenizer struct {
		Type          string `json:"type"`
		PreTokenizers []struct {
			Type    string `json:"type"`
			Pattern struct {
				Regex string `json:"Regex"`
			} `json:"pattern"`
			UseRegex bool `json:"use_regex"`
		} `json:"pretokenizers"`
	} `json:"pre_tokenizer"`
	Model struct {
		Type         string            `json:"type"`
		Vocab        map[string]int    `json:"vocab"`
		Merges       []json.RawMessage `json:"merges"`
		IgnoreMerges bool              `json:"ignore_merges"`
		ByteFallback bool              `json:"byte_fallback"`
	} `json:"model"`
}

func parseHFTokenizer(data []byte, path string) (*ByteLevelBPE, error) {
	var j hfTokenizerJSON
	if err := json.Unmarshal(data, &j); err != nil {
		return nil, fmt.Errorf("tokenizer %s: %w", path, err)
	}
	pt := j.PreTokenizer
	if j.Model.Type != "BPE" || !isNull(j.Normalizer) || pt.Type != "Sequence" || len(pt.PreTokenizers) != 2 ||
		pt.PreTokenizers[0].Type != "Split" || pt.PreTokenizers[0].Pattern.Regex != llama3Pattern ||
		pt.PreTokenizers[1].Type != "ByteLevel" || pt.PreTokenizers[1].UseRegex {
		return nil, fmt.Errorf("tokenizer %s: only the Llama-3 byte-level BPE tokenizer.json is supported "+
			"(for SentencePiece models such as Mistral or Llama 2 load tokenizer.model instead)", path)
	}
	t := &ByteLevelBPE{vocab: j.Model.Vocab, special: map[int]string{}, pairs: map[[2]int]pairVal{},
		ignoreMerges: j.Model.IgnoreMerges, cache: map[string][]int{}}
	for s, id := range t.vocab {
		if id < 0 {
			return nil, fmt.Errorf("tokenizer %s: token %q has negative id %d", path, s, id)
		}
		t.size = max(t.size, id+1)
	}
	specials := map[string]int{}
	for _, a := range j.AddedTokens {
		t.special[a.ID] = a.Content
		specials[a.Content] = a.ID
		t.size = max(t.size, a.ID+1)
	}
	t.idToToken = make([]string, t.size)
	for s, id := range t.vocab {
		t.idToToken[id] = s
	}
	for b := range t.byteID {
		id, ok := t.vocab[string(byteToRune[b])]
		if !ok {
			return nil, fmt.Errorf("tokenizer %s: byte 0x%02x (%q) has no token", path, b, string(byteToRune[b]))
		}
		t.byteID[b] = id
	}
	for rank, raw := range j.Model.Merges {
		var a, b string
		var pair []string
		if err := json.Unmarshal(raw, &pair); err == nil && len(pair) == 2 {
			a, b = pair[0], pair[1]
		} else {
			var s string
			if err := json.Unmarshal(raw, &s); err != nil {
				return nil, fmt.Errorf("tokenizer %s: merge %d: %s is neither \"a b\" nor [a, b]", path, rank, raw)
			}
			var ok bool
			if a, b, ok = strings.Cut(s, " "); !ok {
				return nil, fmt.Errorf("tokenizer %s: merge %d: %q has no space", path, rank, s)
			}
		}
		ia, okA := t.vocab[a]
		ib, okB := t.vocab[b]
		im, okM := t.vocab[a+b]
		if !okA || !okB || !okM {
			return nil, fmt.Errorf("tokenizer %s: merge %d (%q %q) uses tokens missing from the vocabulary", path, rank, a, b)
		}
		if _, dup := t.pairs[[2]int{ia, ib}]; !dup {
			t.pairs[[2]int{ia, ib}] = pairVal{id: im, score: float32(-rank)}
		}
	}
	t.splitter = newSpecialSplitter(specials)
	t.bos, t.eos = -1, -1
	bosName, eosName := "<|begin_of_text|>", "<|end_of_text|>"
	if cfg, err := os.ReadFile(filepath.Join(filepath.Dir(path), "tokenizer_config.json")); err == nil {
		var tc struct {
			BOS json.RawMessage `json:"bos_token"`
			EOS json.RawMessage `json:"eos_token"`
		}
		if json.Unmarshal(cfg, &tc) == nil {
			bosName = tokenName(tc.BOS, bosName)
			eosName = tokenName(tc.EOS, eosName)
		}
	}
	if id, ok := specials[bosName]; ok {
		t.bos = id
	}
	if id, ok := specials[eosName]; ok {
		t.eos = id
	}
	return t, nil
}

// tokenName reads a tokenizer_config.json token: a string or {"content": ...}.
func tokenName(m json.RawMessage, def string) string {
	var s string
	if json.Unmarshal(m, &s) == nil && s != "" {
		return s
	}
	var o struct {
		Content string `json:"content"`
	}
	if json.Unmarshal(m, &o) == nil && o.Content != "" {
		return o.Content
	}
	return def
}

// Encode implements Tokenizer.
func (t *ByteLevelBPE) Encode(text string) []int {
	var out []int
	for _, seg := range t.splitter.split(text) {
		if seg.id >= 0 {
			out = append(out, seg.id)
			continue
		}
		for _, piece := range splitLlama3(seg.text) {
			out = append(out, t.encodePiece(piece)...)
		}
	}
	return out
}

func (t *ByteLevelBPE) encodePiece(piece string) []int {
	t.mu.Lock()
	ids, ok := t.cache[piece]
	t.mu.Unlock()
	if ok {
		return ids
	}
	if t.ignoreMerges {
		var sb strings.Builder
		for i := 0; i < len(piece); i++ {
			sb.WriteRune(byteToRune[piece[i]])
		}
		if id, ok := t.vocab[sb.String()]; ok {
			ids = []int{id}
		}
	}
	if ids == nil {
		syms := make([]int, len(piece))
		for i := 0; i < len(piece); i++ {
			syms[i] = t.byteID[piece[i]]
		}
		ids = bpeMerge(syms, func(a, b int) (int, float64, bool) {
			p, ok := t.pairs[[2]int{a, b}]
			return p.id, float64(p.score), ok
		})
	}
	t.mu.Lock()
	if len(t.cache) > 1<<16 {
		t.cache = map[string][]int{}
	}
	t.cache[piece] = ids
	t.mu.Unlock()
	return ids
}

// Decode implements Tokenizer: byte-level tokens back to bytes, added tokens as their content. Invalid UTF-8 is
// returned as is (HF would write U+FFFD).
func (t *ByteLevelBPE) Decode(ids []int) string {
	var sb strings.Builder
	for _, id := range ids {
		if s, ok := t.special[id]; ok {
			sb.WriteString(s)
			continue
		}
		if id < 0 || id >= len(t.idToToken) {
			continue
		}
		for _, r := range t.idToToken[id] {
			if b, ok := runeToByte[r]; ok {
				sb.WriteByte(b)
			} else {
				sb.WriteRune(r)
			}
		}
	}
	return sb.String()
}

// BOS implements Tokenizer (tokenizer_config.json's bos_token, else <|begin_of_text|>).
func (t *ByteLevelBPE) BOS() int { return t.bos }

// EOS implements Tokenizer (tokenizer_config.json's eos_token, else <|end_of_text|>).
func (t *ByteLevelBPE) EOS() int { return t.eos }

// VocabSize implements Tokenizer (including added tokens).
func (t *ByteLevelBPE) VocabSize() int { return t.size }

// TokenID returns the id of a vocabulary or added token string (vocabulary strings are in the byte-level
// alphabet, e.g. "Ġworld"), or -1.
func (t *ByteLevelBPE) TokenID(s string) int {
	if id, ok := t.vocab[s]; ok {
		return id
	}
	for id, c := range t.special {
		if c == s {
			return id
		}
	}
	return -1
}

// Character classes of the Llama-3 pattern.
func isL(r rune) bool  { return unicode.IsLetter(r) }
func isN(r rune) bool  { return unicode.IsNumber(r) }
func isS(r rune) bool  { return unicode.IsSpace(r) }
func isNL(r rune) bool { return r == '\r' || r == '\n' }

// splitLlama3 cuts s into the matches of llama3Pattern (find-all, leftmost-first alternation with greedy
// quantifiers and backtracking, as the regex engine does). Every character is covered by some alternative, so the
// pieces concatenate to s. Invalid UTF-8 bytes count as "other" characters.
func splitLlama3(s string) []string {
	type ch struct {
		r    rune
		off  int
		size int
	}
	var cs []ch
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		cs = append(cs, ch{r, i, size})
		i += size
	}
	n := len(cs)
	at := func(i int) rune {
		if i < n {
			return cs[i].r
		}
		return -1
	}
	var out []string
	for i := 0; i < n; {
		j := matchLlama3(i, n, at)
		end := len(s)
		if j < n {
			end = cs[j].off
		}
		out = append(out, s[cs[i].off:end])
		i = j
	}
	return out
}

// matchLlama3 returns the end (exclusive, in characters) of the match starting at i.
func matchLlama3(i, n int, at func(int) rune) int {
	r := at(i)
	// 1. (?i:'s|'t|'re|'ve|'m|'ll|'d)
	if r == '\'' {
		for _, suf := range []string{"s", "t", "re", "ve", "m", "ll", "d"} {
			k := 0
			for _, sr := range suf {
				c := at(i + 1 + k)
				if c < 0 || !strings.EqualFold(string(c), string(sr)) {
					break
				}
				k++
			}
			if k == len(suf) {
				return i + 1 + k
			}
		}
	}
	// 2. [^\r\n\p{L}\p{N}]?\p{L}+
	if !isNL(r) && !isL(r) && !isN(r) && i+1 < n && isL(at(i+1)) {
		j := i + 1
		for j < n && isL(at(j)) {
			j++
		}
		return j
	}
	if isL(r) {
		j := i
		for j < n && isL(at(j)) {
			j++
		}
		return j
	}
	// 3. \p{N}{1,3}
	if isN(r) {
		j := i
		for j < n && j < i+3 && isN(at(j)) {
			j++
		}
		return j
	}
	// 4.  ?[^\s\p{L}\p{N}]+[\r\n]*
	punct := func(x rune) bool { return x >= 0 && !isS(x) && !isL(x) && !isN(x) }
	start := -1
	if r == ' ' && punct(at(i+1)) {
		start = i + 1
	} else if punct(r) {
		start = i
	}
	if start >= 0 {
		j := start
		for j < n && punct(at(j)) {
			j++
		}
		for j < n && isNL(at(j)) {
			j++
		}
		return j
	}
	// Whitespace from here on: the run is cs[i:w].
	w := i
	for w < n && isS(at(w)) {
		w++
	}
	// 5. \s*[\r\n]+ : up to and including the last newline of the run.
	for k := w - 1; k >= i; k-- {
		if isNL(at(k)) {
			return k + 1
		}
	}
	// 6. \s+(?!\S) : the run, less its last character when a non-space follows.
	if w == n {
		return w
	}
	if w-1 > i {
		return w - 1
	}
	// 7. \s+
	return w
}
