package llama

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
)

// TensorInfo describes one tensor of a safetensors file.
type TensorInfo struct {
	Name  string
	DType string // safetensors dtype: "F32", "F16", "BF16", ...
	Shape []int
	Begin int64 // byte offsets relative to the start of the data section
	End   int64
}

// Size returns the number of elements.
func (t TensorInfo) Size() int64 {
	n := int64(1)
	for _, d := range t.Shape {
		n *= int64(d)
	}
	return n
}

// elementBytes of every dtype of the safetensors format (0 for sub-byte types, whose byte length is not checked).
var elementBytes = map[string]int64{
	"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
	"I16": 2, "U16": 2, "F16": 2, "BF16": 2,
	"I32": 4, "U32": 4, "F32": 4,
	"I64": 8, "U64": 8, "F64": 8,
	"C64": 8, "F4": 0, "F6_E2M3": 0, "F6_E3M2": 0,
}

// maxHeaderBytes bounds the JSON header (the format's reference implementation uses 100 MB).
const maxHeaderBytes = 100 << 20

// SafetensorsFile is an open safetensors file. Tensors are read one at a time from disk (ReadAt of the tensor's
// byte range, converted in 1 MiB chunks), so the file is never held in memory as a whole.
type SafetensorsFile struct {
	Path     string
	Metadata map[string]string
	Tensors  map[string]TensorInfo
	f        *os.File
	data     int64 // offset of the data section: 8 + header length
}

// OpenSafetensors opens a safetensors file and reads its header: an 8-byte little-endian header length, a JSON
// object of name → {dtype, shape, data_offsets} (and an optional "__metadata__" of strings), then the data.
// Every tensor's byte range is checked against its shape and dtype and against the file size, so a truncated file
// or an inconsistent header is an error here, naming the file and the tensor.
func OpenSafetensors(path string) (*SafetensorsFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	s, err := readSafetensorsHeader(f, path)
	if err != nil {
		f.Close()
		return nil, err
	}
	return s, nil
}

func readSafetensorsHeader(f *os.File, path string) (*SafetensorsFile, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("safetensors %s: %w", path, err)
	}
	var lenBuf [8]byte
	if _, err := io.ReadFull(f, lenBuf[:]); err != nil {
		return nil, fmt.Errorf("safetensors %s: truncated (no header length): %w", path, err)
	}
	hl := binary.LittleEndian.Uint64(lenBuf[:])
	if hl > maxHeaderBytes || int64(hl) > st.Size()-8 {
		return nil, fmt.Errorf("safetensors %s: header length %d does not fit the file of %d bytes (truncated or not safetensors)", path, hl, st.Size())
	}
	hdr := make([]byte, hl)
	if _, err := io.ReadFull(f, hdr); err != nil {
		return nil, fmt.Errorf("safetensors %s: truncated header: %w", path, err)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(hdr, &raw); err != nil {
		return nil, fmt.Errorf("safetensors %s: header is not a JSON object: %w", path, err)
	}
	s := &SafetensorsFile{Path: path, Tensors: map[string]TensorInfo{}, f: f, data: 8 + int64(hl)}
	dataLen := st.Size() - s.data
	for name, msg := range raw {
		if name == "__metadata__" {
			if err := json.Unmarshal(msg, &s.Metadata); err != nil {
				return nil, fmt.Errorf("safetensors %s: __metadata__ is not a map of strings: %w", path, err)
			}
			continue
		}
		var e struct {
			DType       string  `json:"dtype"`
			Shape       []int   `json:"shape"`
			DataOffsets []int64 `json:"data_offsets"`
		}
		if err := json.Unmarshal(msg, &e); err != nil {
			return nil, fmt.Errorf("safetensors %s: tensor %q: bad header entry: %w", path, name, err)
		}
		eb, known := elementBytes[e.DType]
		if !known {
			return nil, fmt.Errorf("safetensors %s: tensor %q: unknown dtype %q", path, name, e.DType)
		}
		if len(e.DataOffsets) != 2 || e.DataOffsets[0] < 0 || e.DataOffsets[1] < e.DataOffsets[0] {
			return nil, fmt.Errorf("safetensors %s: tensor %q: bad data_offsets %v", path, name, e.DataOffsets)
		}
		t := TensorInfo{Name: name, DType: e.DType, Shape: e.Shape, Begin: e.DataOffsets[0], End: e.DataOffsets[1]}
		for _, d := range t.Shape {
			if d < 0 {
				return nil, fmt.Errorf("safetensors %s: tensor %q: negative dimension in shape %v", path, name, t.Shape)
			}
		}
		if eb > 0 && t.End-t.Begin != t.Size()*eb {
			return nil, fmt.Errorf("safetensors %s: tensor %q: %d bytes, but shape %v of %s needs %d", path, name,
				t.End-t.Begin, t.Shape, t.DType, t.Size()*eb)
		}
		if t.End > dataLen {
			return nil, fmt.Errorf("safetensors %s: tensor %q ends at byte %d of the data, but the file holds only %d (truncated)",
				path, name, t.End, dataLen)
		}
		s.Tensors[name] = t
	}
	return s, nil
}

