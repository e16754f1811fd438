package pg19

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

// Known GPT-2 ids (tiktoken gpt2 encode_ordinary / the original GPT-2 encoder).
var gpt2Golden = []struct {
	text string
	ids  []uint16
}{
	{"The quick brown fox jumps over the lazy dog.", []uint16{464, 2068, 7586, 21831, 18045, 625, 262, 16931, 3290, 13}},
	{" hello world", []uint16{23748, 995}},
	{"hello world", []uint16{31373, 995}},
	{"Hello, world!", []uint16{15496, 11, 995, 0}},
	// encode_ordinary: the special token's text is ordinary text, never EOT.
	{"<|endoftext|>", []uint16{27, 91, 437, 1659, 5239, 91, 29}},
	{"\n\n", []uint16{628}},
	{"", nil},
}

func TestTokenizerKnownIDs(t *testing.T) {
	tk := NewTokenizer()
	for _, g := range gpt2Golden {
		got, err := tk.Encode(g.text)
		if err != nil {
			t.Fatalf("Encode(%q): %v", g.text, err)
		}
		if !slices.Equal(got, g.ids) {
			t.Errorf("Encode(%q) = %v, want %v", g.text, got, g.ids)
		}
		back, err := tk.Decode(got)
		if err != nil || back != g.text {
			t.Errorf("Decode(Encode(%q)) = %q, %v", g.text, back, err)
		}
	}
}

func TestTokenizerEOT(t *testing.T) {
	tk := NewTokenizer()
	got, err := tk.EncodeBook("Hello, world!")
	if err != nil {
		t.Fatal(err)
	}
	if want := []uint16{15496, 11, 995, 0, EOT}; !slices.Equal(got, want) {
		t.Fatalf("EncodeBook = %v, want %v", got, want)
	}
	got, _ = tk.EncodeBook("a<|endoftext|>b")
	if slices.Index(got, EOT) != len(got)-1 {
		t.Fatalf("EOT must appear only at the end of a book: %v", got)
	}
	if s, _ := tk.Decode([]uint16{15496, EOT, 995}); s != "Hello<|endoftext|> world" {
		t.Fatalf("Decode with EOT = %q", s)
	}
	if TokenizerName != "gpt2" || VocabSize != 50257 || ModelVocabSize != 50304 || ModelVocabSize%64 != 0 {
		t.Fatal("constants")
	}
}

func TestTokenizerInvalidUTF8(t *testing.T) {
	tk := NewTokenizer()
	a, err := tk.Encode("ab\xffcd")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := tk.Encode("ab\uFFFDcd")
	if !slices.Equal(a, b) {
		t.Fatalf("invalid UTF-8 should encode like U+FFFD: %v vs %v", a, b)
	}
}

func TestTokenizerConcurrent(t *testing.T) {
	tk := NewTokenizer()
	text := sampleText(t)[:200000]
	want, _ := tk.Encode(text)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			got, err := tk.Encode(text)
			if err != nil || !slices.Equal(got, want) {
				t.Errorf("concurrent Encode differs")
			}
		})
	}
	wg.Wait()
}

// sampleText returns the concatenated text of the sample's test split.
func sampleText(tb testing.TB) string {
	tb.Helper()
	files, _ := filepath.Glob(filepath.Join(sampleDir, "test", "*.txt"))
	var sb strings.Builder
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			tb.Fatal(err)
		}
		sb.Write(b)
	}
	if sb.Len() == 0 {
		tb.Fatalf("no sample text in %s", sampleDir)
	}
	return sb.String()
}

const sampleDir = "../testdata/pg19"

// BenchmarkTokenize measures GPT-2 encoding speed (MB/s) over the sample's test split.
func BenchmarkTokenize(b *testing.B) {
	tk := NewTokenizer()
	text := sampleText(b)
	b.SetBytes(int64(len(text)))
	b.ResetTimer()
	for b.Loop() {
		if _, err := tk.Encode(text); err != nil {
			b.Fatal(err)
		}
	}
}
