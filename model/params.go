package model

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/gomlx/core/tensors"
)

// Spec declares one parameter: its path (scope-like, "layer_00/attn/wq"), its dimensions, its initial standard
// deviation (0 means ones, used by norm gains), and whether weight decay applies (matrices only).
type Spec struct {
	Name  string
	Dims  []int
	Std   float64
	Ones  bool
	Decay bool
}

// Size returns the number of elements.
func (s Spec) Size() int {
	n := 1
	for _, d := range s.Dims {
		n *= d
	}
	return n
}

// Params is an ordered set of named float32 parameters. The order is the order of the specs, so graph inputs,
// optimizer state and checkpoints line up by index.
type Params struct {
	Specs  []Spec
	Values []*tensors.Tensor
	index  map[string]int
}

// NewParams allocates parameters for the specs, initialised deterministically from seed on the host
// (normal(0, std), or ones), so every backend starts from the same weights.
func NewParams(specs []Spec, seed uint64) *Params {
	p := &Params{Specs: specs, index: map[string]int{}}
	rng := rand.New(rand.NewPCG(seed, 0x6e617473))
	for i, s := range specs {
		p.index[s.Name] = i
		data := make([]float32, s.Size())
		switch {
		case s.Ones:
			for k := range data {
				data[k] = 1
			}
		case s.Std > 0:
			for k := range data {
				data[k] = float32(rng.NormFloat64() * s.Std)
			}
		}
		p.Values = append(p.Values, tensors.FromFlatDataAndDimensions(data, s.Dims...))
	}
	return p
}

// Index returns the position of a named parameter, or -1.
func (p *Params) Index(name string) int {
	if i, ok := p.index[name]; ok {
		return i
	}
	return -1
}

// Count returns the number of scalar parameters.
func (p *Params) Count() int {
	n := 0
	for _, s := range p.Specs {
		n += s.Size()
	}
	return n
}

// Flat returns a host copy of parameter i.
func (p *Params) Flat(i int) []float32 {
	return tensors.MustCopyFlatData[float32](p.Values[i])
}

const ckptMagic = "NATSCKPT"

type ckptHeader struct {
	Format  int               `json:"format"`
	Step    int64             `json:"step"`
	Meta    map[string]string `json:"meta,omitempty"`
	Tensors []ckptTensor      `json:"tensors"`
}