// Names returns the tensor names, sorted.
func (s *SafetensorsFile) Names() []string {
	out := make([]string, 0, len(s.Tensors))
	for n := range s.Tensors {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Close closes the file.
func (s *SafetensorsFile) Close() error { return s.f.Close() }

// ReadFloat32 reads one tensor and converts it to float32 (from F32, F16 or BF16; other dtypes are an error naming
// the file and the tensor). It returns the row-major data and the shape.
func (s *SafetensorsFile) ReadFloat32(name string) ([]float32, []int, error) {
	t, ok := s.Tensors[name]
	if !ok {
		return nil, nil, fmt.Errorf("safetensors %s: no tensor %q", s.Path, name)
	}
	var conv func(dst []float32, src []byte)
	var eb int
	switch t.DType {
	case "F32":
		conv, eb = convF32, 4
	case "BF16":
		conv, eb = convBF16, 2
	case "F16":
		conv, eb = convF16, 2
	default:
		return nil, nil, fmt.Errorf("safetensors %s: tensor %q has dtype %s: not supported (want F32, F16 or BF16)", s.Path, name, t.DType)
	}
	n := t.Size()
	out := make([]float32, n)
	const chunk = 1 << 20 // bytes per read
	buf := make([]byte, min(int64(chunk), n*int64(eb)))
	for done := int64(0); done < n; {
		cnt := min(int64(len(buf)/eb), n-done)
		b := buf[:cnt*int64(eb)]
		if _, err := s.f.ReadAt(b, s.data+t.Begin+done*int64(eb)); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, nil, fmt.Errorf("safetensors %s: tensor %q: %w", s.Path, name, err)
		}
		conv(out[done:done+cnt], b)
		done += cnt
	}
	return out, append([]int(nil), t.Shape...), nil
}

func convF32(dst []float32, src []byte) {
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
	}
}

func convBF16(dst []float32, src []byte) {
	for i := range dst {
		dst[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(src[2*i:])) << 16)
	}
}

func convF16(dst []float32, src []byte) {
	for i := range dst {
		dst[i] = F16ToFloat32(binary.LittleEndian.Uint16(src[2*i:]))
	}
}

// F16ToFloat32 converts an IEEE 754 half-precision value (including subnormals, infinities and NaN).
func F16ToFloat32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h) & 0x3ff
	switch {
	case exp == 0x1f: // inf / NaN
		return math.Float32frombits(sign | 0xff<<23 | mant<<13)
	case exp == 0:
		if mant == 0 {
			return math.Float32frombits(sign)
		}
		// Subnormal: value = mant · 2^-24.
		v := float32(mant) * (1.0 / (1 << 24))
		if sign != 0 {
			v = -v
		}
		return v
	default:
		return math.Float32frombits(sign | (exp+127-15)<<23 | mant<<13)
	}
}

