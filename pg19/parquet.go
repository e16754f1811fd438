package pg19

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/parquet-go/parquet-go"
)

// Column names of the Hugging Face PG-19 Parquet layout (e.g. emozilla/pg19, deepmind/pg19 refs/convert).
const (
	colTitle = "short_book_title"
	colDate  = "publication_date"
	colURL   = "url"
	colText  = "text"
)

// ParquetFiles lists the Parquet files of one split of a Hugging Face layout, sorted by name:
// dir/data/{split}-*.parquet, dir/data/{split}.parquet and dir/data/{split}/*.parquet, or the same patterns
// directly in dir when dir/data has none. It returns an empty list (no error) when there are none.
func ParquetFiles(dir, split string) ([]string, error) {
	if err := checkSplitName(split); err != nil {
		return nil, err
	}
	for _, base := range []string{filepath.Join(dir, "data"), dir} {
		var files []string
		for _, pat := range []string{split + "-*.parquet", split + ".parquet", filepath.Join(split, "*.parquet")} {
			m, err := filepath.Glob(filepath.Join(globEscape(base), pat))
			if err != nil {
				return nil, fmt.Errorf("pg19: listing %s: %w", base, err)
			}
			files = append(files, m...)
		}
		if len(files) > 0 {
			slices.Sort(files)
			return slices.Compact(files), nil
		}
	}
	return nil, nil
}

