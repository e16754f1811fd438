package pg19

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"os"
	"path/filepath"
	"unsafe"
)

// Shard format constants (see the package documentation for the byte layout).
const (
	// ShardHeaderSize is the size of a shard header: 256 little-endian int32 slots, as in llm.c.
	ShardHeaderSize = 1024
	// ShardVersion is the natsbench shard format version this package writes and reads.
	ShardVersion = 1
	// ShardDtypeUint16 is the dtype code of little-endian uint16 tokens, the only dtype.
	ShardDtypeUint16 = 1

	llmcMagic   = 20240520 // llm.c data loader magic (header slot 0)
	llmcVersion = 1        // llm.c "version 1": uint16 tokens (header slot 1)
	shardMagic  = "NATSPG19"

	offLLMCMagic   = 0
	offLLMCVersion = 4
	offLLMCCount   = 8
	offMagic       = 12
	offVersion     = 20
	offCount       = 24
	offDtype       = 32
	offVocab       = 36
	offPayloadCRC  = 40
	offHeaderCRC   = 44
	offTokenizer   = 48
	tokenizerLen   = 32
)

// castagnoli is the CRC-32C table used for shard checksums.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ShardHeader is the decoded header of a token shard.
type ShardHeader struct {
	Version   int    // format version (ShardVersion)
	Count     int64  // number of tokens in the payload
	VocabSize int    // every token is < VocabSize
	Checksum  uint32 // CRC-32C (Castagnoli) of the payload bytes
	Tokenizer string // e.g. "gpt2"
}

// Shard is a token shard read into memory.
type Shard struct {
	Path string
	ShardHeader
	Tokens []uint16
}

// ShardPath returns the path of a split's shard inside a prepared folder: dir/{split}.bin.
func ShardPath(dir, split string) string { return filepath.Join(dir, split+".bin") }

// encodeHeader renders a shard header.
func encodeHeader(h ShardHeader) ([]byte, error) {
	if len(h.Tokenizer) > tokenizerLen || bytes.IndexByte([]byte(h.Tokenizer), 0) >= 0 {
		return nil, fmt.Errorf("tokenizer name %q: want at most %d bytes and no NUL", h.Tokenizer, tokenizerLen)
	}
	if h.Count < 0 || h.VocabSize <= 0 || h.VocabSize > 1<<16 {
		return nil, fmt.Errorf("invalid header: count %d, vocab size %d", h.Count, h.VocabSize)
	}
	b := make([]byte, ShardHeaderSize)
	le := binary.LittleEndian
	le.PutUint32(b[offLLMCMagic:], llmcMagic)
	le.PutUint32(b[offLLMCVersion:], llmcVersion)
	llmcCount := int32(-1) // llm.c cannot address more than MaxInt32 tokens
	if h.Count <= math.MaxInt32 {
		llmcCount = int32(h.Count)
	}
	le.PutUint32(b[offLLMCCount:], uint32(llmcCount))
	copy(b[offMagic:], shardMagic)
	le.PutUint32(b[offVersion:], uint32(h.Version))
	le.PutUint64(b[offCount:], uint64(h.Count))
	le.PutUint32(b[offDtype:], ShardDtypeUint16)
	le.PutUint32(b[offVocab:], uint32(h.VocabSize))
	le.PutUint32(b[offPayloadCRC:], h.Checksum)
	copy(b[offTokenizer:offTokenizer+tokenizerLen], h.Tokenizer)
	le.PutUint32(b[offHeaderCRC:], headerCRC(b))
	return b, nil
}

// headerCRC is the CRC-32C of the header with its own checksum field taken as zero.
func headerCRC(b []byte) uint32 {
	c := crc32.Update(0, castagnoli, b[:offHeaderCRC])
	c = crc32.Update(c, castagnoli, []byte{0, 0, 0, 0})
	return crc32.Update(c, castagnoli, b[offHeaderCRC+4:ShardHeaderSize])
}

