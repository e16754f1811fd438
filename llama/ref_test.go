package llama

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"sync"
	"testing"

	"github.com/gomlx/compute"

	"natsbench/model"
)

// A plain-Go reference forward pass with run.c semantics (float32 loops, one token at a time with a KV cache),
// generalised to GQA, RoPE half/interleaved layouts, llama3 frequency scaling, sliding windows and untied heads.
// It shares no code with the package beyond the parameter names.

type refConfig struct {
	dim, hidden, layers, heads, kvHeads, headDim, vocab int
	eps, theta                                          float64
	interleaved, tied                                   bool
	window                                              int // 0 = none
	llama3                                              *[4]float64
}

type refModel struct {
	c refConfig
	w map[string][]float32 // HF names, [out, in]
}

func refFromConfig(c Config) refConfig {
	r := refConfig{dim: c.HiddenSize, hidden: c.IntermediateSize, layers: c.NumLayers, heads: c.NumHeads,
		kvHeads: c.NumKVHeads, headDim: c.HeadDim, vocab: c.VocabSize, eps: c.RMSNormEps, theta: c.RopeTheta,
		interleaved: c.RopeLayout == RopeInterleaved, tied: c.TieEmbeddings, window: c.SlidingWindow}
	if s := c.RopeScaling; s != nil {
		r.llama3 = &[4]float64{s.Factor, s.LowFreqFactor, s.HighFreqFactor, float64(s.OriginalMaxPositions)}
	}
	return r
}

// invFreq as HF computes it (float32 base frequencies, then llama3 scaling).
func (m *refModel) invFreq() []float32 {
	hd := m.c.headDim
	out := make([]float32, hd/2)
	for i := range out {
		f := 1 / math.Pow(m.c.theta, float64(2*i)/float64(hd))
		if s := m.c.llama3; s != nil {
			factor, low, high, orig := s[0], s[1], s[2], s[3]
			wave := 2 * math.Pi / f
			if wave > orig/low {
				f /= factor
			} else if wave >= orig/high {
				sm := (orig/wave - low) / (high - low)
				f = (1-sm)*f/factor + sm*f
			}
		}
		out[i] = float32(f)
	}
	return out
}

func matvec(out, x, w []float32, n, d int) { // w [d, n]
	for i := 0; i < d; i++ {
		var s float32
		row := w[i*n : (i+1)*n]
		for j, v := range x {
			s += row[j] * v
		}
		out[i] = s
	}
}

func rmsnorm(out, x, w []float32, eps float64) {
	var ss float32
	for _, v := range x {
		ss += v * v
	}
	ss = ss/float32(len(x)) + float32(eps)
	ss = 1 / float32(math.Sqrt(float64(ss)))
	for i := range x {
		out[i] = w[i] * (ss * x[i])
	}
}

// logitsAll runs the tokens one at a time and returns the logits of every position.
func (m *refModel) logitsAll(tokens []int) [][]float32 {
	c := m.c
	hd, kvDim := c.headDim, c.kvHeads*c.headDim
	kvMul := c.heads / c.kvHeads
	inv := m.invFreq()
	kc := make([][]float32, c.layers)
	vc := make([][]float32, c.layers)
	x := make([]float32, c.dim)
	xb := make([]float32, c.dim)
	q := make([]float32, c.heads*hd)
	k := make([]float32, kvDim)
	v := make([]float32, kvDim)
	att := make([]float32, c.heads*hd)
	hb := make([]float32, c.hidden)
	hb2 := make([]float32, c.hidden)
	var out [][]float32
	for pos, tok := range tokens {
		copy(x, m.w[NameEmbed][tok*c.dim:(tok+1)*c.dim])
		for l := 0; l < c.layers; l++ {
			p := LayerPrefix(l)
			rmsnorm(xb, x, m.w[p+NameAttnIn], c.eps)
			matvec(q, xb, m.w[p+NameQ], c.dim, c.heads*hd)
			matvec(k, xb, m.w[p+NameK], c.dim, kvDim)
			matvec(v, xb, m.w[p+NameV], c.dim, kvDim)
			rot := func(vec []float32) {
				for h := 0; h < len(vec)/hd; h++ {
					for i := 0; i < hd/2; i++ {
						a := inv[i] * float32(pos)
						fcr, fci := float32(math.Cos(float64(a))), float32(math.Sin(float64(a)))
						i0, i1 := h*hd+i, h*hd+i+hd/2
						if c.interleaved {
							i0, i1 = h*hd+2*i, h*hd+2*i+1
						}
						v0, v1 := vec[i0], vec[i1]
						vec[i0] = v0*fcr - v1*fci
						vec[i1] = v0*fci + v1*fcr
					}
				}
			}
			rot(q)
			rot(k)
			kc[l] = append(kc[l], k...)
			vc[l] = append(vc[l], v...)
			for h := 0; h < c.heads; h++ {
				kh := h / kvMul
				scores := make([]float32, pos+1)
				mx := float32(math.Inf(-1))
				for t := 0; t <= pos; t++ {
					if c.window > 0 && pos-t >= c.window {
						scores[t] = float32(math.Inf(-1))
						continue
					}
					var s float32
					for i := 0; i < hd; i++ {
						s += q[h*hd+i] * kc[l][t*kvDim+kh*hd+i]
					}
					scores[t] = s / float32(math.Sqrt(float64(hd)))
					mx = max(mx, scores[t])
				}
				var sum float32
				for t := range scores {
					scores[t] = float32(math.Exp(float64(scores[t] - mx)))
					sum += scores[t]
				}
				for i := 0; i < hd; i++ {
					var a float32
					for t := range scores {
						a += scores[t] / sum * vc[l][t*kvDim+kh*hd+i]
					}
					att[h*hd+i] = a
				}
			}
			matvec(xb, att, m.w[p+NameO], c.heads*hd, c.dim)
			for i := range x {
				x[i] += xb[i]
			}
			rmsnorm(xb, x, m.w[p+NameMLPIn], c.eps)
			matvec(hb, xb, m.w[p+NameGate], c.dim, c.hidden)
			matvec(hb2, xb, m.w[p+NameUp], c.dim, c.hidden)
			for i := range hb {
				hb[i] = hb[i] * (1 / (1 + float32(math.Exp(float64(-hb[i]))))) * hb2[i]
			}
			matvec(xb, hb, m.w[p+NameDown], c.hidden, c.dim)
			for i := range x {
				x[i] += xb[i]
			}
		}
		rmsnorm(xb, x, m.w[NameNorm], c.eps)
		head := m.w[NameLMHead]
		if c.tied {
			head = m.w[NameEmbed]
		}
		logits := make([]float32, c.vocab)
		matvec(logits, xb, head, c.dim, c.vocab)
		out = append(out, logits)
	}
	return out
}

