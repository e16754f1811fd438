package pg19

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/parquet-go/parquet-go"
)

// writeRelease builds a release-layout folder from books (metadata.csv lists them all).
func writeRelease(t testing.TB, dir string, books []Book) {
	t.Helper()
	for _, s := range Splits {
		if err := os.MkdirAll(filepath.Join(dir, s), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, MetadataFile), writeMetadata(books), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, b := range books {
		if err := os.WriteFile(filepath.Join(dir, b.Split, b.ID+".txt"), []byte(b.Text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func wantErr(t *testing.T, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one containing %q", parts)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Fatalf("error %q does not contain %q", err, p)
		}
	}
}

func TestReadReleaseSample(t *testing.T) {
	counts := map[string]int{}
	var all []string
	for _, s := range Splits {
		books, err := ReadRelease(sampleDir, s)
		if err != nil {
			t.Fatal(err)
		}
		counts[s] = len(books)
		for i, b := range books {
			if b.Split != s || b.Title == "" || b.PublicationDate == 0 || b.Text == "" || b.URL != "http://www.gutenberg.org/ebooks/"+b.ID {
				t.Errorf("%s book %d: incomplete %+v", s, i, Book{ID: b.ID, Title: b.Title, PublicationDate: b.PublicationDate, URL: b.URL, Split: b.Split})
			}
			if i > 0 && CompareIDs(books[i-1].ID, b.ID) >= 0 {
				t.Errorf("%s: ids not in numeric order: %s then %s", s, books[i-1].ID, b.ID)
			}
			all = append(all, b.ID)
		}
	}
	if counts[SplitTrain] < 4 || counts[SplitValidation] < 1 || counts[SplitTest] < 2 {
		t.Fatalf("sample splits %v, want at least 4/1/2 books", counts)
	}
	meta, err := ReadMetadata(filepath.Join(sampleDir, MetadataFile))
	if err != nil {
		t.Fatal(err)
	}
	if len(meta) != len(all) {
		t.Fatalf("metadata.csv has %d rows, split folders %d books", len(meta), len(all))
	}
}

func TestCompareIDs(t *testing.T) {
	ids := []string{"b", "10", "9", "a", "100", "09"}
	slices.SortFunc(ids, CompareIDs)
	if want := []string{"09", "9", "10", "100", "a", "b"}; !slices.Equal(ids, want) {
		t.Fatalf("sorted %v, want %v", ids, want)
	}
}

func TestReadReleaseEdgeCases(t *testing.T) {
	dir := t.TempDir()
	books := []Book{
		{ID: "10", Title: "Ten", PublicationDate: 1900, URL: "http://www.gutenberg.org/ebooks/10", Split: "train", Text: "ten"},
		{ID: "9", Title: "Nine", PublicationDate: 1899, URL: "http://www.gutenberg.org/ebooks/9", Split: "train", Text: "nine"},
		{ID: "11", Title: "Eleven", PublicationDate: 1901, URL: "http://www.gutenberg.org/ebooks/11", Split: "test", Text: "eleven"},
	}
	writeRelease(t, dir, books)
	// A file metadata.csv does not list is read with an empty title; non-.txt files are ignored.
	os.WriteFile(filepath.Join(dir, "train", "5.txt"), []byte("five"), 0o644)
	os.WriteFile(filepath.Join(dir, "train", "notes.md"), []byte("x"), 0o644)
	got, err := ReadRelease(dir, "train")
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, b := range got {
		ids = append(ids, b.ID)
	}
	if !slices.Equal(ids, []string{"5", "9", "10"}) {
		t.Fatalf("ids %v", ids)
	}
	if got[0].Title != "" || got[0].Text != "five" || got[1].Title != "Nine" || got[1].PublicationDate != 1899 {
		t.Fatalf("books %+v", got)
	}

	// A metadata book with no file in any split: error naming the file.
	os.Remove(filepath.Join(dir, "test", "11.txt"))
	_, err = ReadRelease(dir, "train")
	wantErr(t, err, "11.txt", "missing", MetadataFile)
	os.WriteFile(filepath.Join(dir, "test", "11.txt"), []byte("eleven"), 0o644)

	// The same book in two splits.
	os.WriteFile(filepath.Join(dir, "validation", "9.txt"), []byte("nine"), 0o644)
	_, err = ReadRelease(dir, "test")
	wantErr(t, err, "two splits", filepath.Join(dir, "validation", "9.txt"))
	os.Remove(filepath.Join(dir, "validation", "9.txt"))

	// Missing split folder, missing dataset folder, bad split name.
	os.RemoveAll(filepath.Join(dir, "validation"))
	_, err = ReadRelease(dir, "validation")
	wantErr(t, err, filepath.Join(dir, "validation"), "does not exist")
	_, err = ReadRelease(filepath.Join(dir, "nope"), "train")
	wantErr(t, err, filepath.Join(dir, "nope"), "does not exist")
	_, err = ReadRelease(dir, "../x")
	wantErr(t, err, "invalid split")
	// With a split folder absent, a missing book cannot be told from a book of that split: no error.
	if _, err := ReadRelease(dir, "train"); err != nil {
		t.Fatal(err)
	}
}

func TestParseMetadata(t *testing.T) {
	in := "book_id,short_book_title,publication_date,url\n" +
		"1342,Pride and Prejudice by Jane Austen,1813,http://www.gutenberg.org/ebooks/1342\n" +
		"\n" +
		"7,A title, with a comma,,http://www.gutenberg.org/ebooks/7\n" +
		"8,\"Quoted, title\",1900,http://www.gutenberg.org/ebooks/8\n"
	got, err := ParseMetadata(strings.NewReader(in), "m.csv")
	if err != nil {
		t.Fatal(err)
	}
	want := []Book{
		{ID: "1342", Title: "Pride and Prejudice by Jane Austen", PublicationDate: 1813, URL: "http://www.gutenberg.org/ebooks/1342"},
		{ID: "7", Title: "A title, with a comma", URL: "http://www.gutenberg.org/ebooks/7"},
		{ID: "8", Title: "Quoted, title", PublicationDate: 1900, URL: "http://www.gutenberg.org/ebooks/8"},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	for _, c := range []struct{ in, err string }{
		{"1,a,b\n", "m.csv:1: 3 fields"},
		{"1,a,19x,u\n", "m.csv:1: publication_date \"19x\""},
		{"1,a,1,u\n1,b,2,v\n", "m.csv:2: duplicate book id 1 (first on line 1)"},
		{"../1,a,1,u\n", "m.csv:1: book id \"../1\""},
		{",a,1,u\n", "empty book id"},
	} {
		_, err := ParseMetadata(strings.NewReader(c.in), "m.csv")
		wantErr(t, err, c.err)
	}
	// The real sample round-trips through writeMetadata.
	meta, err := ReadMetadata(filepath.Join(sampleDir, MetadataFile))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(filepath.Join(sampleDir, MetadataFile))
	if !bytes.Equal(writeMetadata(meta), raw) {
		t.Fatal("metadata.csv does not round-trip")
	}
}

// FuzzReadMetadata: arbitrary CSV never panics, in ParseMetadata or in ReadRelease.
func FuzzReadMetadata(f *testing.F) {
	raw, _ := os.ReadFile(filepath.Join(sampleDir, MetadataFile))
	f.Add(raw)
	f.Add([]byte("1,a,1,u\n"))
	f.Add([]byte("1,\"a\nb\",1,u\n"))
	f.Add([]byte("\"\n,,,,,\n1,a,,\n"))
	f.Add([]byte("../../etc/passwd,a,1,u\n"))
	f.Add([]byte("\xff\xfe,\x00,99999999999999999999,\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		books, err := ParseMetadata(bytes.NewReader(data), "fuzz.csv")
		if err == nil {
			for _, b := range books {
				if checkID(b.ID) != nil {
					t.Fatalf("accepted bad id %q", b.ID)
				}
			}
		}
		dir := t.TempDir()
		os.MkdirAll(filepath.Join(dir, "train"), 0o755)
		os.WriteFile(filepath.Join(dir, "train", "1.txt"), []byte("x"), 0o644)
		os.WriteFile(filepath.Join(dir, MetadataFile), data, 0o644)
		got, err := ReadRelease(dir, "train")
		if err == nil && (len(got) != 1 || got[0].ID != "1") {
			t.Fatalf("ReadRelease = %+v", got)
		}
	})
}

func TestParquetMatchesRelease(t *testing.T) {
	pq := t.TempDir()
	want := map[string][]Book{}
	for _, s := range Splits {
		books, err := ReadRelease(sampleDir, s)
		if err != nil {
			t.Fatal(err)
		}
		want[s] = books
		if err := WriteParquet(pq, s, books); err != nil {
			t.Fatal(err)
		}
	}
	if l, err := DetectLayout(pq); err != nil || l != LayoutParquet {
		t.Fatalf("DetectLayout(parquet) = %q, %v", l, err)
	}
	if l, err := DetectLayout(sampleDir); err != nil || l != LayoutRelease {
		t.Fatalf("DetectLayout(release) = %q, %v", l, err)
	}
	src, err := Open(pq)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(src.Splits(), Splits) {
		t.Fatalf("parquet splits %v", src.Splits())
	}
	for _, s := range Splits {
		got, err := src.Read(s)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want[s]) {
			t.Fatalf("%s: %d books from Parquet, %d from the release", s, len(got), len(want[s]))
		}
		for i := range got {
			if got[i] != want[s][i] {
				t.Fatalf("%s book %d differs: parquet id %s title %q, release id %s title %q", s, i, got[i].ID, got[i].Title, want[s][i].ID, want[s][i].Title)
			}
		}
	}
	// The text column carries no whole-book statistics.
	f, _ := os.Open(filepath.Join(pq, "data", "test-00000-of-00001.parquet"))
	defer f.Close()
	st, _ := f.Stat()
	pf, err := parquet.OpenFile(f, st.Size())
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := pf.Schema().Lookup(colText)
	for _, rg := range pf.Metadata().RowGroups {
		s := rg.Columns[leaf.ColumnIndex].MetaData.Statistics
		if len(s.MinValue)+len(s.MaxValue)+len(s.Min)+len(s.Max) > 0 {
			t.Fatalf("text column has min/max statistics of %d bytes", len(s.MinValue)+len(s.MaxValue))
		}
	}
	if st.Size() > 2*1024*1024 {
		t.Errorf("test split Parquet is %d bytes; statistics or compression off?", st.Size())
	}
}

// hfRow mimics other producers: required columns and an int64 date, files directly in the folder.
type hfRow struct {
	Text            string `parquet:"text"`
	URL             string `parquet:"url"`
	ShortBookTitle  string `parquet:"short_book_title"`
	PublicationDate int64  `parquet:"publication_date"`
	Extra           string `parquet:"__index_level_0__"`
}

func TestReadParquetVariants(t *testing.T) {
	dir := t.TempDir()
	rows := []hfRow{
		{Text: "b", URL: "https://www.gutenberg.org/ebooks/20/", ShortBookTitle: "B", PublicationDate: 1900},
		{Text: "a", URL: "http://www.gutenberg.org/files/3/3-0.txt", ShortBookTitle: "A", PublicationDate: 1800},
	}
	if err := parquet.WriteFile(filepath.Join(dir, "test-00000-of-00002.parquet"), rows[:1]); err != nil {
		t.Fatal(err)
	}
	if err := parquet.WriteFile(filepath.Join(dir, "test-00001-of-00002.parquet"), rows[1:]); err != nil {
		t.Fatal(err)
	}
	got, err := ReadParquet(dir, "test")
	if err != nil {
		t.Fatal(err)
	}
	want := []Book{ // dataset order, not id order
		{ID: "20", Title: "B", PublicationDate: 1900, URL: rows[0].URL, Split: "test", Text: "b"},
		{ID: "3", Title: "A", PublicationDate: 1800, URL: rows[1].URL, Split: "test", Text: "a"},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("got %+v", got)
	}
	_, err = ReadParquet(dir, "train")
	wantErr(t, err, "no train-*.parquet", dir)
	_, err = ReadParquet(filepath.Join(dir, "missing"), "train")
	wantErr(t, err, filepath.Join(dir, "missing"), "does not exist")

	// Duplicate ids and a missing column are errors naming the file.
	parquet.WriteFile(filepath.Join(dir, "validation-0.parquet"), []hfRow{rows[0], rows[0]})
	_, err = ReadParquet(dir, "validation")
	wantErr(t, err, "duplicate book id 20", "validation-0.parquet")
	type noText struct {
		URL string `parquet:"url"`
	}
	parquet.WriteFile(filepath.Join(dir, "train-0.parquet"), []noText{{URL: "x/1"}})
	_, err = ReadParquet(dir, "train")
	wantErr(t, err, "train-0.parquet", `no column "short_book_title"`)
	os.WriteFile(filepath.Join(dir, "train-0.parquet"), []byte("PAR1 not really"), 0o644)
	_, err = ReadParquet(dir, "train")
	wantErr(t, err, "train-0.parquet")
}

func TestBookIDFromURL(t *testing.T) {
	for url, want := range map[string]string{
		"http://www.gutenberg.org/ebooks/1342":                "1342",
		"https://www.gutenberg.org/ebooks/1342/":              "1342",
		"http://www.gutenberg.org/ebooks/1342.txt":            "1342",
		"http://www.gutenberg.org/ebooks/1342.txt.utf-8":      "1342",
		"http://www.gutenberg.org/files/1342/1342-0.txt":      "1342",
		"http://www.gutenberg.org/cache/epub/1342/pg1342.txt": "1342",
		"http://www.gutenberg.org/ebooks/1342?x=1#top":        "1342",
		" 1342 ": "1342",
	} {
		got, err := BookIDFromURL(url)
		if err != nil || got != want {
			t.Errorf("BookIDFromURL(%q) = %q, %v; want %q", url, got, err, want)
		}
	}
	for _, bad := range []string{"", "/", "http://", "http://x/..", "http://x/a b"} {
		if id, err := BookIDFromURL(bad); err == nil {
			t.Errorf("BookIDFromURL(%q) = %q, want an error", bad, id)
		}
	}
}

func TestDetectLayoutErrors(t *testing.T) {
	dir := t.TempDir()
	_, err := DetectLayout(dir)
	wantErr(t, err, "no PG-19 data", dir)
	_, err = Open(filepath.Join(dir, "absent"))
	wantErr(t, err, filepath.Join(dir, "absent"), "does not exist")
	os.WriteFile(filepath.Join(dir, "file"), nil, 0o644)
	_, err = Open(filepath.Join(dir, "file"))
	wantErr(t, err, "not a folder")
}
