package llama

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// sharedTokenizers finds the project's shared tokenizer files (NATSBENCH_SHARED_DATA, else /work/shared/data);
// tests that need them skip when they are absent.
func sharedTokenizers(t *testing.T) string {
	for _, d := range []string{os.Getenv("NATSBENCH_SHARED_DATA"), "/work/shared/data", "../../shared/data"} {
		if d == "" {
			continue
		}
		p := filepath.Join(d, "tokenizers")
		if _, err := os.Stat(filepath.Join(p, "llama3-hf", "tokenizer.json")); err == nil {
			return p
		}
	}
	t.Skip("shared tokenizers not found (set NATSBENCH_SHARED_DATA to the folder holding tokenizers/)")
	return ""
}

// tokenizerRefs are ids made by HF tokenizers 0.23.2 (and sentencepiece 0.2.2) with testdata/gen/make_refs.py.
type tokenizerRefs struct {
	Texts          []string `json:"texts"`
	Llama3         [][]int  `json:"llama3"`
	Llama3Decoded  []string `json:"llama3_decoded"`
	Mistral        [][]int  `json:"mistral"`
	MistralDecoded []string `json:"mistral_decoded"`
	MistralSP      [][]int  `json:"mistral_sp"`
}

func loadRefs(t *testing.T) tokenizerRefs {
	data, err := os.ReadFile("testdata/tokenizer_refs.json")
	if err != nil {
		t.Fatal(err)
	}
	var r tokenizerRefs
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestLlama3Tokenizer(t *testing.T) {
	dir := sharedTokenizers(t)
	start := time.Now()
	tk, err := LoadTokenizer(filepath.Join(dir, "llama3-hf", "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("loaded in %v", time.Since(start))
	bl := tk.(*ByteLevelBPE)
	if got := tk.Encode("Hello world"); !equalInts(got, []int{9906, 1917}) {
		t.Errorf("Hello world = %v, want [9906 1917]", got)
	}
	// Ids checked by hand against the vocabulary of tokenizer.json.
	for s, id := range map[string]int{"Hello": 9906, "Ġworld": 1917, "ĠHello": 22691, "<|begin_of_text|>": 128000,
		"<|end_of_text|>": 128001, "<|eot_id|>": 128009, "Ċ": 198, "Ġ": 220} {
		if got := bl.TokenID(s); got != id {
			t.Errorf("TokenID(%q) = %d, want %d", s, got, id)
		}
	}
	if tk.BOS() != 128000 || tk.VocabSize() != 128256 {
		t.Errorf("BOS %d EOS %d vocab %d", tk.BOS(), tk.EOS(), tk.VocabSize())
	}
	refs := loadRefs(t)
	for i, text := range refs.Texts {
		if got := tk.Encode(text); !equalInts(got, refs.Llama3[i]) {
			t.Errorf("Encode(%.40q):\n got %v\nwant %v (HF tokenizers)", text, got, refs.Llama3[i])
		}
		if got := tk.Decode(refs.Llama3[i]); got != refs.Llama3Decoded[i] {
			t.Errorf("Decode(%v) = %.60q, HF %.60q", refs.Llama3[i], got, refs.Llama3Decoded[i])
		}
	}
	roundTrip(t, tk, false)
}

func TestMistralSentencePiece(t *testing.T) {
	dir := sharedTokenizers(t)
	path := filepath.Join(dir, "mistral-7b-v0.3", "tokenizer.model.v3")
	tk, err := LoadTokenizer(path)
	if err != nil {
		t.Fatal(err)
	}
	if tk.BOS() != 1 || tk.EOS() != 2 || tk.VocabSize() != 32768 {
		t.Errorf("BOS %d EOS %d vocab %d", tk.BOS(), tk.EOS(), tk.VocabSize())
	}
	refs := loadRefs(t)
	for i, text := range refs.Texts {
		if got := tk.Encode(text); !equalInts(got, refs.Mistral[i]) {
			t.Errorf("Encode(%.40q):\n got %v\nwant %v (HF tokenizers, tokenizer.json)", text, got, refs.Mistral[i])
		}
		if got := tk.Decode(refs.Mistral[i]); got != refs.MistralDecoded[i] {
			t.Errorf("Decode(%v) = %.60q, HF %.60q", refs.Mistral[i], got, refs.MistralDecoded[i])
		}
	}
	roundTrip(t, tk, true)
	cfg, err := LoadConfig(filepath.Join(dir, "mistral-7b-v0.3", "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := LoadTokenizerFor(path, cfg); err != nil {
		t.Error(err)
	}
	cfg.VocabSize = 32000 // Mistral v0.1's size: the v0.3 tokenizer does not fit
	if _, err := LoadTokenizerFor(path, cfg); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("tokenizer larger than the model: err = %v", err)
	}
}

func TestLlama2CTokenizer(t *testing.T) {
	tk, err := LoadLlama2CTokenizer(aidreamsTok)
	if err != nil {
		t.Fatal(err)
	}
	if tk.VocabSize() != 512 || tk.MaxTokenLength != 10 {
		t.Fatalf("vocab %d, max_token_length %d", tk.VocabSize(), tk.MaxTokenLength)
	}
	// run.c's encode of "Once upon a time": dummy prefix, then merges by score (checked by hand against the
	// pieces: " " "O" "n" "ce" " " "u" "p" "on" " a" " t" "im" "e"; " O", " u" and "ime" are not pieces).
	got := tk.Encode("Once upon a time")
	var pieces []string
	for _, id := range got {
		pieces = append(pieces, tk.Pieces[id])
	}
	if strings.Join(pieces, "|") != " |O|n|ce| |u|p|on| a| t|im|e" {
		t.Errorf("pieces %q", pieces)
	}
	// Bytes without a piece fall back to <0xXX> (ids 3..258).
	if got := tk.Encode("€"); !equalInts(got, []int{tk.bpe.lookup[" "], 3 + 0xE2, 3 + 0x82, 3 + 0xAC}) {
		t.Errorf("Encode(€) = %v", got)
	}
	if got := tk.Decode([]int{1, tk.bpe.lookup[" a"], 3 + 0xE2, 3 + 0x82, 3 + 0xAC}); got != "a€" {
		t.Errorf("Decode = %q", got)
	}
	roundTrip(t, tk, true)
}

// roundTrip checks Decode(Encode(text)) == text on real text and on every reference text (except, with a dummy
// prefix, texts that start with a space), and reports the speed.
func roundTrip(t *testing.T, tk Tokenizer, dummyPrefix bool) {
	t.Helper()
	excerpt, err := os.ReadFile("testdata/gen/pg19_12215_excerpt.txt")
	if err != nil {
		t.Fatal(err)
	}
	texts := append(loadRefs(t).Texts, string(excerpt))
	for _, text := range texts {
		if dummyPrefix && strings.HasPrefix(text, " ") {
			continue // SentencePiece-style tokenizers fold a leading space into the dummy prefix
		}
		if got := tk.Decode(tk.Encode(text)); got != text {
			t.Errorf("round trip of %.50q gives %.50q", text, got)
		}
	}
	big := strings.Repeat(string(excerpt), 40)
	start := time.Now()
	ids := tk.Encode(big)
	el := time.Since(start)
	t.Logf("encode: %d bytes → %d tokens in %v (%.2f MB/s)", len(big), len(ids), el, float64(len(big))/el.Seconds()/1e6)
	if !utf8.ValidString(tk.Decode(ids)) {
		t.Error("decode of valid text is not valid UTF-8")
	}
}

// TestTokenizerVocabMismatch runs without /work/shared: the bundled 512-id llama2.c tokenizer does not fit a
// model of vocab_size 256 (an error naming the file) and fits one of 512.
func TestTokenizerVocabMismatch(t *testing.T) {
	path := filepath.Join("testdata", "tok512.bin")
	if _, err := LoadTokenizerFor(path, Config{VocabSize: 512}); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadTokenizerFor(path, Config{VocabSize: 256}); err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "vocab_size") {
		t.Fatalf("tokenizer larger than the model: err = %v", err)
	}
}
