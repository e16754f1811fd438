package nats

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"

	"natsbench/model"
)

// refRegions computes, from the written definitions (NATS-SPEC.md §1.5, chunk form), the hard mask and the four
// what-if regions for one head: roles per unit, seq tokens, chunk c, window w. Loops only, no cleverness.
func refRegions(roles []int, seq, c, w int) (hard, A, B, C, D [][]float64, next []int) {
	n := len(roles)
	firstG := func(from int) int { // first Global unit ≥ from, n if none
		for k := from; k < n; k++ {
			if roles[k] == Global {
				return k
			}
		}
		return n
	}
	mk := func() [][]float64 {
		m := make([][]float64, seq)
		for i := range m {
			m[i] = make([]float64, seq)
		}
		return m
	}
	hard, A, B, C, D = mk(), mk(), mk(), mk(), mk()
	next = make([]int, n)
	for u := 0; u < n; u++ {
		next[u] = firstG(u + 1)
	}
	for j := 0; j < seq; j++ {
		u := j / c
		e, nx := firstG(u), next[u]
		n2 := n
		if nx < n {
			n2 = firstG(nx + 1)
		}
		for i := j; i < seq; i++ {
			a := i >= (nx+1)*c
			b := i < (e+1)*c
			cw := i <= u*c+c-1+w
			d := i >= (nx+1)*c && i < (n2+1)*c
			A[i][j], B[i][j], C[i][j], D[i][j] = b2f(a), b2f(b), b2f(cw), b2f(d)
			switch roles[u] {
			case Global:
				hard[i][j] = 1
			case Local:
				hard[i][j] = b2f(b)
			case Window:
				hard[i][j] = b2f(cw)
			}
		}
	}
	return
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// maskedAttentionLoss is Σ W ⊙ O with O the multiplicative-mask attention of §1.4 (one head).
func maskedAttentionLoss(q, k, v, wOut, mask *Node) *Node {
	s := Einsum("qd,kd->qk", q, k)
	seq := s.Shape().Dimensions[0]
	sh := shapes.Make(dtypes.Int32, seq, seq)
	causal := GreaterOrEqual(Iota(s.Graph(), sh, 0), Iota(s.Graph(), sh, 1))
	s = Where(causal, s, Scalar(s.Graph(), dtypes.Float64, -1e30))
	e := Mul(Exp(Sub(s, StopGradient(ReduceAndKeep(s, ReduceMax, -1)))), mask)
	p := Div(e, ReduceAndKeep(e, ReduceSum, -1))
	_ = seq
	return ReduceAllSum(Mul(Einsum("qk,kd->qd", p, v), wOut))
}

// TestCarrierGradientMatchesFiniteDifferences: autodiff through the carrier gives, for every role entry of every
// unit, the derivative of the attention loss under the linear relaxation
// M(y) = M_hard + Σ_j (y^G_j−G_j)A + (y^L_j−L_j)B + (y^S_j−S_j)C − (y^G_{n_j}−G_{n_j})D (divided by C for chunks),
// measured by central finite differences in float64.
func TestCarrierGradientMatchesFiniteDifferences(t *testing.T) {
	backend, err := model.NewBackend("go")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		roles     []int
		seq, c, w int
	}{
		{"token", []int{Global, Local, Window, Local, Global, Local, Window, Global}, 8, 1, 2},
		{"token-locals", []int{Global, Local, Local, Global, Local, Local, Local, Global}, 8, 1, 1},
		{"chunk2", []int{Global, Local, Window, Global, Local}, 9, 2, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, _ := New(Config{Window: tc.w, Chunk: tc.c, GlobalBonus: 0.1})
			n, seq, hd := len(tc.roles), tc.seq, 4
			r := rand.New(rand.NewPCG(1, 2))
			rnd := func(k int) []float64 {
				x := make([]float64, k)
				for i := range x {
					x[i] = r.NormFloat64()
				}
				return x
			}
			q, k, v, wOut := rnd(seq*hd), rnd(seq*hd), rnd(seq*hd), rnd(seq*hd)
			y := make([]float64, n*3)
			for u, role := range tc.roles {
				y[u*3+role] = 1
			}
			mc := model.Config{DModel: 4, NHeads: 1}
			// Autodiff through the carrier.
			grad, err := NewExec(backend, func(Y, Q, K, V, WO *Node) *Node {
				y32 := ConvertDType(Y, dtypes.Float32)
				out := m.build(mc, Reshape(y32, 1, 1, n, 3), StopGradient(Reshape(y32, 1, 1, n, 3)), seq, true)
				mask := ConvertDType(Reshape(out.Materialize(), seq, seq), dtypes.Float64)
				loss := maskedAttentionLoss(Q, K, V, WO, mask)
				return Gradient(loss, Y)[0]
			})
			if err != nil {
				t.Fatal(err)
			}
			qt := func(x []float64) *tensors.Tensor { return tensors.FromFlatDataAndDimensions(x, seq, hd) }
			res, err := grad.Exec(tensors.FromFlatDataAndDimensions(y, n, 3), qt(q), qt(k), qt(v), qt(wOut))
			if err != nil {
				t.Fatal(err)
			}
			got := tensors.MustCopyFlatData[float64](res[0])
			// Finite differences of the relaxation, with regions from refRegions.
			hard, A, B, C, D, next := refRegions(tc.roles, seq, tc.c, tc.w)
			lossOf, err := NewExec(backend, func(M, Q, K, V, WO *Node) *Node { return maskedAttentionLoss(Q, K, V, WO, M) })
			if err != nil {
				t.Fatal(err)
			}
			relaxed := func(yy []float64) []float64 {
				M := make([]float64, seq*seq)
				for i := 0; i < seq; i++ {
					for j := 0; j <= i; j++ {
						u := j / tc.c
						dG := yy[u*3+Global] - y[u*3+Global]
						dL := yy[u*3+Local] - y[u*3+Local]
						dS := yy[u*3+Window] - y[u*3+Window]
						var dGn float64
						if next[u] < n {
							dGn = yy[next[u]*3+Global] - y[next[u]*3+Global]
						}
						M[i*seq+j] = hard[i][j] + (dG*A[i][j]+dL*B[i][j]+dS*C[i][j]-dGn*D[i][j])/float64(tc.c)
					}
				}
				return M
			}
			eval := func(yy []float64) float64 {
				out, err := lossOf.Exec(tensors.FromFlatDataAndDimensions(relaxed(yy), seq, seq), qt(q), qt(k), qt(v), qt(wOut))
				if err != nil {
					t.Fatal(err)
				}
				return out[0].Value().(float64)
			}
			const eps = 1e-4
			for idx := range y {
				yp, ym := append([]float64{}, y...), append([]float64{}, y...)
				yp[idx] += eps
				ym[idx] -= eps
				fd := (eval(yp) - eval(ym)) / (2 * eps)
				if math.Abs(fd-got[idx]) > 2e-4*(1+math.Abs(fd)) {
					t.Errorf("unit %d role %d: autodiff %.6f, finite differences %.6f", idx/3, idx%3, got[idx], fd)
				}
			}
		})
	}
}
