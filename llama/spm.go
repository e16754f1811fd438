package llama

import (
	"encoding/binary"
	"fmt"
	"math"
	"strings"
	"unicode/utf8"
)

// scoreBPE is BPE by piece score (llama2.c's encode and SentencePiece's BPE model): start from one symbol per
// character, merge the adjacent pair whose concatenation is a piece of the highest score (leftmost among equals),
// then map characters without a piece to byte tokens "<0xXX>" (or to unk).
type scoreBPE struct {
	pieces []string
	scores []float32
	lookup map[string]int     // pieces that text may be made of (and merged into)
	pairs  map[[2]int]pairVal // (left id, right id) → merged piece
	bytes  [256]int           // id of "<0xXX>", -1 if absent
	unk    int                // -1 if none
}

type pairVal struct {
	id    int
	score float32
}

func newScoreBPE(pieces []string, scores []float32, mergeable func(i int) bool, unk int) *scoreBPE {
	v := &scoreBPE{pieces: pieces, scores: scores, lookup: map[string]int{}, pairs: map[[2]int]pairVal{}, unk: unk}
	for i := range v.bytes {
		v.bytes[i] = -1
	}
	for i, p := range pieces {
		if b, ok := parseByteToken(p); ok && v.bytes[b] < 0 {
			v.bytes[b] = i
		}
		if !mergeable(i) {
			continue
		}
		if _, dup := v.lookup[p]; !dup {
			v.lookup[p] = i
		}
	}
	for p, id := range v.lookup {
		for k := 1; k < len(p); k++ {
			if !utf8.RuneStart(p[k]) {
				continue
			}
			l, okL := v.lookup[p[:k]]
			r, okR := v.lookup[p[k:]]
			if okL && okR {
				v.pairs[[2]int{l, r}] = pairVal{id: id, score: scores[id]}
			}
		}
	}
	return v
}

// encode tokenizes s (already normalized: spaces replaced as the format wants).
func (v *scoreBPE) encode(s string) []int {
	syms := make([]int, 0, len(s))
	var unknown []string // raw bytes of characters without a piece; symbol -1-k refers to unknown[k]
	for i := 0; i < len(s); {
		_, size := utf8.DecodeRuneInString(s[i:])
		ch := s[i : i+size]
		if id, ok := v.lookup[ch]; ok {
			syms = append(syms, id)
		} else {
			syms = append(syms, -1-len(unknown))
			unknown = append(unknown, ch)
		}
		i += size
	}
	syms = bpeMerge(syms, func(a, b int) (int, float64, bool) {
		p, ok := v.pairs[[2]int{a, b}]
		return p.id, float64(p.score), ok
	})
	out := make([]int, 0, len(syms))
	for _, t := range syms {
		if t >= 0 {
			out = append(out, t)
			continue
		}
		ch := unknown[-1-t]
		fallback := true
		for k := 0; k < len(ch); k++ {
			if v.bytes[ch[k]] < 0 {
				fallback = false
			}
		}
		switch {
		case fallback:
			for k := 0; k < len(ch); k++ {
				out = append(out, v.bytes[ch[k]])
			}
		case v.unk >= 0:
			out = append(out, v.unk)
		}
	}
	return out
}

// Llama2CTokenizer is the tokenizer of karpathy/llama2.c (tokenizer.bin / tok512.bin): a list of pieces with
// scores, SentencePiece pieces with "▁" already replaced by a space. Encode follows run.c's encode: a dummy
// prefix " " (when the text is not empty), one symbol per UTF-8 character or its bytes as "<0xXX>" tokens, then
// merges by best score. Ids 0, 1, 2 are <unk>, BOS, EOS.
type Llama2CTokenizer struct {
	Pieces         []string
	Scores         []float32
	MaxTokenLength int
	bpe            *scoreBPE
}

// LoadLlama2CTokenizer reads a llama2.c tokenizer file: int32 max_token_length, then per token float32 score,
// int32 length and the bytes. The number of tokens is what the file holds.
func LoadLlama2CTokenizer(path string) (*Llama2CTokenizer, error) {
	t, err := LoadTokenizer(path)
	if err != nil {
		return nil, err
	}
	lt, ok := t.(*Llama2CTokenizer)
	if !ok {
		return nil, fmt.Errorf("tokenizer %s: not a llama2.c tokenizer (.bin)", path)
	}
	return lt, nil
}

