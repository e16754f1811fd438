package pg19

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Standard split names of the PG-19 release (and of the Hugging Face copies).
const (
	SplitTrain      = "train"
	SplitValidation = "validation"
	SplitTest       = "test"
)

// Splits lists the standard split names in their canonical order.
var Splits = []string{SplitTrain, SplitValidation, SplitTest}

// Book is one PG-19 book as read from either layout. Release and Parquet readers of the same data yield
// equal Books.
type Book struct {
	ID              string // Project Gutenberg id, e.g. "1342" (the tail of URL)
	Title           string // short_book_title; "" for a release file that metadata.csv does not list
	PublicationDate int    // publication_date (year); 0 when unknown
	URL             string // e.g. "http://www.gutenberg.org/ebooks/1342"
	Split           string // "train", "validation" or "test"
	Text            string // the whole book, as stored (not normalised)
}

// MetadataFile is the name of the release layout's metadata table inside the dataset folder.
const MetadataFile = "metadata.csv"

// ReadMetadata reads a PG-19 metadata.csv (no header; columns book_id, short_book_title, publication_date,
// url). See ParseMetadata for the accepted syntax.
func ReadMetadata(path string) ([]Book, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("pg19: %w", err)
	}
	defer f.Close()
	return ParseMetadata(f, path)
}

// ParseMetadata parses PG-19 metadata rows from r; name is used in error messages (usually the file path).
// The returned Books have ID, Title, PublicationDate and URL set (Split and Text empty), in file order.
//
// Accepted syntax: CSV as written by the PG-19 release (no header, never quoted) and, leniently, standard
// quoted CSV; an unquoted title containing commas is rejoined (the id is the first field, the date and url
// the last two). Blank lines and a header line starting with "book_id," are skipped. An empty
// publication_date reads as 0. Errors name the file and line: fewer than 4 fields, a non-integer date, a
// book id that cannot be a file name (it must be non-empty, of letters, digits, '.', '_' or '-', and not
// start with '.'), or a duplicate id.
func ParseMetadata(r io.Reader, name string) ([]Book, error) {
	cr := csv.NewReader(bufio.NewReader(r))
	cr.FieldsPerRecord = -1
	cr.LazyQuotes = true
	cr.ReuseRecord = true
	var books []Book
	seen := map[string]int{}
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("pg19: %s: %w", name, err)
		}
		line, _ := cr.FieldPos(0)
		if len(rec) == 1 && strings.TrimSpace(rec[0]) == "" {
			continue
		}
		if len(books) == 0 && len(seen) == 0 && strings.TrimSpace(rec[0]) == "book_id" {
			continue // a header a user added
		}
		if len(rec) < 4 {
			return nil, fmt.Errorf("pg19: %s:%d: %d fields, want 4 (book_id,short_book_title,publication_date,url)", name, line, len(rec))
		}
		n := len(rec)
		b := Book{
			ID:    strings.TrimSpace(rec[0]),
			Title: strings.Join(rec[1:n-2], ","),
			URL:   strings.TrimSpace(rec[n-1]),
		}
		if err := checkID(b.ID); err != nil {
			return nil, fmt.Errorf("pg19: %s:%d: %w", name, line, err)
		}
		if d := strings.TrimSpace(rec[n-2]); d != "" {
			y, err := strconv.Atoi(d)
			if err != nil {
				return nil, fmt.Errorf("pg19: %s:%d: publication_date %q is not an integer", name, line, d)
			}
			b.PublicationDate = y
		}
		if prev, dup := seen[b.ID]; dup {
			return nil, fmt.Errorf("pg19: %s:%d: duplicate book id %s (first on line %d)", name, line, b.ID, prev)
		}
		seen[b.ID] = line
		books = append(books, b)
	}
	return books, nil
}

// checkID reports whether id can be used as a book id and file name.
func checkID(id string) error {
	if id == "" {
		return errors.New("empty book id")
	}
	if len(id) > 128 {
		return fmt.Errorf("book id %.20q... is longer than 128 bytes", id)
	}
	if id[0] == '.' {
		return fmt.Errorf("book id %q starts with '.'", id)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("book id %q has character %q (want letters, digits, '.', '_', '-')", id, c)
		}
	}
	return nil
}

// CompareIDs orders book ids numerically when both are decimal numbers (so "9" < "10"), numbers before
// other ids, and other ids lexically. It is the order of ReadRelease.
func CompareIDs(a, b string) int {
	na, aok := parseUint(a)
	nb, bok := parseUint(b)
	switch {
	case aok && bok:
		if na != nb {
			if na < nb {
				return -1
			}
			return 1
		}
		return strings.Compare(a, b) // "7" vs "007"
	case aok:
		return -1
	case bok:
		return 1
	}
	return strings.Compare(a, b)
}

func parseUint(s string) (uint64, bool) {
	if s == "" || len(s) > 19 {
		return 0, false
	}
	var n uint64
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		n = n*10 + uint64(s[i]-'0')
	}
	return n, true
}

// releaseRef is a book of the release layout whose text has not been read yet.
type releaseRef struct {
	Book        // Text empty
	Path string // the book's .txt file
	Size int64  // bytes of Path
}

