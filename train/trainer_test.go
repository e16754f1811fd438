package train

import (
	"math"
	"math/rand/v2"
	"testing"

	"natsbench/model"
	"natsbench/nats"
)

func tinyModel() model.Config {
	return model.Config{VocabSize: 32, DModel: 16, NLayers: 2, NHeads: 2, FFNMult: 2, MaxSeqLen: 64,
		RopeTheta: 10000, RopeScaling: "none", DType: "float32"}
}

func tinyTrain() Config {
	c := DefaultConfig()
	c.Steps, c.BatchSize, c.SeqLen, c.WarmupSteps, c.LR, c.MinLR, c.GradClip = 30, 4, 16, 3, 1e-2, 1e-3, 1.0
	return c
}

// batchFor returns a learnable batch: each sequence counts up modulo the vocabulary from a random start.
func batchFor(step int64, b, s, vocab int) (in, tg []int32) {
	r := rand.New(rand.NewPCG(uint64(step), 7))
	in, tg = make([]int32, b*s), make([]int32, b*s)
	for i := 0; i < b; i++ {
		start := r.IntN(vocab)
		for j := 0; j < s; j++ {
			in[i*s+j] = int32((start + j) % vocab)
			tg[i*s+j] = int32((start + j + 1) % vocab)
		}
	}
	return
}

func newTrainer(t *testing.T, m model.Masker, cfg Config) *Trainer {
	t.Helper()
	backend, err := model.NewBackend("go")
	if err != nil {
		t.Fatal(err)
	}
	tr, err := New(backend, tinyModel(), m, cfg, 1)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func TestLossFallsFullAndNAtS(t *testing.T) {
	nm, err := nats.New(nats.Config{Lambda: 1e-3, Window: 4, Chunk: 1, GlobalBonus: 0.1})
	if err != nil {
		t.Fatal(err)
	}
	for name, m := range map[string]model.Masker{"full": nil, "nats": nm} {
		t.Run(name, func(t *testing.T) {
			tr := newTrainer(t, m, tinyTrain())
			var first, last float64
			for step := 0; step < 30; step++ {
				in, tg := batchFor(int64(step), 4, 16, 32)
				row, err := tr.TrainStep([][]int32{in}, [][]int32{tg})
				if err != nil {
					t.Fatal(err)
				}
				if step == 0 {
					first = row.Loss
				}
				last = row.Loss
			}
			if !(last < 0.7*first) {
				t.Fatalf("loss did not fall: first %.3f last %.3f", first, last)
			}
			if math.Abs(first-math.Log(32)) > 0.5 {
				t.Errorf("initial loss %.3f, want ≈ ln 32 = %.3f", first, math.Log(32))
			}
		})
	}
}

func TestCheckpointResumeIdentical(t *testing.T) {
	dir := t.TempDir()
	cfg := tinyTrain()
	a := newTrainer(t, nil, cfg)
	for step := 0; step < 3; step++ {
		in, tg := batchFor(int64(step), 4, 16, 32)
		if _, err := a.TrainStep([][]int32{in}, [][]int32{tg}); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Save(dir, 2); err != nil {
		t.Fatal(err)
	}
	b := newTrainer(t, nil, cfg)
	if err := b.Restore(dir); err != nil {
		t.Fatal(err)
	}
	if b.Step != 3 {
		t.Fatalf("restored step %d, want 3", b.Step)
	}
	in, tg := batchFor(3, 4, 16, 32)
	ra, err := a.TrainStep([][]int32{in}, [][]int32{tg})
	if err != nil {
		t.Fatal(err)
	}
	rb, err := b.TrainStep([][]int32{in}, [][]int32{tg})
	if err != nil {
		t.Fatal(err)
	}
	if ra.Loss != rb.Loss || ra.GradNorm != rb.GradNorm {
		t.Fatalf("resumed step differs: %v vs %v", ra, rb)
	}
	la, _, _ := model.NewInference(a.Backend, a.Model, nil, a.Params).Forward(in, 4, 16)
	lb, _, _ := model.NewInference(b.Backend, b.Model, nil, b.Params).Forward(in, 4, 16)
	for i := range la {
		if la[i] != lb[i] {
			t.Fatalf("logit %d differs after resume: %v vs %v", i, la[i], lb[i])
		}
	}
}

func TestGradAccumMatchesBigBatch(t *testing.T) {
	cfg := tinyTrain()
	cfg.GradClip = 0
	big := newTrainer(t, nil, cfg)
	cfg2 := cfg
	cfg2.BatchSize, cfg2.GradAccum = 2, 2
	acc := newTrainer(t, nil, cfg2)
	in, tg := batchFor(0, 4, 16, 32)
	rb, err := big.TrainStep([][]int32{in}, [][]int32{tg})
	if err != nil {
		t.Fatal(err)
	}
	ra, err := acc.TrainStep([][]int32{in[:32], in[32:]}, [][]int32{tg[:32], tg[32:]})
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(ra.Loss-rb.Loss) > 1e-5 || math.Abs(ra.GradNorm-rb.GradNorm) > 1e-4*rb.GradNorm {
		t.Fatalf("accumulated step %+v differs from big batch %+v", ra, rb)
	}
	pa, pb := acc.Params.Flat(0), big.Params.Flat(0)
	for i := range pa {
		if math.Abs(float64(pa[i]-pb[i])) > 1e-6 {
			t.Fatalf("param 0[%d]: %v vs %v", i, pa[i], pb[i])
		}
	}
}

func TestLRSchedule(t *testing.T) {
	c := Config{Steps: 100, WarmupSteps: 10, LR: 1, MinLR: 0.1}
	if got := c.LRAt(0); math.Abs(got-1.0/11) > 1e-12 {
		t.Errorf("LRAt(0) = %v", got)
	}
	if got := c.LRAt(10); got != 1 {
		t.Errorf("LRAt(10) = %v, want 1", got)
	}
	if got := c.LRAt(100); math.Abs(got-0.1) > 1e-12 {
		t.Errorf("LRAt(100) = %v, want 0.1", got)
	}
	if got := c.LRAt(55); math.Abs(got-0.55) > 1e-12 {
		t.Errorf("LRAt(55) = %v, want 0.55 (cosine midpoint)", got)
	}
}