// Checkpoint is a set of safetensors files holding one model: a single model.safetensors, or shards listed by
// model.safetensors.index.json ("weight_map": tensor → shard file).
type Checkpoint struct {
	Dir   string
	files []*SafetensorsFile
	where map[string]*SafetensorsFile
}

// OpenCheckpoint opens the safetensors weights of a Hugging Face model folder: model.safetensors.index.json if
// present (every listed shard must exist and hold the tensors the index assigns to it), else model.safetensors.
// A path to a single .safetensors file works too.
func OpenCheckpoint(path string) (*Checkpoint, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("safetensors checkpoint: %w", err)
	}
	c := &Checkpoint{Dir: path, where: map[string]*SafetensorsFile{}}
	if !st.IsDir() {
		c.Dir = filepath.Dir(path)
		return c, c.add(path, nil)
	}
	index := filepath.Join(path, "model.safetensors.index.json")
	data, err := os.ReadFile(index)
	if errors.Is(err, os.ErrNotExist) {
		single := filepath.Join(path, "model.safetensors")
		if _, err := os.Stat(single); err != nil {
			return nil, fmt.Errorf("safetensors checkpoint %s: neither model.safetensors.index.json nor model.safetensors: %w", path, err)
		}
		return c, c.add(single, nil)
	}
	if err != nil {
		return nil, fmt.Errorf("safetensors checkpoint: %w", err)
	}
	var idx struct {
		WeightMap map[string]string `json:"weight_map"`
	}
	if err := json.Unmarshal(data, &idx); err != nil {
		return nil, fmt.Errorf("safetensors index %s: %w", index, err)
	}
	if len(idx.WeightMap) == 0 {
		return nil, fmt.Errorf("safetensors index %s: empty weight_map", index)
	}
	byShard := map[string][]string{}
	for tensor, shard := range idx.WeightMap {
		if shard != filepath.Base(shard) {
			return nil, fmt.Errorf("safetensors index %s: tensor %q: shard %q is not a file name in the folder", index, tensor, shard)
		}
		byShard[shard] = append(byShard[shard], tensor)
	}
	shards := make([]string, 0, len(byShard))
	for s := range byShard {
		shards = append(shards, s)
	}
	sort.Strings(shards)
	for _, s := range shards {
		names := byShard[s]
		sort.Strings(names)
		if err := c.add(filepath.Join(path, s), names); err != nil {
			c.Close()
			return nil, fmt.Errorf("safetensors index %s: %w", index, err)
		}
	}
	return c, nil
}

// add opens one file; want (if not nil) lists the tensors the index assigns to it.
func (c *Checkpoint) add(path string, want []string) error {
	if _, err := os.Stat(path); err != nil && len(want) > 0 {
		return fmt.Errorf("shard %s (holding tensor %q and %d more) is missing: %w", path, want[0], len(want)-1, err)
	}
	s, err := OpenSafetensors(path)
	if err != nil {
		return err
	}
	c.files = append(c.files, s)
	if want == nil {
		for n := range s.Tensors {
			c.where[n] = s
		}
		return nil
	}
	for _, n := range want {
		if _, ok := s.Tensors[n]; !ok {
			return fmt.Errorf("shard %s: no tensor %q, which the index assigns to it", path, n)
		}
		c.where[n] = s
	}
	return nil
}

