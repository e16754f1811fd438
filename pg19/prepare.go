package pg19

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"time"

	live "natsbench/internal/progress"
)

// MetaFile is the name of the description Prepare writes beside the shards.
const MetaFile = "meta.json"

// MetaFormatVersion is the version of the prepared-folder format (meta.json + shards) this package writes.
const MetaFormatVersion = 1

// Meta is the content of meta.json in a prepared folder.
type Meta struct {
	FormatVersion int                   `json:"format_version"`     // MetaFormatVersion
	ShardVersion  int                   `json:"shard_version"`      // ShardVersion
	Source        string                `json:"source"`             // absolute path of the text folder
	Layout        Layout                `json:"layout"`             // layout of Source
	Fingerprint   string                `json:"source_fingerprint"` // see PrepareOptions
	Tokenizer     string                `json:"tokenizer"`          // TokenizerName
	VocabSize     int                   `json:"vocab_size"`         // VocabSize
	MaxBooks      int                   `json:"max_books"`          // PrepareOptions.MaxBooks
	Created       time.Time             `json:"created"`
	Splits        map[string]*SplitMeta `json:"splits"`
}

// SplitMeta describes one prepared split.
type SplitMeta struct {
	File       string   `json:"file"`        // shard file name, {split}.bin
	Books      int      `json:"books"`       // books in the stream
	BookIDs    []string `json:"book_ids"`    // in stream order
	BookTokens []int64  `json:"book_tokens"` // tokens of each book including its EOT, in stream order
	TextBytes  int64    `json:"text_bytes"`  // bytes of text tokenised
	Tokens     int64    `json:"tokens"`      // tokens in the shard
	Checksum   string   `json:"crc32c"`      // payload CRC-32C, 8 hex digits
}

// ReadMeta reads dir/meta.json.
func ReadMeta(dir string) (*Meta, error) {
	path := filepath.Join(dir, MetaFile)
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("pg19: %w", err)
	}
	var m Meta
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("pg19: %s: %w", path, err)
	}
	return &m, nil
}

// PrepareOptions configures Prepare.
type PrepareOptions struct {
	Src string // text folder, release or Parquet layout (DetectLayout)
	Dst string // output folder (created); receives {split}.bin and meta.json
	// Splits to prepare; empty = every standard split present in Src. A named split missing in Src is an error.
	Splits []string
	// MaxBooks > 0 keeps only the first MaxBooks books of each split in stream order (release: by numeric
	// id; Parquet: dataset order); 0 = all.
	MaxBooks int
	Workers  int       // tokenising goroutines; <= 0 = GOMAXPROCS
	Progress io.Writer // progress: a line rewritten in place on a terminal, whole lines every 30 s in a log; nil = silent
	Force    bool      // re-prepare even when Dst is up to date
}