type ckptTensor struct {
	Name   string `json:"name"`
	Dims   []int  `json:"dims"`
	Offset int64  `json:"offset"` // in float32 elements from the start of the payload
	CRC    uint32 `json:"crc32c"`
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// SaveTensors writes named float32 tensors to path atomically (temp file, fsync, rename). The format is
// "NATSCKPT", a little-endian uint64 header length, a JSON header (names, dims, offsets, CRC-32C per tensor,
// step, meta) and the raw little-endian float32 payload.
func SaveTensors(path string, step int64, meta map[string]string, names []string, values []*tensors.Tensor) error {
	h := ckptHeader{Format: 1, Step: step, Meta: meta}
	var off int64
	payload := make([][]float32, len(values))
	for i, v := range values {
		if v.DType() != dtypes.Float32 {
			return fmt.Errorf("save %s: tensor %q has dtype %s, want float32", path, names[i], v.DType())
		}
		data := tensors.MustCopyFlatData[float32](v)
		payload[i] = data
		h.Tensors = append(h.Tensors, ckptTensor{Name: names[i], Dims: v.Shape().Dimensions, Offset: off,
			CRC: crc32.Checksum(f32bytes(data), castagnoli)})
		off += int64(len(data))
	}
	hdr, err := json.Marshal(h)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	w := bufio.NewWriterSize(tmp, 1<<20)
	w.WriteString(ckptMagic)
	binary.Write(w, binary.LittleEndian, uint64(len(hdr)))
	w.Write(hdr)
	for _, d := range payload {
		w.Write(f32bytes(d))
	}
	if err := w.Flush(); err != nil {
		tmp.Close()
		return fmt.Errorf("save %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("save %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// LoadTensors reads a file written by SaveTensors. A truncated or corrupt file is an error naming the file and
// the tensor.
func LoadTensors(path string) (step int64, meta map[string]string, names []string, values []*tensors.Tensor, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, nil, nil, nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, nil, nil, nil, err
	}
	r := bufio.NewReaderSize(f, 1<<20)
	magic := make([]byte, len(ckptMagic))
	if _, err := io.ReadFull(r, magic); err != nil || string(magic) != ckptMagic {
		return 0, nil, nil, nil, fmt.Errorf("checkpoint %s: not a natsbench checkpoint (bad magic)", path)
	}
	var hl uint64
	if err := binary.Read(r, binary.LittleEndian, &hl); err != nil || hl > uint64(st.Size()) {
		return 0, nil, nil, nil, fmt.Errorf("checkpoint %s: truncated header", path)
	}
	hdr := make([]byte, hl)
	if _, err := io.ReadFull(r, hdr); err != nil {
		return 0, nil, nil, nil, fmt.Errorf("checkpoint %s: truncated header: %w", path, err)
	}
	var h ckptHeader
	if err := json.Unmarshal(hdr, &h); err != nil {
		return 0, nil, nil, nil, fmt.Errorf("checkpoint %s: corrupt header: %w", path, err)
	}
	if h.Format != 1 {
		return 0, nil, nil, nil, fmt.Errorf("checkpoint %s: format %d not supported (want 1)", path, h.Format)
	}
	var total int64
	for _, t := range h.Tensors {
		n := int64(1)
		for _, d := range t.Dims {
			n *= int64(d)
		}
		total += n
	}
	if want := int64(len(ckptMagic)) + 8 + int64(hl) + 4*total; st.Size() != want {
		return 0, nil, nil, nil, fmt.Errorf("checkpoint %s: size %d bytes, header says %d (truncated or corrupt)", path, st.Size(), want)
	}
	for _, t := range h.Tensors {
		n := 1
		for _, d := range t.Dims {
			n *= d
		}
		buf := make([]byte, 4*n)
		if _, err := io.ReadFull(r, buf); err != nil {
			return 0, nil, nil, nil, fmt.Errorf("checkpoint %s: tensor %q truncated: %w", path, t.Name, err)
		}
		if crc32.Checksum(buf, castagnoli) != t.CRC {
			return 0, nil, nil, nil, fmt.Errorf("checkpoint %s: tensor %q fails its checksum (corrupt file)", path, t.Name)
		}
		data := make([]float32, n)
		for k := range data {
			data[k] = math.Float32frombits(binary.LittleEndian.Uint32(buf[4*k:]))
		}
		names = append(names, t.Name)
		values = append(values, tensors.FromFlatDataAndDimensions(data, t.Dims...))
	}
	return h.Step, h.Meta, names, values, nil
}

// Assign sets parameter values from named tensors (as loaded by LoadTensors). Every parameter must be present
// with the same dimensions; extra names are an error too, so a checkpoint of another architecture is refused.
func (p *Params) Assign(names []string, values []*tensors.Tensor, source string) error {
	got := map[string]*tensors.Tensor{}
	for i, n := range names {
		got[n] = values[i]
	}
	var missing []string
	for i, s := range p.Specs {
		v, ok := got[s.Name]
		if !ok {
			missing = append(missing, s.Name)
			continue
		}
		if fmt.Sprint(v.Shape().Dimensions) != fmt.Sprint(s.Dims) {
			return fmt.Errorf("%s: parameter %q has dims %v, the model wants %v", source, s.Name, v.Shape().Dimensions, s.Dims)
		}
		p.Values[i] = v
		delete(got, s.Name)
	}
	if len(missing) > 0 {
		return fmt.Errorf("%s: missing parameters %v", source, missing)
	}
	if len(got) > 0 {
		extra := make([]string, 0, len(got))
		for n := range got {
			extra = append(extra, n)
		}
		sort.Strings(extra)
		return fmt.Errorf("%s: unexpected parameters %v (another architecture?)", source, extra)
	}
	return nil
}

// Names returns the parameter names in order.
func (p *Params) Names() []string {
	out := make([]string, len(p.Specs))
	for i, s := range p.Specs {
		out[i] = s.Name
	}
	return out
}

func f32bytes(d []float32) []byte {
	b := make([]byte, 4*len(d))
	for i, v := range d {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	return b
}