// greedy decodes n tokens after prompt (full recomputation each step: simple and obviously right).
func (m *refModel) greedy(prompt []int, n int) []int {
	seq := append([]int(nil), prompt...)
	var gen []int
	for len(gen) < n {
		lg := m.logitsAll(seq)
		next := argmax(lg[len(lg)-1])
		gen = append(gen, next)
		seq = append(seq, next)
	}
	return gen
}

// refLoadLlama2C reads a legacy llama2.c checkpoint the way run.c's memory_map_weights does.
func refLoadLlama2C(t *testing.T, path string) *refModel {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var h [7]int32
	for i := range h {
		h[i] = int32(binary.LittleEndian.Uint32(data[4*i:]))
	}
	c := refConfig{dim: int(h[0]), hidden: int(h[1]), layers: int(h[2]), heads: int(h[3]), kvHeads: int(h[4]),
		vocab: int(h[5]), eps: 1e-5, theta: 10000, interleaved: true, tied: h[5] > 0}
	if c.vocab < 0 {
		c.vocab = -c.vocab
	}
	c.headDim = c.dim / c.heads
	kvDim := c.kvHeads * c.headDim
	f := make([]float32, (len(data)-28)/4)
	for i := range f {
		f[i] = math.Float32frombits(binary.LittleEndian.Uint32(data[28+4*i:]))
	}
	m := &refModel{c: c, w: map[string][]float32{}}
	ptr := 0
	take := func(n int) []float32 { s := f[ptr : ptr+n]; ptr += n; return s }
	perLayer := func(name string, n int) {
		for l := 0; l < c.layers; l++ {
			m.w[LayerPrefix(l)+name] = take(n)
		}
	}
	m.w[NameEmbed] = take(c.vocab * c.dim)
	perLayer(NameAttnIn, c.dim)
	perLayer(NameQ, c.dim*c.dim)
	perLayer(NameK, c.dim*kvDim)
	perLayer(NameV, c.dim*kvDim)
	perLayer(NameO, c.dim*c.dim)
	perLayer(NameMLPIn, c.dim)
	perLayer(NameGate, c.dim*c.hidden)
	perLayer(NameDown, c.hidden*c.dim)
	perLayer(NameUp, c.dim*c.hidden)
	m.w[NameNorm] = take(c.dim)
	seq := int(h[6])
	take(seq * c.headDim / 2)
	take(seq * c.headDim / 2)
	if !c.tied {
		m.w[NameLMHead] = take(c.vocab * c.dim)
	}
	if ptr != len(f) {
		t.Fatalf("reference reader: %d floats left over", len(f)-ptr)
	}
	return m
}

var (
	backendOnce sync.Once
	testBackend compute.Backend
	backendErr  error
)

func goBackend(t testing.TB) compute.Backend {
	backendOnce.Do(func() { testBackend, backendErr = model.NewBackend("go") })
	if backendErr != nil {
		t.Fatal(backendErr)
	}
	return testBackend
}

func maxAbsDiff(a, b []float32) (float64, int) {
	if len(a) != len(b) {
		panic(fmt.Sprintf("lengths %d vs %d", len(a), len(b)))
	}
	worst, at := 0.0, -1
	for i := range a {
		if d := math.Abs(float64(a[i] - b[i])); d > worst || math.IsNaN(d) {
			worst, at = d, i
		}
	}
	return worst, at
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