func parseLlama2CTokenizer(data []byte, path string) (*Llama2CTokenizer, error) {
	if len(data) < 4 {
		return nil, fmt.Errorf("llama2.c tokenizer %s: truncated (no max_token_length)", path)
	}
	t := &Llama2CTokenizer{MaxTokenLength: int(int32(binary.LittleEndian.Uint32(data)))}
	for off := 4; off < len(data); {
		if off+8 > len(data) {
			return nil, fmt.Errorf("llama2.c tokenizer %s: token %d: truncated header", path, len(t.Pieces))
		}
		score := math.Float32frombits(binary.LittleEndian.Uint32(data[off:]))
		n := int(int32(binary.LittleEndian.Uint32(data[off+4:])))
		off += 8
		if n < 0 || off+n > len(data) {
			return nil, fmt.Errorf("llama2.c tokenizer %s: token %d: length %d runs past the end of the file", path, len(t.Pieces), n)
		}
		t.Pieces = append(t.Pieces, string(data[off:off+n]))
		t.Scores = append(t.Scores, score)
		off += n
	}
	if len(t.Pieces) < 3 {
		return nil, fmt.Errorf("llama2.c tokenizer %s: only %d tokens", path, len(t.Pieces))
	}
	t.bpe = newScoreBPE(t.Pieces, t.Scores, func(int) bool { return true }, -1)
	return t, nil
}

// Encode implements Tokenizer (run.c's encode without BOS/EOS).
func (t *Llama2CTokenizer) Encode(text string) []int {
	if text == "" {
		return nil
	}
	// run.c looks up the dummy prefix " " as its own token before the text's characters; merging then runs over
	// the whole sequence, which is the same as encoding " "+text.
	return t.bpe.encode(" " + text)
}

// Decode implements Tokenizer as run.c's decode: "<0xXX>" pieces are raw bytes and the leading space of a piece
// that follows BOS (or starts ids) is dropped. BOS and EOS write nothing.
func (t *Llama2CTokenizer) Decode(ids []int) string {
	var sb strings.Builder
	prev := 1
	for _, id := range ids {
		if id < 0 || id >= len(t.Pieces) {
			continue
		}
		if id == 1 || id == 2 {
			prev = id
			continue
		}
		p := t.Pieces[id]
		if prev == 1 && strings.HasPrefix(p, " ") {
			p = p[1:]
		}
		if b, ok := parseByteToken(p); ok {
			sb.WriteByte(b)
		} else {
			sb.WriteString(p)
		}
		prev = id
	}
	return sb.String()
}

// BOS implements Tokenizer (1).
func (t *Llama2CTokenizer) BOS() int { return 1 }

// EOS implements Tokenizer (2).
func (t *Llama2CTokenizer) EOS() int { return 2 }

// VocabSize implements Tokenizer.
func (t *Llama2CTokenizer) VocabSize() int { return len(t.Pieces) }

// SentencePiece piece types (sentencepiece_model.proto).
const (
	spNormal      = 1
	spUnknown     = 2
	spControl     = 3
	spUserDefined = 4
	spUnused      = 5
	spByte        = 6
)

// SentencePieceTokenizer is a SentencePiece BPE model (tokenizer.model of Llama 2, tokenizer.model.v3 of Mistral
// v0.3) read from its protobuf, encoding as Hugging Face's converted tokenizer.json does: special pieces (control,
// user-defined, unknown) written in the text are their ids; in each other run of text spaces become "▁", and "▁"
// is prepended to the run at the very start of the text unless it already starts with one (Metaspace,
// prepend_scheme "first"); then BPE by piece score, with byte fallback "<0xXX>" for characters without a piece.
// Only the identity normalizer is supported (no precompiled NFKC map), as in Llama 2 and Mistral.
type SentencePieceTokenizer struct {
	Pieces         []string
	Scores         []float32
	Types          []int
	AddDummyPrefix bool
	bos, eos, unk  int
	bpe            *scoreBPE
	special        *specialSplitter
}

// protobuf wire reading (just what sentencepiece_model.proto needs).
type pbField struct {
	num    int
	wire   int
	varint uint64
	bytes  []byte
}

func pbFields(b []byte) ([]pbField, error) {
	var out []pbField
	for len(b) > 0 {
		key, n := binary.Uvarint(b)
		if n <= 0 {
			return nil, fmt.Errorf("bad field key")
		}
		b = b[n:]
		f := pbField{num: int(key >> 3), wire: int(key & 7)}
		switch f.wire {
		case 0:
			v, n := binary.Uvarint(b)
			if n <= 0 {
				return nil, fmt.Errorf("field %d: bad varint", f.num)
			}
			f.varint, b = v, b[n:]
		case 1:
			if len(b) < 8 {
				return nil, fmt.Errorf("field %d: truncated fixed64", f.num)
			}
			f.varint, b = binary.LittleEndian.Uint64(b), b[8:]
		case 2:
			l, n := binary.Uvarint(b)
			if n <= 0 || uint64(len(b)-n) < l {
				return nil, fmt.Errorf("field %d: truncated bytes", f.num)
			}
			f.bytes, b = b[n:n+int(l)], b[n+int(l):]
		case 5:
			if len(b) < 4 {
				return nil, fmt.Errorf("field %d: truncated fixed32", f.num)
			}
			f.varint, b = uint64(binary.LittleEndian.Uint32(b)), b[4:]
		default:
			return nil, fmt.Errorf("field %d: unsupported wire type %d", f.num, f.wire)
		}
		out = append(out, f)
	}
	return out, nil
}

