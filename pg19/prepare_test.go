package pg19

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// prepared caches one Prepare of the whole sample per test binary.
var preparedDir string

func prepareSample(t *testing.T) string {
	t.Helper()
	if preparedDir != "" {
		return preparedDir
	}
	dst, err := os.MkdirTemp("", "pg19-prepared-*")
	if err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	if err := Prepare(PrepareOptions{Src: sampleDir, Dst: dst, Workers: 2, Progress: &log}); err != nil {
		t.Fatal(err)
	}
	t.Logf("prepare log:\n%s", log.String())
	// A log that is not a terminal gets whole lines (no carriage returns) and one summary line per split.
	if strings.Contains(log.String(), "\r") {
		t.Errorf("carriage return in a non-terminal prepare log: %q", log.String())
	}
	for _, split := range []string{"train", "validation", "test"} {
		re := regexp.MustCompile(`(?m)^pg19: ` + split + ` \d+ books .* \d+ tokens .*$`)
		if n := len(re.FindAllString(log.String(), -1)); n != 1 {
			t.Errorf("%d summary lines for %s in the prepare log, want 1: %q", n, split, log.String())
		}
	}
	preparedDir = dst
	return dst
}

func TestMain(m *testing.M) {
	code := m.Run()
	if preparedDir != "" {
		os.RemoveAll(preparedDir)
	}
	os.Exit(code)
}

func TestPrepareSample(t *testing.T) {
	dst := prepareSample(t)
	meta, err := ReadMeta(dst)
	if err != nil {
		t.Fatal(err)
	}
	if meta.FormatVersion != MetaFormatVersion || meta.Layout != LayoutRelease || meta.Tokenizer != "gpt2" || meta.Created.IsZero() || len(meta.Splits) != 3 {
		t.Fatalf("meta %+v", meta)
	}
	tk := NewTokenizer()
	for _, split := range Splits {
		books, err := ReadRelease(sampleDir, split)
		if err != nil {
			t.Fatal(err)
		}
		sh, err := ReadShard(ShardPath(dst, split))
		if err != nil {
			t.Fatal(err)
		}
		sm := meta.Splits[split]
		if sm.Tokens != sh.Count || sm.Books != len(books) || len(sm.BookIDs) != len(books) || sm.File != split+".bin" {
			t.Fatalf("%s: meta %+v vs shard count %d, %d books", split, sm, sh.Count, len(books))
		}
		// The shard is the books' encodings, each followed by EOT, in ReadRelease order.
		var want []uint16
		for i, b := range books {
			if sm.BookIDs[i] != b.ID {
				t.Fatalf("%s: book %d is %s in meta, %s in ReadRelease", split, i, sm.BookIDs[i], b.ID)
			}
			toks, _ := tk.EncodeBook(b.Text)
			if sm.BookTokens[i] != int64(len(toks)) {
				t.Fatalf("%s: book %s: %d tokens in meta, %d encoded", split, b.ID, sm.BookTokens[i], len(toks))
			}
			want = append(want, toks...)
		}
		if !slices.Equal(sh.Tokens, want) {
			t.Fatalf("%s: shard differs from the books' encodings", split)
		}
		t.Logf("%s: %d books, %d tokens", split, len(books), sh.Count)
	}
}

func TestPrepareDeterministicAcrossWorkers(t *testing.T) {
	ref := prepareSample(t)
	dst := t.TempDir()
	// One worker, only the test split, which is enough to compare against the two-worker run.
	if err := Prepare(PrepareOptions{Src: sampleDir, Dst: dst, Splits: []string{SplitTest}, Workers: 1}); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(ShardPath(ref, SplitTest))
	b, _ := os.ReadFile(ShardPath(dst, SplitTest))
	if !bytes.Equal(a, b) {
		t.Fatal("test shard differs between 1 and 2 workers")
	}
	// Many workers on few books: still identical.
	dst7 := t.TempDir()
	if err := Prepare(PrepareOptions{Src: sampleDir, Dst: dst7, Splits: []string{SplitTest}, Workers: 7}); err != nil {
		t.Fatal(err)
	}
	c, _ := os.ReadFile(ShardPath(dst7, SplitTest))
	if !bytes.Equal(a, c) {
		t.Fatal("test shard differs between 2 and 7 workers")
	}
}