// decodeHeader checks and decodes a shard header; size is the file size (-1 to skip the size check).
// Errors say what is wrong; the caller names the file.
func decodeHeader(b []byte, size int64) (ShardHeader, error) {
	var h ShardHeader
	if len(b) < ShardHeaderSize {
		return h, fmt.Errorf("truncated: %d bytes, shorter than the %d-byte header", len(b), ShardHeaderSize)
	}
	le := binary.LittleEndian
	if m := le.Uint32(b[offLLMCMagic:]); m != llmcMagic || string(b[offMagic:offMagic+8]) != shardMagic {
		return h, fmt.Errorf("bad magic (%d %q, want %d %q): not a natsbench token shard", m, printable(b[offMagic:offMagic+8]), llmcMagic, shardMagic)
	}
	h.Version = int(le.Uint32(b[offVersion:]))
	if h.Version != ShardVersion {
		return h, fmt.Errorf("unsupported shard format version %d (this build reads version %d)", h.Version, ShardVersion)
	}
	if got, want := le.Uint32(b[offHeaderCRC:]), headerCRC(b); got != want {
		return h, fmt.Errorf("header checksum mismatch (stored %08x, computed %08x): the header is corrupt", got, want)
	}
	if v := le.Uint32(b[offLLMCVersion:]); v != llmcVersion {
		return h, fmt.Errorf("llm.c version field is %d, want %d", v, llmcVersion)
	}
	if d := le.Uint32(b[offDtype:]); d != ShardDtypeUint16 {
		return h, fmt.Errorf("unsupported dtype code %d (want %d = uint16 little-endian)", d, ShardDtypeUint16)
	}
	count := le.Uint64(b[offCount:])
	if count > math.MaxInt64/4 {
		return h, fmt.Errorf("token count %d is impossible", count)
	}
	h.Count = int64(count)
	llmcCount := int32(le.Uint32(b[offLLMCCount:]))
	if (h.Count <= math.MaxInt32 && int64(llmcCount) != h.Count) || (h.Count > math.MaxInt32 && llmcCount != -1) {
		return h, fmt.Errorf("token counts disagree: %d (llm.c field) vs %d", llmcCount, h.Count)
	}
	h.VocabSize = int(le.Uint32(b[offVocab:]))
	if h.VocabSize <= 0 || h.VocabSize > 1<<16 {
		return h, fmt.Errorf("vocab size %d is not in [1, 65536]", h.VocabSize)
	}
	h.Checksum = le.Uint32(b[offPayloadCRC:])
	name := b[offTokenizer : offTokenizer+tokenizerLen]
	if i := bytes.IndexByte(name, 0); i >= 0 {
		name = name[:i]
	}
	h.Tokenizer = string(name)
	if size >= 0 {
		if want := ShardHeaderSize + 2*h.Count; size != want {
			if size < want {
				return h, fmt.Errorf("truncated: %d bytes, header says %d tokens = %d bytes", size, h.Count, want)
			}
			return h, fmt.Errorf("%d trailing bytes after the %d tokens the header announces", size-want, h.Count)
		}
	}
	return h, nil
}

func printable(b []byte) string {
	out := make([]byte, len(b))
	for i, c := range b {
		if c < 32 || c > 126 {
			c = '.'
		}
		out[i] = c
	}
	return string(out)
}

// WriteShard writes tokens as a shard at path atomically (temporary file in the same folder, synced, then
// renamed). tokenizer is recorded in the header; vocabSize bounds the tokens (every token must be below it).
func WriteShard(path, tokenizer string, vocabSize int, tokens []uint16) error {
	w, err := createShard(path, tokenizer, vocabSize)
	if err != nil {
		return err
	}
	if err := w.write(tokens); err != nil {
		w.abort()
		return err
	}
	_, err = w.close()
	return err
}

// shardWriter streams tokens into a temporary file and renames it into place on close.
type shardWriter struct {
	path  string
	tmp   *os.File
	bw    *bufio.Writer
	h     ShardHeader
	crc   uint32
	buf   []byte
	vocab int
}

