package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"natsbench/experiments"
	"natsbench/llama"
	"natsbench/results"
)

// cmdPasskeygen is `runner passkeygen`: passkey-retrieval training data (the finetune kind's own sampler:
// haystacks of book words, NATO-word passkeys, the official needle wording) as NumPy files, for pretraining a small
// Llama that can retrieve passkeys (scripts/train_passkey_llama.py), so that NAtS fine-tuning has a base model
// whose full-attention accuracy is worth keeping (sweeps/finetune_passkey.toml).
//
//	go run ./runner passkeygen -tokenizer llama/testdata/tok512.bin -haystack data/pg19-subset \
//	    -seq-len 512 -words 300 -num-keys 2 -n 60000 -out /tmp/passkey
//
// OUT/tokens.npy (int32 [n, seq_len], zero-padded), OUT/labels.npy (uint8 [n, seq_len], 1 on answer tokens),
// OUT/lens.npy (int32 [n], real tokens per row) and OUT/meta.json (the settings, vocab size, BOS/EOS ids).
// Sample i is index experiments.PretrainIndexBase+i under -seed: disjoint from any finetune run's samples.
func cmdPasskeygen(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("runner passkeygen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	tokPath := fs.String("tokenizer", "llama/testdata/tok512.bin", "tokenizer: llama2.c .bin, tokenizer.json or tokenizer.model")
	hay := fs.String("haystack", "data/pg19-subset", "folder of .txt books (its train/ subfolder when present)")
	seq := fs.Int("seq-len", 512, "tokens per row")
	words := fs.Int("words", 300, "haystack words drawn per sample (cut to fit seq-len)")
	keys := fs.Int("num-keys", 2, "passkeys per sample")
	keyWords := fs.Int("key-words", 2, "NATO words per passkey")
	n := fs.Int("n", 10000, "samples")
	seed := fs.Uint64("seed", 0x707265, "sampler seed (finetune runs use their run seed: keep this one different)")
	out := fs.String("out", "passkey", "output folder")
	workers := fs.Int("workers", runtime.NumCPU(), "goroutines")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if err := passkeygen(stdout, *tokPath, *hay, *seq, *words, *keys, *keyWords, *n, *seed, *out, *workers); err != nil {
		fmt.Fprintln(stderr, "runner passkeygen:", err)
		return exitFailed
	}
	return exitOK
}

func passkeygen(stdout io.Writer, tokPath, hay string, seq, words, keys, keyWords, n int, seed uint64, out string, workers int) error {
	tok, err := llama.LoadTokenizer(tokPath)
	if err != nil {
		return fmt.Errorf("-tokenizer %s: %w", tokPath, err)
	}
	f := experiments.FinetuneConfig{Haystack: hay, SeqLen: seq, Words: words, NumKeys: keys, KeyWords: keyWords}
	t0 := time.Now()
	toks, labels, lens, err := experiments.PasskeySet(f, tok, n, seed, workers)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	shape := []int{n, seq}
	if err := writeNPY(filepath.Join(out, "tokens.npy"), "<i4", shape, toks); err != nil {
		return err
	}
	if err := writeNPY(filepath.Join(out, "labels.npy"), "|u1", shape, labels); err != nil {
		return err
	}
	if err := writeNPY(filepath.Join(out, "lens.npy"), "<i4", []int{n}, lens); err != nil {
		return err
	}
	meta := map[string]any{"tokenizer": tokPath, "haystack": hay, "seq_len": seq, "words": words, "num_keys": keys,
		"key_words": keyWords, "n": n, "seed": seed, "index_base": experiments.PretrainIndexBase,
		"vocab_size": tok.VocabSize(), "bos": tok.BOS(), "eos": tok.EOS()}
	b, _ := json.MarshalIndent(meta, "", "  ")
	if err := results.WriteFileAtomic(filepath.Join(out, "meta.json"), func(w io.Writer) error { _, err := w.Write(b); return err }); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "passkeygen: %d samples of %d tokens in %s (%.1fs)\n", n, seq, out, time.Since(t0).Seconds())
	return nil
}

// writeNPY writes data (int32 or uint8, little-endian) as a NumPy .npy file (format 1.0) of the given shape.
func writeNPY(path, descr string, shape []int, data any) error {
	dims := ""
	for _, d := range shape {
		dims += fmt.Sprintf("%d, ", d)
	}
	if len(shape) > 1 {
		dims = dims[:len(dims)-2]
	}
	header := fmt.Sprintf("{'descr': '%s', 'fortran_order': False, 'shape': (%s), }", descr, dims)
	// Magic (6) + version (2) + header length (2) + header + padding + '\n' is a multiple of 64.
	pad := 64 - (10+len(header)+1)%64
	if pad == 64 {
		pad = 0
	}
	header += string(bytes.Repeat([]byte{' '}, pad)) + "\n"
	return results.WriteFileAtomic(path, func(w io.Writer) error {
		if _, err := w.Write([]byte("\x93NUMPY\x01\x00")); err != nil {
			return err
		}
		if err := binary.Write(w, binary.LittleEndian, uint16(len(header))); err != nil {
			return err
		}
		if _, err := io.WriteString(w, header); err != nil {
			return err
		}
		return binary.Write(w, binary.LittleEndian, data)
	})
}
