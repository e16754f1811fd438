package pg19

import (
	"fmt"
	"os"
	"path/filepath"
)

// Layout names how a PG-19 folder is stored.
type Layout string

// The layouts DetectLayout recognises.
const (
	// LayoutRelease is the original release: metadata.csv and {train,validation,test}/<book_id>.txt.
	LayoutRelease Layout = "release"
	// LayoutParquet is the Hugging Face layout: data/{split}-*.parquet (or the files directly in the folder).
	LayoutParquet Layout = "parquet"
	// LayoutShards is a folder written by Prepare: meta.json and {split}.bin token shards.
	LayoutShards Layout = "shards"
)

// DetectLayout returns the layout of dir, checked in this order: meta.json with at least one .bin shard
// (LayoutShards); metadata.csv or a train/validation/test folder holding a .txt file (LayoutRelease); a
// Parquet file of a standard split (LayoutParquet). A missing folder, or one holding none of these, is an
// error naming the path.
func DetectLayout(dir string) (Layout, error) {
	if err := checkDir(dir); err != nil {
		return "", err
	}
	if _, err := os.Stat(filepath.Join(dir, MetaFile)); err == nil {
		if m, _ := filepath.Glob(filepath.Join(globEscape(dir), "*.bin")); len(m) > 0 {
			return LayoutShards, nil
		}
	}
	if _, err := os.Stat(filepath.Join(dir, MetadataFile)); err == nil {
		return LayoutRelease, nil
	}
	for _, s := range Splits {
		if ids, _, err := listTxt(filepath.Join(dir, s)); err == nil && len(ids) > 0 {
			return LayoutRelease, nil
		}
	}
	for _, s := range Splits {
		if files, err := ParquetFiles(dir, s); err == nil && len(files) > 0 {
			return LayoutParquet, nil
		}
	}
	return "", fmt.Errorf("pg19: %w in %s: want metadata.csv + {train,validation,test}/<id>.txt (release), "+
		"data/{split}-*.parquet (Hugging Face) or meta.json + {split}.bin (prepared shards)", errNoData, dir)
}

// Source is a PG-19 folder of text (release or Parquet layout) opened by Open.
type Source struct {
	Dir    string
	Layout Layout
}

// Open opens a PG-19 text folder, detecting its layout (DetectLayout). A folder of prepared shards is an
// error (it holds no text; use ReadShard or Load).
func Open(dir string) (*Source, error) {
	l, err := DetectLayout(dir)
	if err != nil {
		return nil, err
	}
	if l == LayoutShards {
		return nil, fmt.Errorf("pg19: %s holds prepared token shards, not book text", dir)
	}
	return &Source{Dir: dir, Layout: l}, nil
}

// Splits returns the standard splits present in the source, in canonical order.
func (s *Source) Splits() []string {
	var out []string
	for _, sp := range Splits {
		if s.hasSplit(sp) {
			out = append(out, sp)
		}
	}
	return out
}

func (s *Source) hasSplit(split string) bool {
	switch s.Layout {
	case LayoutRelease:
		fi, err := os.Stat(filepath.Join(s.Dir, split))
		return err == nil && fi.IsDir()
	case LayoutParquet:
		files, err := ParquetFiles(s.Dir, split)
		return err == nil && len(files) > 0
	}
	return false
}

// Read reads one split with the reader of the source's layout (ReadRelease or ReadParquet).
func (s *Source) Read(split string) ([]Book, error) {
	switch s.Layout {
	case LayoutRelease:
		return ReadRelease(s.Dir, split)
	case LayoutParquet:
		return ReadParquet(s.Dir, split)
	}
	return nil, fmt.Errorf("pg19: %s: layout %q holds no book text", s.Dir, s.Layout)
}
