// Package pg19 is natsbench's PG-19 data pipeline (NATS-SPEC §2.1 and §2.5): it reads PG-19 books in the
// original release layout or the Hugging Face Parquet layout, tokenises them with GPT-2 BPE into uint16
// token shards, draws deterministic training batches and plans the evaluation windows. It has no GoMLX
// dependency: everything here is host-side data handling.
//
// # Sources
//
//   - Release layout (ReadRelease): dir/metadata.csv (no header: book_id,short_book_title,publication_date,url)
//     and dir/{train,validation,test}/<book_id>.txt. Books are returned sorted by numeric id.
//   - Hugging Face layout (ReadParquet, WriteParquet): dir/data/{split}-*.parquet with columns
//     short_book_title, publication_date, url, text; the id is the url's tail. Books keep dataset order.
//   - Open / DetectLayout pick the layout of a folder; Load accepts a prepared folder as well.
//
// The repository's testdata/pg19 is a small real sample in the release layout (see its README.md).
//
// # Tokenisation
//
// Tokenizer is tiktoken's gpt2 encoding with encode_ordinary semantics (special-token text is ordinary
// text). Each book is encoded and followed by EOT (50256); the books of a split are concatenated in
// stream order, so the shard of a split is the exact token stream of the reference implementation's
// {split}.bin (nanoGPT prepare.py style). VocabSize is 50257, ModelVocabSize 50304.
//
// # Shard format (version 1)
//
// A shard {split}.bin is a 1024-byte header followed by the tokens. The header is 256 little-endian
// 32-bit slots, compatible with llm.c's data loader (slots 0-2, and a file of exactly 1024 + 2*count
// bytes), extended with natsbench fields:
//
//	offset  size  type        field
//	     0     4  int32       llm.c magic 20240520
//	     4     4  int32       llm.c version 1 (uint16 tokens)
//	     8     4  int32       token count for llm.c (-1 when the count exceeds 2^31-1)
//	    12     8  bytes       natsbench magic "NATSPG19"
//	    20     4  uint32      format version (ShardVersion = 1)
//	    24     8  uint64      token count
//	    32     4  uint32      dtype code (1 = uint16 little-endian)
//	    36     4  uint32      vocab size: every token is below it (GPT-2: 50257)
//	    40     4  uint32      CRC-32C (Castagnoli) of the payload bytes
//	    44     4  uint32      CRC-32C of the 1024 header bytes with this field zeroed
//	    48    32  bytes       tokenizer name, ASCII, NUL-padded ("gpt2")
//	    80   944  bytes       reserved, zero
//	  1024  2*count uint16le  tokens
//
// ReadShard checks, in order: size >= 1024, both magics, format version, header CRC, llm.c version,
// dtype, the two counts, file size = 1024 + 2*count, payload CRC, token range; each failure is an error
// naming the file and the problem. WriteShard and Prepare write through a temporary file renamed into place.
//
// Prepare writes one shard per split and meta.json beside them (Meta: source folder, layout, source
// fingerprint, tokenizer, book ids and token counts per split in stream order, created time, format
// version), and skips the work when the folder is already up to date.
//
// # Training batches
//
// Sampler.Batch(seed, step, batchSize) draws batchSize windows of seqLen+1 tokens at uniform starts in
// [0, n-seqLen-1] (nanoGPT get_batch) from a PCG generator keyed only by (seed, step), and returns
// row-major [batchSize, seqLen] inputs and targets (targets shifted by one).
//
// # Evaluation windows
//
// Windows(n, context, maxWindows) cuts the test stream into non-overlapping windows of context+1 tokens
// (remainder dropped); each window is decoded from an empty cache and scores its last context tokens, so
// every scored position of the stream is scored exactly once and window starts are never scored. The
// Windows documentation has a worked example; maxWindows > 0 keeps evenly spaced windows deterministically.
package pg19