// Prepare tokenises the books of each split with GPT-2 (encode_ordinary, EOT after each book), concatenates
// them in stream order (ReadRelease / ReadParquet order) and writes Dst/{split}.bin (WriteShard format) and
// Dst/meta.json. Books are tokenised by a pool of Workers goroutines; the output does not depend on the
// number of workers.
//
// Prepare is idempotent: when Dst/meta.json records the same layout, source fingerprint, tokenizer,
// MaxBooks and split set, and every shard validates (VerifyShard) with the recorded count and checksum,
// nothing is written. The source fingerprint is a SHA-256 over metadata.csv's bytes and the names and
// sizes of the split files (release) or of the Parquet files (Parquet); an edit that keeps every size
// is not noticed (use Force). Shards are written atomically and meta.json last, after removing the old one,
// so an interrupted Prepare never leaves a folder that validates against stale data.
func Prepare(opts PrepareOptions) error {
	src, err := Open(opts.Src)
	if err != nil {
		return err
	}
	if opts.Dst == "" {
		return errors.New("pg19: Prepare: no destination folder (PrepareOptions.Dst)")
	}
	splits := opts.Splits
	if len(splits) == 0 {
		if splits = src.Splits(); len(splits) == 0 {
			return fmt.Errorf("pg19: %s has none of the splits %v", opts.Src, Splits)
		}
	}
	for _, s := range splits {
		if err := checkSplitName(s); err != nil {
			return err
		}
	}
	if opts.MaxBooks < 0 {
		return fmt.Errorf("pg19: Prepare: MaxBooks = %d, want >= 0", opts.MaxBooks)
	}
	workers := opts.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	plans := make([]*splitPlan, len(splits))
	h := sha256.New()
	fmt.Fprintf(h, "layout=%s\n", src.Layout)
	if src.Layout == LayoutRelease {
		if b, err := os.ReadFile(filepath.Join(src.Dir, MetadataFile)); err == nil {
			fmt.Fprintf(h, "metadata.csv %d\n", len(b))
			h.Write(b)
		}
	}
	for i, s := range splits {
		if plans[i], err = planSplit(src, s, opts.MaxBooks); err != nil {
			return err
		}
		fmt.Fprintf(h, "split %s\n", s)
		for _, f := range plans[i].files {
			fmt.Fprintf(h, "%s %d\n", f.name, f.size)
		}
	}
	absSrc, err := filepath.Abs(opts.Src)
	if err != nil {
		return fmt.Errorf("pg19: %w", err)
	}
	meta := &Meta{
		FormatVersion: MetaFormatVersion, ShardVersion: ShardVersion, Source: absSrc, Layout: src.Layout,
		Fingerprint: hex.EncodeToString(h.Sum(nil)), Tokenizer: TokenizerName, VocabSize: VocabSize,
		MaxBooks: opts.MaxBooks, Splits: map[string]*SplitMeta{},
	}
	if !opts.Force && upToDate(opts.Dst, meta, splits) {
		if opts.Progress != nil {
			fmt.Fprintf(opts.Progress, "pg19: %s is up to date (%s)\n", opts.Dst, MetaFile)
		}
		return nil
	}
	if err := os.MkdirAll(opts.Dst, 0o755); err != nil {
		return fmt.Errorf("pg19: %w", err)
	}
	if err := os.Remove(filepath.Join(opts.Dst, MetaFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("pg19: %w", err)
	}
	tok := NewTokenizer()
	for _, p := range plans {
		sm, err := p.run(opts.Dst, tok, workers, opts.Progress)
		if err != nil {
			return err
		}
		meta.Splits[p.split] = sm
	}
	meta.Created = time.Now().UTC().Truncate(time.Second)
	js, err := json.MarshalIndent(meta, "", "  ")
	if err != nil {
		return fmt.Errorf("pg19: %w", err)
	}
	return atomicWrite(filepath.Join(opts.Dst, MetaFile), func(w io.Writer) error {
		_, err := w.Write(append(js, '\n'))
		return err
	})
}

// upToDate reports whether dst already holds what meta describes.
func upToDate(dst string, want *Meta, splits []string) bool {
	have, err := ReadMeta(dst)
	if err != nil {
		return false
	}
	if have.FormatVersion != want.FormatVersion || have.ShardVersion != want.ShardVersion || have.Layout != want.Layout ||
		have.Fingerprint != want.Fingerprint || have.Tokenizer != want.Tokenizer || have.VocabSize != want.VocabSize ||
		have.MaxBooks != want.MaxBooks || len(have.Splits) != len(splits) {
		return false
	}
	for _, s := range splits {
		sm := have.Splits[s]
		if sm == nil {
			return false
		}
		h, err := VerifyShard(ShardPath(dst, s))
		if err != nil || h.Count != sm.Tokens || fmt.Sprintf("%08x", h.Checksum) != sm.Checksum || h.Tokenizer != want.Tokenizer {
			return false
		}
	}
	return true
}

// splitPlan is the list of books of one split to tokenise, in stream order.
type splitPlan struct {
	split      string
	files      []fileInfo // for the fingerprint
	books      int        // books to tokenise
	totalBytes int64      // text bytes when known up front (release), else 0
	groups     []func() ([]job, error)
}

type fileInfo struct {
	name string
	size int64
}

// job is one book to tokenise.
type job struct {
	id   string
	load func() (string, error)
}

func planSplit(src *Source, split string, maxBooks int) (*splitPlan, error) {
	p := &splitPlan{split: split}
	switch src.Layout {
	case LayoutRelease:
		refs, err := listRelease(src.Dir, split)
		if err != nil {
			return nil, err
		}
		for _, r := range refs {
			p.files = append(p.files, fileInfo{r.ID + ".txt", r.Size})
		}
		if maxBooks > 0 && len(refs) > maxBooks {
			refs = refs[:maxBooks]
		}
		jobs := make([]job, len(refs))
		for i, r := range refs {
			p.totalBytes += r.Size
			jobs[i] = job{id: r.ID, load: func() (string, error) {
				b, err := os.ReadFile(r.Path)
				return string(b), err
			}}
		}
		p.books = len(jobs)
		p.groups = []func() ([]job, error){func() ([]job, error) { return jobs, nil }}
	case LayoutParquet:
		files, err := ParquetFiles(src.Dir, split)
		if err != nil {
			return nil, err
		}
		if len(files) == 0 {
			return nil, fmt.Errorf("pg19: split %q: no %s-*.parquet in %s or %s", split, split, filepath.Join(src.Dir, "data"), src.Dir)
		}
		left := maxBooks
		for _, f := range files {
			st, err := os.Stat(f)
			if err != nil {
				return nil, fmt.Errorf("pg19: %w", err)
			}
			p.files = append(p.files, fileInfo{filepath.Base(f), st.Size()})
			if maxBooks > 0 && left == 0 {
				continue
			}
			n, err := parquetRows(f)
			if err != nil {
				return nil, err
			}
			if maxBooks > 0 {
				n = min(n, int64(left))
				left -= int(n)
			}
			p.books += int(n)
			take := int(n)
			p.groups = append(p.groups, func() ([]job, error) {
				books, err := readParquetFile(f, split, true)
				if err != nil {
					return nil, err
				}
				books = books[:min(take, len(books))]
				jobs := make([]job, len(books))
				for i := range books {
					text := books[i].Text
					jobs[i] = job{id: books[i].ID, load: func() (string, error) { return text, nil }}
				}
				return jobs, nil
			})
		}
	default:
		return nil, fmt.Errorf("pg19: %s: layout %q holds no book text", src.Dir, src.Layout)
	}
	return p, nil
}

// run tokenises the plan into dst/{split}.bin.
func (p *splitPlan) run(dst string, tok *Tokenizer, workers int, progress io.Writer) (*SplitMeta, error) {
	path := ShardPath(dst, p.split)
	w, err := createShard(path, tok.Name(), VocabSize)
	if err != nil {
		return nil, err
	}
	sm := &SplitMeta{File: filepath.Base(path), BookIDs: []string{}, BookTokens: []int64{}}
	pr := newProgress(progress, p.split, p.books, p.totalBytes)
	seen := map[string]bool{}
	for _, g := range p.groups {
		jobs, err := g()
		if err == nil {
			err = runOrdered(jobs, workers, tok, func(id string, toks []uint16, nbytes int) error {
				if seen[id] {
					return fmt.Errorf("pg19: split %s: duplicate book id %s", p.split, id)
				}
				seen[id] = true
				if err := w.write(toks); err != nil {
					return err
				}
				sm.BookIDs = append(sm.BookIDs, id)
				sm.BookTokens = append(sm.BookTokens, int64(len(toks)))
				sm.TextBytes += int64(nbytes)
				pr.update(len(sm.BookIDs), sm.TextBytes)
				return nil
			})
		}
		if err != nil {
			w.abort()
			return nil, err
		}
	}
	h, err := w.close()
	if err != nil {
		return nil, err
	}
	pr.finish(len(sm.BookIDs), sm.TextBytes, h.Count)
	sm.Books, sm.Tokens, sm.Checksum = len(sm.BookIDs), h.Count, fmt.Sprintf("%08x", h.Checksum)
	return sm, nil
}

// runOrdered tokenises jobs on a pool of workers and calls emit for each book in job order. At most
// 2*workers books are in flight, so memory stays bounded whatever the order of completion.
func runOrdered(jobs []job, workers int, tok *Tokenizer, emit func(id string, toks []uint16, nbytes int) error) error {
	type result struct {
		idx    int
		toks   []uint16
		nbytes int
		err    error
	}
	workers = max(1, min(workers, len(jobs)))
	jobsCh := make(chan int)
	results := make(chan result, workers)
	sem := make(chan struct{}, 2*workers)
	done := make(chan struct{})
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range jobsCh {
				r := result{idx: i}
				text, err := jobs[i].load()
				if err == nil {
					r.nbytes = len(text)
					r.toks, err = tok.EncodeBook(text)
				}
				if err != nil {
					r.err = fmt.Errorf("pg19: book %s: %w", jobs[i].id, err)
				}
				select {
				case results <- r:
				case <-done:
					return
				}
			}
		})
	}
	go func() {
		defer close(jobsCh)
		for i := range jobs {
			select {
			case sem <- struct{}{}:
			case <-done:
				return
			}
			select {
			case jobsCh <- i:
			case <-done:
				return
			}
		}
	}()
	pending := map[int]result{}
	var err error
	for next := 0; next < len(jobs) && err == nil; {
		r := <-results
		pending[r.idx] = r
		for err == nil {
			r, ok := pending[next]
			if !ok {
				break
			}
			delete(pending, next)
			<-sem
			next++
			if err = r.err; err == nil {
				err = emit(jobs[r.idx].id, r.toks, r.nbytes)
			}
		}
	}
	close(done)
	wg.Wait()
	return err
}

