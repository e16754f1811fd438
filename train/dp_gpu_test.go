//go:build gpu

package train

import (
	"math"
	"os"
	"testing"

	"github.com/gomlx/gomlx/core/tensors"

	"natsbench/model"
	"natsbench/nats"
)

// TestGPUDataParallel trains a small NAtS model 3 steps on two GPUs (train.data_parallel = 2: SPMD, NCCL
// all-reduce) and on one GPU with the same global batch, and compares the rows and the parameters, in float32
// (tight: only the order of the gradient sums differs) and bfloat16; with grad_accum 1 (the fused step) and 2
// (local accumulation, then the all-reduce in the update). It then checkpoints the two-GPU trainer, restores
// the checkpoint into a fresh two-GPU trainer and a one-GPU one, and checks their next step against the
// original's. Every device's copy of the parameters must stay equal to device 0's.
//
//	go test -tags 'xla gpu' -run GPUDataParallel -v ./train    (NATSBENCH_BACKEND, default xla:cuda)
//
// Skipped when the backend has fewer than two devices.
func TestGPUDataParallel(t *testing.T) {
	t.Setenv("NCCL_NVLS_ENABLE", "0") // no NVLink multicast (KINDS.md)
	spec := os.Getenv("NATSBENCH_BACKEND")
	if spec == "" {
		spec = "xla:cuda"
	}
	backend, err := model.NewBackend(spec)
	if err != nil {
		t.Fatal(err)
	}
	if backend.NumDevices() < 2 {
		t.Skipf("backend %s has %d device(s); data parallelism needs 2", backend.Name(), backend.NumDevices())
	}
	mcfg := model.Config{VocabSize: 512, DModel: 128, NLayers: 2, NHeads: 4, NKVHeads: 2, FFNMult: 4,
		MaxSeqLen: 256, RopeTheta: 500000, RopeScaling: "llama3", DType: "float32"}
	for _, c := range []struct {
		name  string
		dtype string
		accum int
		tol   float64 // rows (relative)
		ptol  float64 // parameter updates (relative norm)
	}{{"f32", "float32", 1, 1e-4, 1e-3}, {"f32-accum2", "float32", 2, 1e-4, 1e-3}, {"bf16", "bfloat16", 1, 2e-2, 5e-2}} {
		t.Run(c.name, func(t *testing.T) {
			mc := mcfg
			mc.DType = c.dtype
			cfg := DefaultConfig()
			cfg.Steps, cfg.BatchSize, cfg.SeqLen, cfg.WarmupSteps, cfg.GradAccum = 10, 8, 128, 2, c.accum
			mk := func(n int) *Trainer {
				m, err := nats.New(nats.Config{Lambda: 1e-3, Window: 16, Chunk: 1, Merge: "mean", GlobalBonus: 0.1})
				if err != nil {
					t.Fatal(err)
				}
				cc := cfg
				cc.DataParallel = n
				tr, err := New(backend, mc, m, cc, 1)
				if err != nil {
					t.Fatal(err)
				}
				return tr
			}
			batch := func(step int64) (ins, tgs [][]int32) {
				for k := 0; k < c.accum; k++ {
					in, tg := batchFor(step*int64(c.accum)+int64(k), cfg.BatchSize, cfg.SeqLen, mc.VocabSize)
					ins, tgs = append(ins, in), append(tgs, tg)
				}
				return
			}
			one, two := mk(1), mk(2)
			for step := int64(0); step < 3; step++ {
				in, tg := batch(step)
				ra, err := one.TrainStep(in, tg)
				if err != nil {
					t.Fatal(err)
				}
				rb, err := two.TrainStep(in, tg)
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("step %d: 1 GPU loss %.6f aux %.5f density %.4f gnorm %.5f | 2 GPUs loss %.6f aux %.5f density %.4f gnorm %.5f",
					ra.Step, ra.Loss, ra.Aux, ra.Density, ra.GradNorm, rb.Loss, rb.Aux, rb.Density, rb.GradNorm)
				if !closeRows(ra, rb, c.tol) {
					t.Errorf("step %d: 1 GPU %+v, 2 GPUs %+v", ra.Step, ra, rb)
				}
			}
			compareParams(t, mk(1), one, two, c.ptol)
			checkReplicas(t, two)

			dir := t.TempDir()
			if err := two.Save(dir, 1); err != nil {
				t.Fatal(err)
			}
			again, single := mk(2), mk(1)
			for _, tr := range []*Trainer{again, single} {
				if err := tr.Restore(dir); err != nil {
					t.Fatal(err)
				}
			}
			in, tg := batch(3)
			var rows []Row
			for _, tr := range []*Trainer{two, again, single} {
				r, err := tr.TrainStep(in, tg)
				if err != nil {
					t.Fatal(err)
				}
				rows = append(rows, r)
			}
			if !closeRows(rows[1], rows[0], 1e-6) {
				t.Errorf("2-GPU resume: %+v, uninterrupted %+v", rows[1], rows[0])
			}
			if !closeRows(rows[2], rows[0], c.tol) {
				t.Errorf("1-GPU resume of a 2-GPU checkpoint: %+v, 2 GPUs %+v", rows[2], rows[0])
			}
			checkReplicas(t, again)
		})
	}
}

// compareParams compares the training updates of a and b (parameters minus init's, the untrained
// parameters) tensor by tensor: ‖Δa − Δb‖ / ‖Δa‖ ≤ tol. Adam divides each gradient by its own magnitude, so
// an element whose gradient is ~0 may move by ±lr on either side of a float-order change: elementwise bounds
// would be flaky, the relative norm of the update is not.
func compareParams(t *testing.T, init, a, b *Trainer, tol float64) {
	t.Helper()
	var worst float64
	for i, sp := range a.Params.Specs {
		p0, pa, pb := init.Params.Flat(i), a.Params.Flat(i), b.Params.Flat(i)
		var diff, upd float64
		for k := range pa {
			da, db := float64(pa[k]-p0[k]), float64(pb[k]-p0[k])
			diff += (da - db) * (da - db)
			upd += da * da
		}
		if upd == 0 {
			continue
		}
		rel := math.Sqrt(diff / upd)
		worst = math.Max(worst, rel)
		if rel > tol {
			t.Errorf("%s: update differs by %.3g of its norm", sp.Name, rel)
		}
	}
	t.Logf("largest relative difference of a tensor's update: %.3g", worst)
}

// checkReplicas checks that every device's copy of the parameters and moments equals device 0's, bit for bit
// (every device applies the same update to the same all-reduced gradients).
func checkReplicas(t *testing.T, tr *Trainer) {
	t.Helper()
	ref := tr.state(0)
	for d := 1; d < tr.dp; d++ {
		for i, x := range tr.state(d) {
			a, b := tensors.MustCopyFlatData[float32](ref[i]), tensors.MustCopyFlatData[float32](x)
			for k := range a {
				if a[k] != b[k] {
					t.Errorf("device %d, state tensor %d [%d]: %v, device 0 %v", d, i, k, b[k], a[k])
					break
				}
			}
		}
	}
}
