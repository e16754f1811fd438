package main

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPasskeygen checks `runner passkeygen`'s NumPy files (what scripts/train_passkey_llama.py loads with np.load):
// the magic, a 64-byte-aligned header with dtype and shape, and the data size; and that a bad tokenizer is named.
func TestPasskeygen(t *testing.T) {
	dir := t.TempDir()
	var out, errb bytes.Buffer
	args := []string{"-tokenizer", "../llama/testdata/tok512.bin", "-haystack", "../testdata/pg19", "-n", "6",
		"-seq-len", "256", "-words", "100", "-workers", "2", "-out", dir}
	if code := cmdPasskeygen(args, &out, &errb); code != exitOK {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	for _, c := range []struct {
		file, descr, shape string
		size               int
	}{{"tokens.npy", "<i4", "(6, 256)", 6 * 256 * 4}, {"labels.npy", "|u1", "(6, 256)", 6 * 256}, {"lens.npy", "<i4", "(6, )", 6 * 4}} {
		b, err := os.ReadFile(filepath.Join(dir, c.file))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(b, []byte("\x93NUMPY\x01\x00")) {
			t.Fatalf("%s: no npy magic", c.file)
		}
		hl := int(binary.LittleEndian.Uint16(b[8:10]))
		h := string(b[10 : 10+hl])
		if (10+hl)%64 != 0 || !strings.HasSuffix(h, "\n") || !strings.Contains(h, "'descr': '"+c.descr+"'") ||
			!strings.Contains(h, "'shape': "+c.shape) || len(b)-10-hl != c.size {
			t.Errorf("%s: header %q (%d bytes), %d data bytes, want %s %s and %d", c.file, h, 10+hl, len(b)-10-hl, c.descr, c.shape, c.size)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "meta.json")); err != nil {
		t.Error(err)
	}
	errb.Reset()
	bad := append([]string{}, args...)
	bad[1] = "no/such/tokenizer.bin"
	if code := cmdPasskeygen(bad, &out, &errb); code == exitOK || !strings.Contains(errb.String(), "-tokenizer no/such/tokenizer.bin") {
		t.Errorf("bad tokenizer: exit %d, %q", code, errb.String())
	}
}
