package model_test

import (
	"math"
	"testing"

	"github.com/gomlx/compute"
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"

	"natsbench/model"
	"natsbench/nats"
)

// TestFusedCarrierMatchesMaterialized checks the fused structured-mask path (attention kernel + custom VJP of the
// carrier, carrier.go) against the materialised multiplicative-mask attention whose gradients the finite-difference
// tests of package nats check: the same loss and the same gradient for every parameter, scorers included, for
// token-level NAtS, chunked NAtS and grouped-query attention.
func TestFusedCarrierMatchesMaterialized(t *testing.T) {
	backend, err := model.NewBackend("go")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		kvHeads int
		nc      nats.Config
	}{
		{"token", 0, nats.Config{Lambda: 1e-3, Window: 3, Chunk: 1, Merge: "mean"}},
		{"chunk2-max", 0, nats.Config{Lambda: 1e-3, Window: 4, Chunk: 2, Merge: "max"}},
		{"gqa", 1, nats.Config{Lambda: 1e-3, Window: 2, Chunk: 1, Merge: "mean"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := model.Config{VocabSize: 37, DModel: 16, NLayers: 2, NHeads: 2, NKVHeads: tc.kvHeads, FFNMult: 2,
				MaxSeqLen: 16, RopeTheta: 10000, RopeScaling: "none", DType: "float32"}
			specs, lm, lf, gm, gf := fusedVsMaterialized(t, backend, cfg, tc.nc, 2, 13)
			if math.Abs(lm-lf) > 1e-5*math.Abs(lm) {
				t.Fatalf("loss: materialised %v, fused %v", lm, lf)
			}
			scorerSeen := false
			for i, sp := range specs {
				var scale, diff float64
				for k := range gm[i] {
					scale = math.Max(scale, math.Abs(float64(gm[i][k])))
					diff = math.Max(diff, math.Abs(float64(gm[i][k]-gf[i][k])))
				}
				if diff > 1e-4*scale+1e-7 {
					t.Errorf("%s: max |Δgrad| %.3g (max |grad| %.3g)", sp.Name, diff, scale)
				}
				if sp.Name == model.LayerName(1)+"/nats/scorer" {
					scorerSeen = scale > 1e-6
				}
			}
			if !scorerSeen {
				t.Fatal("the scorer got no gradient: the test does not exercise the carrier")
			}
		})
	}
}

// fusedVsMaterialized returns the loss and the parameter gradients of one NAtS training step (CE + λ term, fixed
// Gumbel noise) with the materialised mask and with the fused path.
func fusedVsMaterialized(t *testing.T, backend compute.Backend, cfg model.Config, nc nats.Config, b, s int) (specs []model.Spec, lm, lf float64, gm, gf [][]float32) {
	t.Helper()
	m, err := nats.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	specs = model.Specs(cfg, m)
	params := model.NewParams(specs, 7)
	tokens := make([]int32, b*(s+1))
	for i := range tokens {
		tokens[i] = int32((i*7 + 3) % cfg.VocabSize)
	}
	run := func(fused bool) (loss float64, grads [][]float32) {
		defer model.SetFusedMasked(fused)()
		n := len(specs)
		exec, err := NewExec(backend, func(in []*Node) []*Node {
			nodes := model.NodesFrom(cfg, specs, in[:n])
			tok := in[n]
			inp := Slice(tok, AxisRange(), AxisRange(0, s))
			tgt := Slice(tok, AxisRange(), AxisRange(1, s+1))
			rng := in[n+1]
			uniform := func(d []int) *Node {
				var u *Node
				rng, u = RandomUniform(rng, shapes.Make(dtypes.Float32, d...))
				return u
			}
			out := model.Forward(cfg, m, nodes, inp, true, uniform)
			ce, _ := model.CrossEntropy(out.Logits, tgt)
			obj := Add(ce, out.Aux)
			return append([]*Node{obj}, Gradient(obj, in[:n]...)...)
		})
		if err != nil {
			t.Fatal(err)
		}
		args := []any{}
		for _, v := range params.Values {
			args = append(args, v)
		}
		st, _ := RNGStateFromSeed(11)
		args = append(args, tensors.FromFlatDataAndDimensions(tokens, b, s+1), st)
		res, err := exec.Exec(args...)
		if err != nil {
			t.Fatal(err)
		}
		loss = float64(tensors.MustCopyFlatData[float32](res[0])[0])
		for _, r := range res[1:] {
			grads = append(grads, tensors.MustCopyFlatData[float32](r))
		}
		return
	}
	lm, gm = run(false)
	lf, gf = run(true)
	return
}