// globEscape escapes the glob metacharacters of a literal path.
func globEscape(p string) string {
	var b strings.Builder
	for _, r := range p {
		if strings.ContainsRune(`*?[\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// ReadParquet reads one split of the Hugging Face PG-19 Parquet layout (see ParquetFiles for the file
// names) with columns short_book_title (string), publication_date (int32; int64 and decimal strings are
// accepted too), url (string) and text (string); columns may be required or optional (null reads as the
// zero value), other columns are ignored. The book id is the tail of the url (BookIDFromURL).
//
// Books keep the dataset order (files by name, rows in file order), which is the order the reference
// implementation tokenises Hugging Face data in; a split with no Parquet file is an error naming the
// folder, and so is a duplicate id.
func ReadParquet(dir, split string) ([]Book, error) {
	if err := checkDir(dir); err != nil {
		return nil, err
	}
	files, err := ParquetFiles(dir, split)
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("pg19: split %q: no %s-*.parquet in %s or %s", split, split, filepath.Join(dir, "data"), dir)
	}
	var books []Book
	seen := map[string]string{}
	for _, f := range files {
		bs, err := readParquetFile(f, split, true)
		if err != nil {
			return nil, err
		}
		for _, b := range bs {
			if prev, dup := seen[b.ID]; dup {
				return nil, fmt.Errorf("pg19: duplicate book id %s (url %s) in %s, first seen in %s", b.ID, b.URL, f, prev)
			}
			seen[b.ID] = f
		}
		books = append(books, bs...)
	}
	return books, nil
}

// parquetRows returns the number of rows of a Parquet file, reading only its footer.
func parquetRows(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("pg19: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("pg19: %w", err)
	}
	pf, err := parquet.OpenFile(f, st.Size(), parquet.SkipPageIndex(true), parquet.SkipBloomFilters(true))
	if err != nil {
		return 0, fmt.Errorf("pg19: %s: %w", path, err)
	}
	return pf.NumRows(), nil
}

// readParquetFile reads the books of one Parquet file, with their text when withText.
func readParquetFile(path, split string, withText bool) (books []Book, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("pg19: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("pg19: %w", err)
	}
	defer func() {
		// parquet-go may panic on some malformed files; report them as errors naming the file.
		if r := recover(); r != nil {
			books, err = nil, fmt.Errorf("pg19: %s: malformed Parquet file: %v", path, r)
		}
	}()
	pf, err := parquet.OpenFile(f, st.Size(), parquet.SkipPageIndex(true), parquet.SkipBloomFilters(true))
	if err != nil {
		return nil, fmt.Errorf("pg19: %s: %w", path, err)
	}
	schema := pf.Schema()
	want := []string{colTitle, colDate, colURL}
	if withText {
		want = append(want, colText)
	}
	cols := map[string]int{}
	for _, name := range want {
		leaf, ok := schema.Lookup(name)
		if !ok {
			return nil, fmt.Errorf("pg19: %s: no column %q (columns: %s)", path, name, columnNames(schema))
		}
		if leaf.MaxRepetitionLevel > 0 {
			return nil, fmt.Errorf("pg19: %s: column %q is repeated, want one value per row", path, name)
		}
		cols[name] = leaf.ColumnIndex
	}
	row := 0
	for gi, rg := range pf.RowGroups() {
		n := int(rg.NumRows())
		chunks := rg.ColumnChunks()
		part := make([]Book, n)
		for i := range part {
			part[i].Split = split
		}
		for _, name := range want {
			i := 0
			err := readColumn(chunks[cols[name]], n, func(v parquet.Value) error {
				b := &part[i]
				i++
				switch name {
				case colTitle:
					b.Title = valueString(v)
				case colURL:
					b.URL = valueString(v)
				case colText:
					b.Text = valueString(v)
				case colDate:
					d, err := valueInt(v)
					if err != nil {
						return fmt.Errorf("row %d: %w", row+i-1, err)
					}
					b.PublicationDate = d
				}
				return nil
			})
			if err != nil {
				return nil, fmt.Errorf("pg19: %s: row group %d, column %q: %w", path, gi, name, err)
			}
		}
		for i := range part {
			if part[i].ID, err = BookIDFromURL(part[i].URL); err != nil {
				return nil, fmt.Errorf("pg19: %s: row %d: %w", path, row+i, err)
			}
		}
		books = append(books, part...)
		row += n
	}
	return books, nil
}

// readColumn calls fn on each of the n values of a flat column chunk, in row order. Values passed to fn
// may alias page buffers: fn must copy what it keeps.
func readColumn(cc parquet.ColumnChunk, n int, fn func(parquet.Value) error) error {
	pages := cc.Pages()
	defer pages.Close()
	buf := make([]parquet.Value, 64)
	got := 0
	for {
		p, err := pages.ReadPage()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		vr := p.Values()
		for {
			k, err := vr.ReadValues(buf)
			if got+k > n {
				return fmt.Errorf("more values than the %d rows of the row group", n)
			}
			for _, v := range buf[:k] {
				if err := fn(v); err != nil {
					return err
				}
			}
			got += k
			if err == io.EOF {
				break
			}
			if err != nil {
				return err
			}
		}
	}
	if got != n {
		return fmt.Errorf("%d values for %d rows", got, n)
	}
	return nil
}

func columnNames(s *parquet.Schema) string {
	var names []string
	for _, c := range s.Columns() {
		names = append(names, strings.Join(c, "."))
	}
	return strings.Join(names, ", ")
}

func valueString(v parquet.Value) string {
	if v.IsNull() {
		return ""
	}
	if v.Kind() == parquet.ByteArray || v.Kind() == parquet.FixedLenByteArray {
		return string(v.ByteArray())
	}
	return v.String()
}

func valueInt(v parquet.Value) (int, error) {
	if v.IsNull() {
		return 0, nil
	}
	switch v.Kind() {
	case parquet.Int32:
		return int(v.Int32()), nil
	case parquet.Int64:
		return int(v.Int64()), nil
	case parquet.ByteArray, parquet.FixedLenByteArray:
		s := strings.TrimSpace(string(v.ByteArray()))
		if s == "" {
			return 0, nil
		}
		n, err := strconv.Atoi(s)
		if err != nil {
			return 0, fmt.Errorf("%q is not an integer", s)
		}
		return n, nil
	}
	return 0, fmt.Errorf("unsupported type %v", v.Kind())
}

var (
	pgFileID = regexp.MustCompile(`^(?:pg)?([0-9]+)(?:-[0-9]+)?$`)
)

// BookIDFromURL returns the book id of a PG-19 url: its last path segment, e.g.
// "http://www.gutenberg.org/ebooks/1342" -> "1342". A query or fragment and trailing slashes are ignored,
// and file-style tails are reduced to the id: "1342.txt", "1342-0.txt", "1342-8.txt", "pg1342.txt",
// "1342.txt.utf-8" -> "1342". An empty url, or a tail that is not a valid id (see ParseMetadata), is an
// error.
func BookIDFromURL(url string) (string, error) {
	u := strings.TrimSpace(url)
	if i := strings.IndexAny(u, "?#"); i >= 0 {
		u = u[:i]
	}
	u = strings.TrimRight(u, "/")
	if i := strings.LastIndexByte(u, '/'); i >= 0 {
		u = u[i+1:]
	}
	if u == "" || strings.HasSuffix(u, ":") {
		return "", fmt.Errorf("url %q has no book id", url)
	}
	lower := strings.ToLower(u)
	for _, ext := range []string{".utf-8", ".utf8", ".txt", ".html", ".htm", ".zip"} {
		if strings.HasSuffix(lower, ext) {
			u, lower = u[:len(u)-len(ext)], lower[:len(lower)-len(ext)]
		}
	}
	if m := pgFileID.FindStringSubmatch(lower); m != nil {
		u = m[1]
	}
	if err := checkID(u); err != nil {
		return "", fmt.Errorf("url %q: %w", url, err)
	}
	return u, nil
}

// parquetRow is the row written by WriteParquet: the Hugging Face PG-19 schema, with nullable columns as
// pyarrow writes them.
type parquetRow struct {
	ShortBookTitle  string `parquet:"short_book_title,optional"`
	PublicationDate int32  `parquet:"publication_date,optional"`
	URL             string `parquet:"url,optional"`
	Text            string `parquet:"text,optional"`
}

// WriteParquet writes books as dir/data/{split}-00000-of-00001.parquet in the Hugging Face PG-19 layout
// (snappy-compressed; no statistics or page bounds for the text column, which would otherwise hold
// whole-book min/max values). Each book's URL must yield its ID (BookIDFromURL); an empty URL is written
// as http://www.gutenberg.org/ebooks/<id>. The file is written atomically (temporary file + rename).
func WriteParquet(dir, split string, books []Book) error {
	if err := checkSplitName(split); err != nil {
		return err
	}
	rows := make([]parquetRow, len(books))
	for i, b := range books {
		url := b.URL
		if url == "" {
			url = "http://www.gutenberg.org/ebooks/" + b.ID
		}
		if id, err := BookIDFromURL(url); err != nil || id != b.ID {
			return fmt.Errorf("pg19: WriteParquet: book %q: url %q does not end in its id", b.ID, url)
		}
		if b.PublicationDate < -1<<31 || b.PublicationDate > 1<<31-1 {
			return fmt.Errorf("pg19: WriteParquet: book %s: publication_date %d overflows int32", b.ID, b.PublicationDate)
		}
		rows[i] = parquetRow{ShortBookTitle: b.Title, PublicationDate: int32(b.PublicationDate), URL: url, Text: b.Text}
	}
	out := filepath.Join(dir, "data", split+"-00000-of-00001.parquet")
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return fmt.Errorf("pg19: %w", err)
	}
	return atomicWrite(out, func(w io.Writer) error {
		pw := parquet.NewGenericWriter[parquetRow](w,
			parquet.Compression(&parquet.Snappy),
			parquet.SkipPageBounds(colText),
			parquet.SkipPageStatistics(colText),
			parquet.MaxRowsPerRowGroup(256),
			parquet.KeyValueMetadata("natsbench.pg19", "written by natsbench/pg19.WriteParquet"))
		if _, err := pw.Write(rows); err != nil {
			return err
		}
		return pw.Close()
	})
}

// atomicWrite writes path through a temporary file in the same folder, synced and renamed into place.
func atomicWrite(path string, write func(io.Writer) error) (err error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("pg19: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := write(tmp); err != nil {
		return fmt.Errorf("pg19: writing %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("pg19: writing %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("pg19: writing %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("pg19: %w", err)
	}
	return nil
}

var errNoData = errors.New("no PG-19 data")