func TestPrepareIdempotent(t *testing.T) {
	src := t.TempDir()
	writeRelease(t, src, []Book{
		{ID: "1", Title: "One", PublicationDate: 1900, URL: "http://www.gutenberg.org/ebooks/1", Split: "train", Text: "Hello, world!"},
		{ID: "2", Title: "Two", PublicationDate: 1901, URL: "http://www.gutenberg.org/ebooks/2", Split: "train", Text: " hello world"},
		{ID: "3", Title: "Three", PublicationDate: 1902, URL: "http://www.gutenberg.org/ebooks/3", Split: "test", Text: "<|endoftext|>"},
	})
	dst := filepath.Join(t.TempDir(), "out")
	var log bytes.Buffer
	opts := PrepareOptions{Src: src, Dst: dst, Progress: &log}
	if err := Prepare(opts); err != nil {
		t.Fatal(err)
	}
	train, err := ReadShard(ShardPath(dst, "train"))
	if err != nil {
		t.Fatal(err)
	}
	if want := []uint16{15496, 11, 995, 0, EOT, 23748, 995, EOT}; !slices.Equal(train.Tokens, want) {
		t.Fatalf("train tokens %v, want %v", train.Tokens, want)
	}
	if _, err := os.Stat(ShardPath(dst, "validation")); err != nil {
		t.Fatal("an empty split folder still gets a (empty) shard")
	}
	meta1, _ := os.ReadFile(filepath.Join(dst, MetaFile))
	if !strings.Contains(log.String(), "pg19: train 2 books") {
		t.Fatalf("progress log %q", log.String())
	}

	// Second run: up to date, nothing rewritten.
	log.Reset()
	if err := Prepare(opts); err != nil {
		t.Fatal(err)
	}
	meta2, _ := os.ReadFile(filepath.Join(dst, MetaFile))
	if !bytes.Equal(meta1, meta2) || !strings.Contains(log.String(), "up to date") {
		t.Fatalf("second Prepare was not skipped: %q", log.String())
	}

	// A changed option, a changed source, or a corrupt shard: prepared again.
	for _, change := range []func(){
		func() { opts.MaxBooks = 1 },
		func() { os.WriteFile(filepath.Join(src, "train", "4.txt"), []byte("four"), 0o644) },
		func() {
			p := ShardPath(dst, "test")
			b, _ := os.ReadFile(p)
			b[len(b)-1] ^= 1
			os.WriteFile(p, b, 0o644)
		},
	} {
		change()
		log.Reset()
		if err := Prepare(opts); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(log.String(), "up to date") {
			t.Fatal("Prepare skipped after a change")
		}
	}
	m, err := ReadMeta(dst)
	if err != nil {
		t.Fatal(err)
	}
	if m.MaxBooks != 1 || !slices.Equal(m.Splits["train"].BookIDs, []string{"1"}) {
		t.Fatalf("MaxBooks: %+v", m.Splits["train"])
	}
	if _, err := ReadShard(ShardPath(dst, "test")); err != nil {
		t.Fatalf("corrupt shard not rebuilt: %v", err)
	}

	// Load reads prepared folders directly and prepares text folders into the cache.
	sh, err := Load(dst, "train", "", nil)
	if err != nil || sh.Count != 5 { // MaxBooks = 1: "Hello, world!" + EOT
		t.Fatalf("Load(prepared) = %v, %v", sh, err)
	}
	cache := t.TempDir()
	sh, err = Load(src, "test", cache, nil)
	if err != nil || !slices.Equal(sh.Tokens, []uint16{27, 91, 437, 1659, 5239, 91, 29, EOT}) {
		t.Fatalf("Load(text) = %v, %v", sh, err)
	}
	_, err = Load(src, "test", "", nil)
	wantErr(t, err, "no cache folder")
	_, err = Load(cache, "dev", "", nil)
	wantErr(t, err, "split \"dev\" not prepared", "[test train validation]")
	err = Prepare(PrepareOptions{Src: src, Dst: t.TempDir(), Splits: []string{"dev"}})
	wantErr(t, err, filepath.Join(src, "dev"))
}

func TestPrepareParquet(t *testing.T) {
	pq := t.TempDir()
	books, err := ReadRelease(sampleDir, SplitTest)
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteParquet(pq, SplitTest, books); err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir()
	if err := Prepare(PrepareOptions{Src: pq, Dst: dst, MaxBooks: 2}); err != nil {
		t.Fatal(err)
	}
	m, err := ReadMeta(dst)
	if err != nil {
		t.Fatal(err)
	}
	if m.Layout != LayoutParquet || len(m.Splits) != 1 || !slices.Equal(m.Splits[SplitTest].BookIDs, []string{books[0].ID, books[1].ID}) {
		t.Fatalf("meta %+v", m.Splits[SplitTest])
	}
	// Same tokens as the release-layout shard's first two books.
	ref, err := ReadShard(ShardPath(prepareSample(t), SplitTest))
	if err != nil {
		t.Fatal(err)
	}
	sh, err := ReadShard(ShardPath(dst, SplitTest))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(sh.Tokens, ref.Tokens[:sh.Count]) || ref.Tokens[sh.Count-1] != EOT {
		t.Fatal("Parquet-prepared tokens differ from the release-prepared ones")
	}
}