// progress reports "books done/total, MB, MB/s, ETA" through the shared live line (internal/progress: rewritten
// in place on a terminal at most 4 times a second, whole lines every 30 s in a log file or a Slurm job's output),
// and one summary line per split.
type progress struct {
	l          *live.Line
	split      string
	total      int
	totalBytes int64
	start      time.Time
	last       time.Time
}

func newProgress(w io.Writer, split string, total int, totalBytes int64) *progress {
	now := time.Now()
	p := &progress{split: split, total: total, totalBytes: totalBytes, start: now, last: now}
	if w != nil {
		p.l = live.New(w)
	}
	return p
}

func (p *progress) line(done int, doneBytes int64) string {
	el := time.Since(p.start).Seconds()
	rate := 0.0
	if el > 0 {
		rate = float64(doneBytes) / 1e6 / el
	}
	eta := "?"
	switch {
	case p.totalBytes > 0 && doneBytes > 0:
		eta = fmtDuration(el * float64(p.totalBytes-doneBytes) / float64(doneBytes))
	case done > 0:
		eta = fmtDuration(el * float64(p.total-done) / float64(done))
	}
	return fmt.Sprintf("pg19: %s %d/%d books  %.1f MB  %.2f MB/s  ETA %s", p.split, done, p.total, float64(doneBytes)/1e6, rate, eta)
}

