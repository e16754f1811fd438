//go:build gpu

package model_test

import (
	"fmt"
	"math"
	"os"
	"testing"

	"natsbench/model"
	"natsbench/nats"
)

// TestGPUFusedCarrier runs the fused/materialised comparison in bfloat16 on CUDA, where the fused path is cuDNN
// flash attention with the hard mask as a bias, for every formulation of the carrier's backward pass
// (model.CarrierVariants): go test -tags 'xla gpu' -run GPU ./model (NATSBENCH_BACKEND, default xla:cuda). bf16
// changes the order and precision of both paths, so gradients are compared by cosine similarity and norm ratio per
// parameter.
func TestGPUFusedCarrier(t *testing.T) {
	spec := os.Getenv("NATSBENCH_BACKEND")
	if spec == "" {
		spec = "xla:cuda"
	}
	backend, err := model.NewBackend(spec)
	if err != nil {
		t.Fatal(err)
	}
	cfg := model.Config{VocabSize: 512, DModel: 128, NLayers: 2, NHeads: 4, NKVHeads: 2, FFNMult: 4,
		MaxSeqLen: 256, RopeTheta: 500000, RopeScaling: "llama3", DType: "bfloat16"}
	for _, nc := range []nats.Config{
		{Lambda: 1e-4, Window: 16, Chunk: 1, Merge: "mean"},
		{Lambda: 1e-4, Window: 16, Chunk: 4, Merge: "mean"},
	} {
		specs, lm, gm := natsStep(t, backend, cfg, nc, 4, 256, false)
		for _, variant := range model.CarrierVariants {
			name := variant
			if name == "" {
				name = "default"
			}
			t.Run(fmt.Sprintf("chunk%d/%s", nc.Chunk, name), func(t *testing.T) {
				t.Setenv("NATSBENCH_CARRIER", variant)
				_, lf, gf := natsStep(t, backend, cfg, nc, 4, 256, true)
				t.Logf("loss materialised %.5f fused %.5f", lm, lf)
				if math.Abs(lm-lf) > 2e-2*math.Abs(lm) {
					t.Errorf("loss: materialised %v, fused %v", lm, lf)
				}
				for i, sp := range specs {
					var dot, na, nb float64
					for k := range gm[i] {
						a, b := float64(gm[i][k]), float64(gf[i][k])
						dot, na, nb = dot+a*b, na+a*a, nb+b*b
					}
					if na == 0 && nb == 0 {
						continue
					}
					cos, ratio := dot/math.Sqrt(na*nb), math.Sqrt(nb/na)
					if cos < 0.98 || ratio < 0.95 || ratio > 1.05 {
						t.Errorf("%s: cosine %.4f, norm ratio %.4f", sp.Name, cos, ratio)
					}
				}
			})
		}
	}
}