func createShard(path, tokenizer string, vocabSize int) (*shardWriter, error) {
	h := ShardHeader{Version: ShardVersion, VocabSize: vocabSize, Tokenizer: tokenizer}
	if _, err := encodeHeader(h); err != nil {
		return nil, fmt.Errorf("pg19: shard %s: %w", path, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return nil, fmt.Errorf("pg19: %w", err)
	}
	w := &shardWriter{path: path, tmp: tmp, bw: bufio.NewWriterSize(tmp, 1<<20), h: h, vocab: vocabSize}
	if _, err := w.bw.Write(make([]byte, ShardHeaderSize)); err != nil { // placeholder, rewritten on close
		w.abort()
		return nil, fmt.Errorf("pg19: writing %s: %w", path, err)
	}
	return w, nil
}

func (w *shardWriter) write(tokens []uint16) error {
	for i, t := range tokens {
		if int(t) >= w.vocab {
			return fmt.Errorf("pg19: shard %s: token %d at position %d is not below the vocab size %d", w.path, t, w.h.Count+int64(i), w.vocab)
		}
	}
	if cap(w.buf) < 2*len(tokens) {
		w.buf = make([]byte, 2*len(tokens))
	}
	b := w.buf[:2*len(tokens)]
	for i, t := range tokens {
		binary.LittleEndian.PutUint16(b[2*i:], t)
	}
	w.crc = crc32.Update(w.crc, castagnoli, b)
	w.h.Count += int64(len(tokens))
	if _, err := w.bw.Write(b); err != nil {
		return fmt.Errorf("pg19: writing %s: %w", w.path, err)
	}
	return nil
}

func (w *shardWriter) abort() {
	w.tmp.Close()
	os.Remove(w.tmp.Name())
}

// close finishes the header, syncs and renames the shard into place.
func (w *shardWriter) close() (ShardHeader, error) {
	w.h.Checksum = w.crc
	hdr, err := encodeHeader(w.h)
	if err == nil {
		err = w.bw.Flush()
	}
	if err == nil {
		_, err = w.tmp.WriteAt(hdr, 0)
	}
	if err == nil {
		err = w.tmp.Sync()
	}
	if err != nil {
		w.abort()
		return w.h, fmt.Errorf("pg19: writing %s: %w", w.path, err)
	}
	if err := w.tmp.Close(); err != nil {
		os.Remove(w.tmp.Name())
		return w.h, fmt.Errorf("pg19: writing %s: %w", w.path, err)
	}
	if err := os.Rename(w.tmp.Name(), w.path); err != nil {
		os.Remove(w.tmp.Name())
		return w.h, fmt.Errorf("pg19: %w", err)
	}
	return w.h, nil
}

// ReadShard reads and validates a shard: magic, format version, header checksum, dtype, token count
// against the file size, payload CRC-32C and token range. Any problem is an error naming the file and
// what is wrong (truncated, bad magic, unsupported version, checksum mismatch, ...).
func ReadShard(path string) (*Shard, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("pg19: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("pg19: %w", err)
	}
	s, err := decodeShard(f, st.Size(), true)
	if err != nil {
		return nil, fmt.Errorf("pg19: shard %s: %w", path, err)
	}
	s.Path = path
	return s, nil
}

// VerifyShard validates a shard like ReadShard, streaming the payload instead of keeping it, and returns
// its header.
func VerifyShard(path string) (ShardHeader, error) {
	f, err := os.Open(path)
	if err != nil {
		return ShardHeader{}, fmt.Errorf("pg19: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return ShardHeader{}, fmt.Errorf("pg19: %w", err)
	}
	s, err := decodeShard(f, st.Size(), false)
	if err != nil {
		return ShardHeader{}, fmt.Errorf("pg19: shard %s: %w", path, err)
	}
	return s.ShardHeader, nil
}

// ParseShard decodes and validates a shard held in memory; name is used in error messages.
func ParseShard(name string, data []byte) (*Shard, error) {
	s, err := decodeShard(bytes.NewReader(data), int64(len(data)), true)
	if err != nil {
		return nil, fmt.Errorf("pg19: shard %s: %w", name, err)
	}
	s.Path = name
	return s, nil
}

// decodeShard reads a shard of the given size from r; with keep it returns the tokens, otherwise it only
// checks them.
func decodeShard(r io.Reader, size int64, keep bool) (*Shard, error) {
	hdr := make([]byte, ShardHeaderSize)
	if size < ShardHeaderSize {
		return nil, fmt.Errorf("truncated: %d bytes, shorter than the %d-byte header", size, ShardHeaderSize)
	}
	if _, err := io.ReadFull(r, hdr); err != nil {
		return nil, fmt.Errorf("reading header: %w", err)
	}
	h, err := decodeHeader(hdr, size)
	if err != nil {
		return nil, err
	}
	s := &Shard{ShardHeader: h}
	const chunk = 1 << 20 // tokens per read when streaming
	var toks []uint16
	if keep {
		if h.Count > math.MaxInt/2 {
			return nil, fmt.Errorf("token count %d does not fit in memory", h.Count)
		}
		toks = make([]uint16, h.Count)
	} else {
		toks = make([]uint16, min(h.Count, chunk))
	}
	var crc uint32
	badAt, badTok := int64(-1), uint16(0)
	for done := int64(0); done < h.Count; {
		n := min(h.Count-done, int64(len(toks)))
		dst := toks[:n]
		if keep {
			dst = toks[done : done+n]
		}
		raw := unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(dst))), 2*len(dst))
		if _, err := io.ReadFull(r, raw); err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
				return nil, fmt.Errorf("truncated payload at token %d of %d", done, h.Count)
			}
			return nil, fmt.Errorf("reading payload: %w", err)
		}
		crc = crc32.Update(crc, castagnoli, raw)
		if !hostLittleEndian {
			for i, t := range dst {
				dst[i] = t>>8 | t<<8
			}
		}
		if badAt < 0 {
			for i, t := range dst {
				if int(t) >= h.VocabSize {
					badAt, badTok = done+int64(i), t
					break
				}
			}
		}
		done += n
	}
	if crc != h.Checksum {
		return nil, fmt.Errorf("payload checksum mismatch (header %08x, computed %08x): the tokens are corrupt", h.Checksum, crc)
	}
	if badAt >= 0 {
		return nil, fmt.Errorf("token %d at position %d is not below the vocab size %d", badTok, badAt, h.VocabSize)
	}
	if keep {
		s.Tokens = toks
	}
	return s, nil
}

var hostLittleEndian = func() bool {
	x := uint16(1)
	return *(*byte)(unsafe.Pointer(&x)) == 1
}()