func (p *progress) update(done int, doneBytes int64) {
	if p.l == nil || time.Since(p.last) < 250*time.Millisecond {
		return
	}
	p.last = time.Now()
	p.l.Update("%s", p.line(done, doneBytes))
}

// finish replaces the live line with the split's summary and ends it (the summary is written exactly once).
func (p *progress) finish(done int, doneBytes, tokens int64) {
	if p.l == nil {
		return
	}
	el := time.Since(p.start).Seconds()
	rate := 0.0
	if el > 0 {
		rate = float64(doneBytes) / 1e6 / el
	}
	p.l.Update("pg19: %s %d books  %.1f MB  %d tokens  %.1fs  %.2f MB/s", p.split, done, float64(doneBytes)/1e6, tokens, el, rate)
	p.l.End()
}

func fmtDuration(s float64) string {
	d := time.Duration(s * float64(time.Second)).Round(time.Second)
	return d.String()
}

// Load returns the token shard of one split of dir, whatever dir's layout: a prepared folder is read
// directly (ReadShard); a text folder (release or Parquet) is first prepared into cacheDir with default
// options (all its splits, all books; a no-op when cacheDir is up to date), then read from there.
func Load(dir, split, cacheDir string, progress io.Writer) (*Shard, error) {
	l, err := DetectLayout(dir)
	if err != nil {
		return nil, err
	}
	if l != LayoutShards {
		if cacheDir == "" {
			return nil, fmt.Errorf("pg19: %s holds %s-layout text and no cache folder was given to prepare its tokens in", dir, l)
		}
		if err := Prepare(PrepareOptions{Src: dir, Dst: cacheDir, Progress: progress}); err != nil {
			return nil, err
		}
		dir = cacheDir
	}
	path := ShardPath(dir, split)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		var have []string
		if m, err := ReadMeta(dir); err == nil {
			for s := range m.Splits {
				have = append(have, s)
			}
			slices.Sort(have)
		}
		return nil, fmt.Errorf("pg19: split %q not prepared: no %s (prepared splits: %v)", split, path, have)
	}
	return ReadShard(path)
}
