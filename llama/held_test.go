package llama

import (
	"math"
	"testing"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/dtypes/bfloat16"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"
)

// forwardWith runs Forward (config c) on weights given as tensors in Specs order, returning the logits and the
// final hidden states as float32.
func forwardWith(t *testing.T, c Config, m *Model, weights []*tensors.Tensor, tokens []int32) (logits, hidden []float32) {
	t.Helper()
	n := len(m.Params.Specs)
	exec, err := NewExec(goBackend(t), func(in []*Node) []*Node {
		out := Forward(c, WeightsFrom(c, m.Params.Specs, in[:n]), in[n], Options{})
		return []*Node{out.Logits, ConvertDType(out.Hidden, dtypes.Float32)}
	})
	if err != nil {
		t.Fatal(err)
	}
	out := execWeights(t, exec, weights, tensors.FromFlatDataAndDimensions(tokens, 1, len(tokens)))
	return tensors.MustCopyFlatData[float32](out[0]), tensors.MustCopyFlatData[float32](out[1])
}

// TestHoldWeightsBF16: with bf16 compute, weights held in bf16 (HoldWeights, rounded once on the host) give the
// same logits and hidden states as float32 weights cast in the graph, bit for bit on the pure-Go backend: the host
// rounding (round to nearest, ties to even) is the one the backend's ConvertDType applies, so the graph sees the
// same bf16 weights and runs the same operations after WeightsFrom. (On XLA the weights are bit-identical too, as
// its convert also rounds to nearest even; outputs can still differ by bf16 rounding where XLA fuses a weight's
// cast into an elementwise consumer and keeps the float32 value — xla_allow_excess_precision — as the RMSNorm gains
// could be.) Holding in float32 returns the parameters themselves; a bf16-held model's weights are in bf16.
func TestHoldWeightsBF16(t *testing.T) {
	tokens := []int32{1, 5, 9, 22, 7, 7, 30, 11, 4, 0, 35, 12}
	for name, c := range testConfigs() {
		t.Run(name, func(t *testing.T) {
			c.DType = "bfloat16"
			m, err := NewRandom(c, 4)
			if err != nil {
				t.Fatal(err)
			}
			f32, err := HoldWeights(m, "float32")
			if err != nil {
				t.Fatal(err)
			}
			for i := range f32 {
				if f32[i] != m.Params.Values[i] {
					t.Fatalf("HoldWeights float32 copied %s", m.Params.Specs[i].Name)
				}
			}
			bf, err := HoldWeights(m, "bfloat16")
			if err != nil {
				t.Fatal(err)
			}
			for i, v := range bf {
				if v.DType() != dtypes.BFloat16 {
					t.Fatalf("%s held in %s", m.Params.Specs[i].Name, v.DType())
				}
			}
			// Spot check of the rounding: a value halfway between two bf16 numbers goes to the even one.
			if got := bfloat16.FromFloat32(math.Float32frombits(0x3f808000)); uint16(got) != 0x3f80 {
				t.Fatalf("tie rounding: %#x", uint16(got))
			}
			l0, h0 := forwardWith(t, c, m, m.Params.Values, tokens)
			l1, h1 := forwardWith(t, c, m, bf, tokens)
			if d, at := maxAbsDiff(l0, l1); d != 0 {
				t.Errorf("logits differ by %g at %d", d, at)
			}
			if d, at := maxAbsDiff(h0, h1); d != 0 {
				t.Errorf("hidden states differ by %g at %d", d, at)
			}
			// Not vacuous: float32 compute on the same float32 weights gives other numbers.
			c32 := c
			c32.DType = "float32"
			l2, _ := forwardWith(t, c32, m, m.Params.Values, tokens)
			if d, _ := maxAbsDiff(l0, l2); d == 0 {
				t.Errorf("bf16 and float32 compute give identical logits: the bf16 path is not exercised")
			}
		})
	}
	if _, err := HoldWeights(&Model{Params: emptyParams(nil)}, "float16"); err == nil {
		t.Error("HoldWeights accepted float16")
	}
}

// TestNewRandomOnDevice: a model generated on the device in bf16 has bf16 parameters of the architecture's
// shapes, gains of one and matrices of standard deviation ≈ 0.02, and runs Forward to finite logits.
func TestNewRandomOnDevice(t *testing.T) {
	c := testConfigs()["llama"]
	c.DType = "bfloat16"
	m, err := NewRandomOnDevice(goBackend(t), c, "bfloat16", 7)
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range m.Params.Specs {
		v := m.Params.Values[i]
		if v.DType() != dtypes.BFloat16 || v.Shape().Size() != s.Size() {
			t.Fatalf("%s: %s, want bf16 %v", s.Name, v.Shape(), s.Dims)
		}
		x := tensors.MustCopyFlatData[bfloat16.BFloat16](v)
		var sum, sq float64
		for _, b := range x {
			f := float64(b.Float32())
			sum, sq = sum+f, sq+f*f
		}
		mean, std := sum/float64(len(x)), math.Sqrt(sq/float64(len(x)))
		switch {
		case s.Ones && (mean != 1 || std != 1):
			t.Errorf("%s: gain mean %g, want ones", s.Name, mean)
		case !s.Ones && (math.Abs(std-0.02) > 0.004 || math.Abs(mean) > 0.004):
			t.Errorf("%s: mean %g std %g, want normal(0, 0.02)", s.Name, mean, std)
		}
	}
	held, err := HoldWeights(m, "bfloat16")
	if err != nil {
		t.Fatal(err)
	}
	logits, _ := forwardWith(t, c, m, held, []int32{1, 2, 3, 4, 5, 6})
	for i, x := range logits {
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			t.Fatalf("logit %d is %v", i, x)
		}
	}
}