// ReadRelease reads one split of the original PG-19 release layout:
//
//	dir/metadata.csv                   no header: book_id,short_book_title,publication_date,url
//	dir/{train,validation,test}/<book_id>.txt
//
// Membership of a split comes from the split folder, since metadata.csv covers all splits. A .txt file that
// metadata.csv does not list is still read (Title "", PublicationDate 0, URL ""). A book that metadata.csv
// lists but that no split folder holds is an error naming the missing file, checked when all three split
// folders exist (a download of fewer splits cannot tell a missing book from one of an absent split); so is
// a book present in two split folders. A missing metadata.csv is allowed (all titles ""). Books are sorted
// by numeric id (CompareIDs).
func ReadRelease(dir, split string) ([]Book, error) {
	refs, err := listRelease(dir, split)
	if err != nil {
		return nil, err
	}
	books := make([]Book, len(refs))
	for i, r := range refs {
		text, err := os.ReadFile(r.Path)
		if err != nil {
			return nil, fmt.Errorf("pg19: reading book %s: %w", r.ID, err)
		}
		books[i] = r.Book
		books[i].Text = string(text)
	}
	return books, nil
}

// listRelease lists the books of one split of a release layout without reading their text.
func listRelease(dir, split string) ([]releaseRef, error) {
	if err := checkDir(dir); err != nil {
		return nil, err
	}
	if err := checkSplitName(split); err != nil {
		return nil, err
	}
	splitDir := filepath.Join(dir, split)
	if fi, err := os.Stat(splitDir); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("pg19: split %q: folder %s does not exist", split, splitDir)
	}
	var meta []Book
	metaPath := filepath.Join(dir, MetadataFile)
	if _, err := os.Stat(metaPath); err == nil {
		if meta, err = ReadMetadata(metaPath); err != nil {
			return nil, err
		}
	}
	// Which split folder holds which id.
	where := map[string]string{}
	allSplits := true
	var refs []releaseRef
	for _, s := range Splits {
		ids, sizes, err := listTxt(filepath.Join(dir, s))
		if errors.Is(err, os.ErrNotExist) {
			allSplits = false
			continue
		}
		if err != nil {
			return nil, err
		}
		for i, id := range ids {
			if other, dup := where[id]; dup {
				return nil, fmt.Errorf("pg19: book %s is in two splits: %s and %s", id,
					filepath.Join(dir, other, id+".txt"), filepath.Join(dir, s, id+".txt"))
			}
			where[id] = s
			if s == split {
				refs = append(refs, releaseRef{Book: Book{ID: id, Split: s}, Path: filepath.Join(dir, s, id+".txt"), Size: sizes[i]})
			}
		}
	}
	if !slices.Contains(Splits, split) {
		ids, sizes, err := listTxt(splitDir)
		if err != nil {
			return nil, err
		}
		for i, id := range ids {
			refs = append(refs, releaseRef{Book: Book{ID: id, Split: split}, Path: filepath.Join(splitDir, id+".txt"), Size: sizes[i]})
		}
	}
	byID := make(map[string]*Book, len(meta))
	for i := range meta {
		m := &meta[i]
		byID[m.ID] = m
		if _, ok := where[m.ID]; !ok && allSplits {
			return nil, fmt.Errorf("pg19: %s lists book %s but its file is missing: no %s in %s, %s or %s",
				metaPath, m.ID, m.ID+".txt", filepath.Join(dir, SplitTrain), filepath.Join(dir, SplitValidation), filepath.Join(dir, SplitTest))
		}
	}
	for i := range refs {
		if m, ok := byID[refs[i].ID]; ok {
			refs[i].Title, refs[i].PublicationDate, refs[i].URL = m.Title, m.PublicationDate, m.URL
		}
	}
	slices.SortFunc(refs, func(a, b releaseRef) int { return CompareIDs(a.ID, b.ID) })
	return refs, nil
}

// listTxt lists the <id>.txt files of a folder (ids and sizes); other entries are ignored.
func listTxt(dir string) (ids []string, sizes []int64, err error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("pg19: %w", err)
	}
	for _, e := range entries {
		name := e.Name()
		id, ok := strings.CutSuffix(name, ".txt")
		if !ok || e.IsDir() || checkID(id) != nil {
			continue
		}
		info, err := e.Info()
		if err != nil {
			return nil, nil, fmt.Errorf("pg19: %w", err)
		}
		if !info.Mode().IsRegular() && info.Mode()&os.ModeSymlink == 0 {
			continue
		}
		ids = append(ids, id)
		sizes = append(sizes, info.Size())
	}
	return ids, sizes, nil
}

// checkDir returns a clear error when dir does not exist or is not a folder.
func checkDir(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("pg19: dataset folder %s does not exist", dir)
		}
		return fmt.Errorf("pg19: dataset folder: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("pg19: dataset path %s is not a folder", dir)
	}
	return nil
}

// checkSplitName refuses split names that are not plain file-name components.
func checkSplitName(split string) error {
	if split == "" || strings.ContainsAny(split, `/\`+"\x00") || split == "." || split == ".." || strings.HasPrefix(split, ".") {
		return fmt.Errorf("pg19: invalid split name %q", split)
	}
	return nil
}

// writeMetadata renders books as a PG-19 metadata.csv (no header, never quoted, so titles must not
// contain commas, quotes or newlines; such characters are replaced by spaces).
func writeMetadata(books []Book) []byte {
	var buf bytes.Buffer
	clean := strings.NewReplacer(",", " ", "\"", " ", "\n", " ", "\r", " ")
	for _, b := range books {
		fmt.Fprintf(&buf, "%s,%s,%d,%s\n", b.ID, clean.Replace(b.Title), b.PublicationDate, clean.Replace(b.URL))
	}
	return buf.Bytes()
}