func parseSentencePiece(data []byte, path string) (*SentencePieceTokenizer, error) {
	top, err := pbFields(data)
	if err != nil {
		return nil, fmt.Errorf("sentencepiece %s: not a model protobuf: %w", path, err)
	}
	t := &SentencePieceTokenizer{AddDummyPrefix: true, bos: -1, eos: -1, unk: -1}
	modelType, byteFallback := 1, false
	normName := ""
	var charsmap []byte
	for _, f := range top {
		switch f.num {
		case 1: // SentencePiece
			sub, err := pbFields(f.bytes)
			if err != nil {
				return nil, fmt.Errorf("sentencepiece %s: piece %d: %w", path, len(t.Pieces), err)
			}
			piece, score, typ := "", float32(0), spNormal
			for _, g := range sub {
				switch g.num {
				case 1:
					piece = string(g.bytes)
				case 2:
					score = math.Float32frombits(uint32(g.varint))
				case 3:
					typ = int(g.varint)
				}
			}
			t.Pieces, t.Scores, t.Types = append(t.Pieces, piece), append(t.Scores, score), append(t.Types, typ)
		case 2: // TrainerSpec
			sub, err := pbFields(f.bytes)
			if err != nil {
				return nil, fmt.Errorf("sentencepiece %s: trainer_spec: %w", path, err)
			}
			for _, g := range sub {
				switch g.num {
				case 3:
					modelType = int(g.varint)
				case 35:
					byteFallback = g.varint != 0
				}
			}
		case 3: // NormalizerSpec
			sub, err := pbFields(f.bytes)
			if err != nil {
				return nil, fmt.Errorf("sentencepiece %s: normalizer_spec: %w", path, err)
			}
			for _, g := range sub {
				switch g.num {
				case 1:
					normName = string(g.bytes)
				case 2:
					charsmap = g.bytes
				case 3:
					t.AddDummyPrefix = g.varint != 0
				}
			}
		}
	}
	if len(t.Pieces) == 0 {
		return nil, fmt.Errorf("sentencepiece %s: no pieces", path)
	}
	if modelType != 2 {
		return nil, fmt.Errorf("sentencepiece %s: model_type %d is not BPE (2); only BPE models are supported", path, modelType)
	}
	if len(charsmap) > 0 {
		return nil, fmt.Errorf("sentencepiece %s: normalizer %q with a precompiled charsmap is not supported (identity only)", path, normName)
	}
	specials := map[string]int{}
	for i, p := range t.Pieces {
		switch t.Types[i] {
		case spControl, spUserDefined, spUnknown:
			if _, dup := specials[p]; !dup && p != "" {
				specials[p] = i
			}
		}
		switch {
		case t.Types[i] == spUnknown && t.unk < 0:
			t.unk = i
		case p == "<s>" && t.Types[i] == spControl:
			t.bos = i
		case p == "</s>" && t.Types[i] == spControl:
			t.eos = i
		}
	}
	t.special = newSpecialSplitter(specials)
	t.bpe = newScoreBPE(t.Pieces, t.Scores, func(i int) bool {
		return t.Types[i] == spNormal || t.Types[i] == spUserDefined
	}, t.unk)
	if !byteFallback { // characters without a piece become <unk>
		for b := range t.bpe.bytes {
			t.bpe.bytes[b] = -1
		}
	}
	return t, nil
}

const metaSpace = "\u2581"

// Encode implements Tokenizer.
func (t *SentencePieceTokenizer) Encode(text string) []int {
	var out []int
	for _, seg := range t.special.split(text) {
		if seg.id >= 0 {
			out = append(out, seg.id)
			continue
		}
		s := strings.ReplaceAll(seg.text, " ", metaSpace)
		if t.AddDummyPrefix && seg.start == 0 && !strings.HasPrefix(s, metaSpace) {
			s = metaSpace + s
		}
		out = append(out, t.bpe.encode(s)...)
	}
	return out
}

// Decode implements Tokenizer as HF's decoder for these models: "▁" becomes a space, runs of byte tokens become
// their bytes, special pieces are written as their text, and one leading space of the result is dropped.
func (t *SentencePieceTokenizer) Decode(ids []int) string {
	var sb strings.Builder
	for _, id := range ids {
		if id < 0 || id >= len(t.Pieces) {
			continue
		}
		p := t.Pieces[id]
		if t.Types[id] == spByte {
			if b, ok := parseByteToken(p); ok {
				sb.WriteByte(b)
				continue
			}
		}
		sb.WriteString(strings.ReplaceAll(p, metaSpace, " "))
	}
	s := sb.String()
	if t.AddDummyPrefix {
		s = strings.TrimPrefix(s, " ")
	}
	return s
}

// BOS implements Tokenizer ("<s>").
func (t *SentencePieceTokenizer) BOS() int { return t.bos }

// EOS implements Tokenizer ("</s>").
func (t *SentencePieceTokenizer) EOS() int { return t.eos }

// VocabSize implements Tokenizer.
func (t *SentencePieceTokenizer) VocabSize() int { return len(t.Pieces) }
