package pg19

import (
	"encoding/binary"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func writeTestShard(t testing.TB, tokens []uint16) (string, []byte) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "test.bin")
	if err := WriteShard(path, TokenizerName, VocabSize, tokens); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return path, b
}

func TestShardRoundTrip(t *testing.T) {
	for _, tokens := range [][]uint16{{}, {0}, {464, 2068, EOT, 7586, 50255}} {
		path, raw := writeTestShard(t, tokens)
		if len(raw) != ShardHeaderSize+2*len(tokens) {
			t.Fatalf("file is %d bytes", len(raw))
		}
		s, err := ReadShard(path)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(s.Tokens, tokens) || s.Count != int64(len(tokens)) || s.Tokenizer != "gpt2" || s.VocabSize != VocabSize || s.Version != ShardVersion || s.Path != path {
			t.Fatalf("round trip: %+v", s)
		}
		h, err := VerifyShard(path)
		if err != nil || h != s.ShardHeader {
			t.Fatalf("VerifyShard = %+v, %v", h, err)
		}
		// llm.c compatibility: magic, version, count in int32 slots 0..2; payload little-endian.
		le := binary.LittleEndian
		if le.Uint32(raw[0:]) != 20240520 || le.Uint32(raw[4:]) != 1 || le.Uint32(raw[8:]) != uint32(len(tokens)) {
			t.Fatal("llm.c header fields")
		}
		for i, tok := range tokens {
			if le.Uint16(raw[ShardHeaderSize+2*i:]) != tok {
				t.Fatalf("token %d not little-endian at its offset", i)
			}
		}
	}
	// No temporary files are left behind.
	path, _ := writeTestShard(t, []uint16{1, 2, 3})
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Fatalf("folder holds %d entries after WriteShard", len(entries))
	}
	if err := WriteShard(filepath.Join(t.TempDir(), "x.bin"), "gpt2", 10, []uint16{10}); err == nil {
		t.Fatal("WriteShard accepted a token >= vocab size")
	}
}

func TestShardCorruption(t *testing.T) {
	tokens := []uint16{464, 2068, 7586, 21831, 18045, 625, 262, 16931, 3290, 13, EOT}
	_, good := writeTestShard(t, tokens)
	le := binary.LittleEndian
	reheader := func(b []byte) { le.PutUint32(b[offHeaderCRC:], headerCRC(b)) }
	cases := []struct {
		name   string
		mutate func([]byte) []byte
		want   []string
	}{
		{"truncated payload", func(b []byte) []byte { return b[:len(b)-3] }, []string{"truncated"}},
		{"truncated header", func(b []byte) []byte { return b[:100] }, []string{"truncated", "1024-byte header"}},
		{"empty", func(b []byte) []byte { return nil }, []string{"truncated"}},
		{"trailing bytes", func(b []byte) []byte { return append(b, 0, 0) }, []string{"2 trailing bytes"}},
		{"flipped payload byte", func(b []byte) []byte { b[ShardHeaderSize+5] ^= 0x10; return b }, []string{"payload checksum mismatch"}},
		{"flipped header byte", func(b []byte) []byte { b[600] ^= 1; return b }, []string{"header checksum mismatch"}},
		{"wrong llm.c magic", func(b []byte) []byte { le.PutUint32(b, 20240521); return b }, []string{"bad magic"}},
		{"wrong magic", func(b []byte) []byte { copy(b[offMagic:], "NOTPG19!"); return b }, []string{"bad magic", "NOTPG19!"}},
		{"wrong version", func(b []byte) []byte { le.PutUint32(b[offVersion:], 2); reheader(b); return b }, []string{"unsupported shard format version 2"}},
		{"wrong dtype", func(b []byte) []byte { le.PutUint32(b[offDtype:], 4); reheader(b); return b }, []string{"dtype"}},
		{"count mismatch", func(b []byte) []byte { le.PutUint64(b[offCount:], 12); reheader(b); return b }, []string{"counts disagree"}},
		{"count beyond file", func(b []byte) []byte {
			le.PutUint64(b[offCount:], 1<<40)
			le.PutUint32(b[offLLMCCount:], 0xffffffff)
			reheader(b)
			return b
		}, []string{"truncated", "1099511627776 tokens"}},
		{"token out of range", func(b []byte) []byte {
			le.PutUint16(b[ShardHeaderSize:], 60000)
			le.PutUint32(b[offPayloadCRC:], crc32c(b[ShardHeaderSize:]))
			reheader(b)
			return b
		}, []string{"token 60000 at position 0"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := c.mutate(slices.Clone(good))
			path := filepath.Join(t.TempDir(), "bad.bin")
			os.WriteFile(path, b, 0o644)
			_, err := ReadShard(path)
			wantErr(t, err, append([]string{path}, c.want...)...)
			_, err = VerifyShard(path)
			wantErr(t, err, append([]string{path}, c.want...)...)
		})
	}
	_, err := ReadShard(filepath.Join(t.TempDir(), "absent.bin"))
	wantErr(t, err, "absent.bin")
}

// FuzzReadShard: arbitrary bytes never panic (nor allocate beyond the input); accepted shards re-encode
// to the same bytes.
func FuzzReadShard(f *testing.F) {
	_, good := writeTestShard(f, []uint16{464, 2068, EOT})
	_, empty := writeTestShard(f, nil)
	f.Add(good)
	f.Add(empty)
	f.Add(good[:ShardHeaderSize])
	f.Add(good[:17])
	f.Add([]byte{})
	big := slices.Clone(empty)
	binary.LittleEndian.PutUint64(big[offCount:], 1<<62)
	f.Add(big)
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseShard("fuzz.bin", data)
		if err != nil {
			return
		}
		// Accepted: the header re-encodes to one that validates against the same payload.
		hdr, err := encodeHeader(s.ShardHeader)
		if err != nil {
			t.Fatal(err)
		}
		re := append(hdr, data[ShardHeaderSize:]...)
		s2, err := ParseShard("re.bin", re)
		if err != nil || !slices.Equal(s2.Tokens, s.Tokens) || s2.ShardHeader != s.ShardHeader {
			t.Fatalf("accepted shard does not re-encode: %v", err)
		}
	})
}

func crc32c(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }
