package llama

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"os"

	"github.com/gomlx/gomlx/core/tensors"
)

// llama2cHeaderBytes is the legacy (version 0) llama2.c header: 7 int32.
const llama2cHeaderBytes = 7 * 4

// LoadLlama2C reads a legacy llama2.c checkpoint (karpathy/llama2.c `run.c`): a header of 7 little-endian int32
// (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len; a negative vocab_size means an unshared
// classifier follows the weights), then float32 weights in run.c's order: token_embedding `[vocab, dim]`, rms_att
// `[layers, dim]`, wq, wk, wv, wo, rms_ffn, w1 (gate), w2 (down), w3 (up), rms_final `[dim]`, freq_cis_real and
// freq_cis_imag (seq_len·head_size/2 each, skipped: RoPE is recomputed), and wcls `[vocab, dim]` if unshared. The
// matrices are `[out, in]` like HF's Linear weights and are mapped to the HF parameter names of Specs.
//
// The configuration uses RopeInterleaved (run.c rotates pairs (2i, 2i+1)), rope_theta 10000, rms_norm_eps 1e-5,
// max_position_embeddings = seq_len, BOS 1, and EOS {1, 2}: run.c stops generating at BOS, which delimits the
// sequences of its training data, and </s> is 2. The file is read tensor by tensor; its size must match the
// header exactly.
func LoadLlama2C(path string) (*Model, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("llama2.c checkpoint: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("llama2.c checkpoint %s: %w", path, err)
	}
	var h [7]int32
	if err := binary.Read(f, binary.LittleEndian, &h); err != nil {
		return nil, fmt.Errorf("llama2.c checkpoint %s: truncated header: %w", path, err)
	}
	if uint32(h[0]) == 0x616b3432 { // "ak42": the versioned export of llama2.c's export.py
		return nil, fmt.Errorf("llama2.c checkpoint %s: versioned export (magic ak42, version %d) is not supported; only the legacy format", path, h[1])
	}
	dim, hidden, layers, heads, kvHeads, vocab, seq := int(h[0]), int(h[1]), int(h[2]), int(h[3]), int(h[4]), int(h[5]), int(h[6])
	shared := vocab > 0
	if vocab < 0 {
		vocab = -vocab
	}
	cfg := Config{Architecture: "llama2.c", HiddenSize: dim, IntermediateSize: hidden, NumLayers: layers, NumHeads: heads,
		NumKVHeads: kvHeads, RMSNormEps: 1e-5, RopeTheta: 10000, RopeLayout: RopeInterleaved, MaxPositions: seq,
		VocabSize: vocab, TieEmbeddings: shared, BOS: 1, EOS: []int{1, 2}, TorchDType: "float32", DType: "float32"}
	if heads > 0 {
		cfg.HeadDim = dim / heads
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("llama2.c checkpoint %s: header (dim %d, hidden_dim %d, n_layers %d, n_heads %d, n_kv_heads %d, vocab_size %d, seq_len %d): %w",
			path, h[0], h[1], h[2], h[3], h[4], h[5], h[6], err)
	}
	if dim%heads != 0 {
		return nil, fmt.Errorf("llama2.c checkpoint %s: dim %d is not a multiple of n_heads %d", path, dim, heads)
	}
	hd, kvDim := cfg.HeadDim, cfg.KVDim()
	// Blocks in file order; a per-layer block is n_layers consecutive tensors of dims.
	type block struct {
		name   string // HF suffix, or full name when not per layer
		perLay bool
		dims   []int
		skip   bool
	}
	blocks := []block{
		{name: NameEmbed, dims: []int{vocab, dim}},
		{name: NameAttnIn, perLay: true, dims: []int{dim}},
		{name: NameQ, perLay: true, dims: []int{heads * hd, dim}},
		{name: NameK, perLay: true, dims: []int{kvDim, dim}},
		{name: NameV, perLay: true, dims: []int{kvDim, dim}},
		{name: NameO, perLay: true, dims: []int{dim, heads * hd}},
		{name: NameMLPIn, perLay: true, dims: []int{dim}},
		{name: NameGate, perLay: true, dims: []int{hidden, dim}},
		{name: NameDown, perLay: true, dims: []int{dim, hidden}},
		{name: NameUp, perLay: true, dims: []int{hidden, dim}},
		{name: NameNorm, dims: []int{dim}},
		{name: "freq_cis", dims: []int{seq * hd}, skip: true}, // real and imag, seq_len·head_size/2 each
	}
	if !shared {
		blocks = append(blocks, block{name: NameLMHead, dims: []int{vocab, dim}})
	}
	size := func(dims []int) int64 {
		n := int64(1)
		for _, d := range dims {
			n *= int64(d)
		}
		return n
	}
	var total int64
	for _, b := range blocks {
		n := size(b.dims)
		if b.perLay {
			n *= int64(layers)
		}
		total += n
	}
	if want := llama2cHeaderBytes + 4*total; st.Size() != want {
		what := "truncated"
		if st.Size() > want {
			what = "trailing bytes: not a legacy llama2.c checkpoint of this header?"
		}
		return nil, fmt.Errorf("llama2.c checkpoint %s: %d bytes, the header implies %d (%s)", path, st.Size(), want, what)
	}
	specs := Specs(cfg)
	p := emptyParams(specs)
	off := int64(llama2cHeaderBytes)
	for _, b := range blocks {
		n := size(b.dims)
		count := 1
		if b.perLay {
			count = layers
		}
		for l := 0; l < count; l++ {
			if !b.skip {
				name := b.name
				if b.perLay {
					name = LayerPrefix(l) + b.name
				}
				data, err := readF32At(f, off, n)
				if err != nil {
					return nil, fmt.Errorf("llama2.c checkpoint %s: tensor %q: %w", path, name, err)
				}
				i := p.Index(name)
				if i < 0 {
					return nil, fmt.Errorf("llama2.c checkpoint %s: internal: no parameter %q", path, name)
				}
				p.Values[i] = tensors.FromFlatDataAndDimensions(data, b.dims...)
			}
			off += 4 * n
		}
	}
	return &Model{Config: cfg, Params: p, Source: path}, nil
}

func readF32At(r io.ReaderAt, off, n int64) ([]float32, error) {
	buf := make([]byte, 4*n)
	if _, err := r.ReadAt(buf, off); err != nil {
		return nil, err
	}
	out := make([]float32, n)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(buf[4*i:]))
	}
	return out, nil
}
