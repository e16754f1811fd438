package model_test

import (
	"math"
	"testing"

	"github.com/gomlx/compute/dtypes"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"

	"natsbench/model"
)

// TestContractF32HalfPrecision checks the carrier backward's matmul (carrier.go): bf16 operands with a float32
// accumulator and output give the float32 product of the same (bf16-representable) values, not a bf16-rounded one.
func TestContractF32HalfPrecision(t *testing.T) {
	backend, err := model.NewBackend("go")
	if err != nil {
		t.Fatal(err)
	}
	const b, s, d = 2, 5, 8
	a := make([]float32, b*s*d)
	c := make([]float32, b*s*d)
	for i := range a {
		a[i] = float32(math.Sin(float64(i)*0.37)) * 3
		c[i] = float32(math.Cos(float64(i)*0.11)) * 2
	}
	exec, err := NewExec(backend, func(x, y *Node) (*Node, *Node) {
		xh, yh := ConvertDType(x, dtypes.BFloat16), ConvertDType(y, dtypes.BFloat16)
		got := model.ContractF32("bqd,bkd->bqk", xh, yh)
		want := Einsum("bqd,bkd->bqk", ConvertDType(xh, dtypes.Float32), ConvertDType(yh, dtypes.Float32))
		return got, want
	})
	if err != nil {
		t.Fatal(err)
	}
	res, err := exec.Exec(tensors.FromFlatDataAndDimensions(a, b, s, d), tensors.FromFlatDataAndDimensions(c, b, s, d))
	if err != nil {
		t.Fatal(err)
	}
	if dt := res[0].DType(); dt != dtypes.Float32 {
		t.Fatalf("contractF32 of bf16 operands gave %s, want float32", dt)
	}
	got, want := tensors.MustCopyFlatData[float32](res[0]), tensors.MustCopyFlatData[float32](res[1])
	for i := range want {
		// Exact products of bf16 values summed in float32: equal up to summation order (far below bf16's 2^-8).
		if math.Abs(float64(got[i]-want[i])) > 1e-5*(1+math.Abs(float64(want[i]))) {
			t.Fatalf("element %d: %v, float32 reference %v", i, got[i], want[i])
		}
	}
}

// TestContractMatchesEinsum checks Contract (bf16 operands, no float32-accumulator request: GoMLX's Einsum would
// drop it anyway, so Contract parses the equation itself) against graph.Einsum on every equation shape the models
// use: batch, contracted and cross axes in any order, and a transposed output.
func TestContractMatchesEinsum(t *testing.T) {
	backend, err := model.NewBackend("go")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		eq     string
		da, db []int
	}{
		{"bsd,df->bsf", []int{2, 3, 4}, []int{4, 5}},
		{"bsd,vd->bsv", []int{2, 3, 4}, []int{6, 4}},
		{"bgrqd,bgkd->bgrqk", []int{2, 2, 2, 3, 4}, []int{2, 2, 3, 4}},
		{"bgrqk,bgkd->bgrqd", []int{2, 2, 2, 3, 3}, []int{2, 2, 3, 4}},
		{"bd,df->bf", []int{3, 4}, []int{4, 5}},
		{"bqd,bkd->bkq", []int{2, 3, 4}, []int{2, 5, 4}},
	} {
		fill := func(dims []int, f float64) []float32 {
			n := 1
			for _, d := range dims {
				n *= d
			}
			x := make([]float32, n)
			for i := range x {
				x[i] = float32(math.Sin(float64(i)*f + 0.3))
			}
			return x
		}
		exec, err := NewExec(backend, func(x, y *Node) (*Node, *Node) {
			xh, yh := ConvertDType(x, dtypes.BFloat16), ConvertDType(y, dtypes.BFloat16)
			return ConvertDType(model.Contract(tc.eq, xh, yh), dtypes.Float32),
				Einsum(tc.eq, ConvertDType(xh, dtypes.Float32), ConvertDType(yh, dtypes.Float32))
		})
		if err != nil {
			t.Fatal(err)
		}
		res, err := exec.Exec(tensors.FromFlatDataAndDimensions(fill(tc.da, 0.7), tc.da...),
			tensors.FromFlatDataAndDimensions(fill(tc.db, 0.3), tc.db...))
		if err != nil {
			t.Fatalf("%s: %v", tc.eq, err)
		}
		if !res[0].Shape().Equal(res[1].Shape()) {
			t.Fatalf("%s: shape %s, Einsum %s", tc.eq, res[0].Shape(), res[1].Shape())
		}
		got, want := tensors.MustCopyFlatData[float32](res[0]), tensors.MustCopyFlatData[float32](res[1])
		for i := range want {
			if math.Abs(float64(got[i]-want[i])) > 1e-2*(1+math.Abs(float64(want[i]))) { // bf16 output
				t.Fatalf("%s element %d: %v, Einsum %v", tc.eq, i, got[i], want[i])
			}
		}
	}
}
