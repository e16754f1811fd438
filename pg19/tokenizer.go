package pg19

import (
	"fmt"

	"github.com/tiktoken-go/tokenizer"
	"github.com/tiktoken-go/tokenizer/codec"
)

// GPT-2 BPE constants (tiktoken "gpt2", the tokeniser of NATS-SPEC §2.1).
const (
	// TokenizerName is the name recorded in shard headers and meta.json.
	TokenizerName = "gpt2"
	// EOT is GPT-2's <|endoftext|> id, appended after each book.
	EOT = 50256
	// VocabSize is the number of GPT-2 token ids (50256 BPE tokens + EOT).
	VocabSize = 50257
	// ModelVocabSize is the embedding size the model uses: VocabSize padded to a multiple of 64, as in
	// nanoGPT and the reference implementation (get_vocab_size).
	ModelVocabSize = 50304
)

// Tokenizer is GPT-2's byte-level BPE with tiktoken's encode_ordinary semantics: text is split by the
// GPT-2 pre-tokeniser regex and each piece is merged by rank; special tokens are never recognised in text
// ("<|endoftext|>" in a book encodes as ordinary text, 7 tokens, never as EOT). Invalid UTF-8 is
// replaced by U+FFFD first (Python's errors="replace"). A Tokenizer is safe for concurrent use.
type Tokenizer struct {
	codec tokenizer.Codec
}

// NewTokenizer returns the GPT-2 tokeniser. It wraps tiktoken-go's embedded r50k_base vocabulary, which is
// tiktoken's gpt2 encoding: the same 50256 ranks, the same split regex and <|endoftext|> = 50256
// (tiktoken-go's Get(GPT2Enc) is not wired up in v0.10.0, so the r50k codec is used directly).
func NewTokenizer() *Tokenizer {
	c := codec.NewR50kBase()
	c.SetErrorMode(codec.ErrorModeReplace)
	return &Tokenizer{codec: c}
}

// Name returns TokenizerName.
func (t *Tokenizer) Name() string { return TokenizerName }

// Encode returns the tokens of text (encode_ordinary: no special tokens, no EOT).
func (t *Tokenizer) Encode(text string) ([]uint16, error) {
	return t.AppendEncode(nil, text)
}

// EncodeBook returns the tokens of a book followed by EOT, as the reference pipeline stores each book.
func (t *Tokenizer) EncodeBook(text string) ([]uint16, error) {
	toks, err := t.AppendEncode(nil, text)
	if err != nil {
		return nil, err
	}
	return append(toks, EOT), nil
}

// AppendEncode appends the tokens of text (encode_ordinary) to dst.
func (t *Tokenizer) AppendEncode(dst []uint16, text string) ([]uint16, error) {
	if text == "" {
		return dst, nil
	}
	ids, _, err := t.codec.Encode(text)
	if err != nil {
		return dst, fmt.Errorf("pg19: gpt2 encode: %w", err)
	}
	dst = growUint16(dst, len(ids))
	for _, id := range ids {
		if id >= VocabSize {
			return dst, fmt.Errorf("pg19: gpt2 encode: token id %d out of range", id)
		}
		dst = append(dst, uint16(id))
	}
	return dst, nil
}

// Decode returns the text of tokens (EOT decodes as "<|endoftext|>"). Byte-level tokens that split a
// UTF-8 character decode to U+FFFD.
func (t *Tokenizer) Decode(tokens []uint16) (string, error) {
	ids := make([]uint, 0, len(tokens))
	var out string
	flush := func() error {
		if len(ids) == 0 {
			return nil
		}
		s, err := t.codec.Decode(ids)
		if err != nil {
			return fmt.Errorf("pg19: gpt2 decode: %w", err)
		}
		out += s
		ids = ids[:0]
		return nil
	}
	for _, tok := range tokens {
		if tok == EOT {
			if err := flush(); err != nil {
				return "", err
			}
			out += "<|endoftext|>"
			continue
		}
		ids = append(ids, uint(tok))
	}
	if err := flush(); err != nil {
		return "", err
	}
	return out, nil
}

func growUint16(s []uint16, n int) []uint16 {
	if cap(s)-len(s) >= n {
		return s
	}
	t := make([]uint16, len(s), len(s)+n)
	copy(t, s)
	return t
}