// Names returns all tensor names, sorted.
func (c *Checkpoint) Names() []string {
	out := make([]string, 0, len(c.where))
	for n := range c.where {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Info returns the header entry of a tensor and the file that holds it.
func (c *Checkpoint) Info(name string) (TensorInfo, string, bool) {
	s, ok := c.where[name]
	if !ok {
		return TensorInfo{}, "", false
	}
	return s.Tensors[name], s.Path, true
}

// ReadFloat32 reads one tensor as float32 (see SafetensorsFile.ReadFloat32).
func (c *Checkpoint) ReadFloat32(name string) ([]float32, []int, error) {
	s, ok := c.where[name]
	if !ok {
		return nil, nil, fmt.Errorf("safetensors checkpoint %s: no tensor %q", c.Dir, name)
	}
	return s.ReadFloat32(name)
}

// Close closes all files.
func (c *Checkpoint) Close() error {
	var first error
	for _, s := range c.files {
		if err := s.Close(); err != nil && first == nil {
			first = err
		}
	}
	c.files = nil
	return first
}

// WriteSafetensors writes float32 tensors to a safetensors file as dtype "F32", "BF16" (round to nearest even)
// or "F16" (round to nearest even, overflow to ±inf), with optional metadata. Used by tests and to save weights.
func WriteSafetensors(path string, names []string, shapes [][]int, data [][]float32, dtype string, metadata map[string]string) error {
	var eb int
	switch dtype {
	case "F32":
		eb = 4
	case "BF16", "F16":
		eb = 2
	default:
		return fmt.Errorf("safetensors %s: cannot write dtype %q (want F32, BF16 or F16)", path, dtype)
	}
	hdr := map[string]any{}
	if len(metadata) > 0 {
		hdr["__metadata__"] = metadata
	}
	var off int64
	for i, n := range names {
		size := int64(1)
		for _, d := range shapes[i] {
			size *= int64(d)
		}
		if size != int64(len(data[i])) {
			return fmt.Errorf("safetensors %s: tensor %q: %d values for shape %v", path, n, len(data[i]), shapes[i])
		}
		hdr[n] = map[string]any{"dtype": dtype, "shape": shapes[i], "data_offsets": []int64{off, off + size*int64(eb)}}
		off += size * int64(eb)
	}
	h, err := json.Marshal(hdr)
	if err != nil {
		return err
	}
	for len(h)%8 != 0 { // the format pads the header with spaces to 8-byte alignment
		h = append(h, ' ')
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("safetensors: %w", err)
	}
	buf := make([]byte, 8, 8+len(h))
	binary.LittleEndian.PutUint64(buf, uint64(len(h)))
	buf = append(buf, h...)
	for _, d := range data {
		for _, v := range d {
			switch dtype {
			case "F32":
				buf = binary.LittleEndian.AppendUint32(buf, math.Float32bits(v))
			case "BF16":
				buf = binary.LittleEndian.AppendUint16(buf, Float32ToBF16(v))
			case "F16":
				buf = binary.LittleEndian.AppendUint16(buf, Float32ToF16(v))
			}
		}
	}
	if _, err := f.Write(buf); err != nil {
		f.Close()
		return fmt.Errorf("safetensors %s: %w", path, err)
	}
	return f.Close()
}

// Float32ToBF16 rounds to the nearest bfloat16 (ties to even), as PyTorch does; NaN stays NaN.
func Float32ToBF16(v float32) uint16 {
	b := math.Float32bits(v)
	if v != v {
		return uint16(b>>16) | 0x40
	}
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}

// Float32ToF16 rounds to the nearest IEEE half (ties to even), with overflow to ±inf and subnormals.
func Float32ToF16(v float32) uint16 {
	b := math.Float32bits(v)
	sign := uint16(b>>16) & 0x8000
	exp := int(b>>23&0xff) - 127
	mant := b & 0x7fffff
	switch {
	case v != v:
		return sign | 0x7e00
	case exp == 128: // inf
		return sign | 0x7c00
	case exp > 15:
		return sign | 0x7c00
	case exp >= -14: // normal half
		m := mant >> 13
		rest := mant & 0x1fff
		h := uint32(exp+15)<<10 | m
		if rest > 0x1000 || (rest == 0x1000 && h&1 == 1) {
			h++ // may carry into the exponent, which is right (up to inf)
		}
		return sign | uint16(h)
	case exp >= -25: // subnormal half: value = m · 2^-24
		full := mant | 0x800000         // 24-bit significand, value = full · 2^(exp-23)
		shift := uint32(-exp - 14 + 13) // bits to drop so that the unit is 2^-24
		m := full >> shift
		rest := full & (1<<shift - 1)
		half := uint32(1) << (shift - 1)
		if rest > half || (rest == half && m&1 == 1) {
			m++
		}
		return sign | uint16(m)
	default:
		return sign
	}
}
