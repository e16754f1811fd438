package train

import (
	"math"
	"slices"
	"strings"
	"testing"

	"natsbench/model"
	"natsbench/nats"
)

func TestShardRows(t *testing.T) {
	flat := []int32{0, 1, 2, 3, 4, 5, 6, 7} // 4 rows of 2
	sh, err := ShardRows(flat, 4, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(sh) != 2 || !slices.Equal(sh[0], []int32{0, 1, 2, 3}) || !slices.Equal(sh[1], []int32{4, 5, 6, 7}) {
		t.Fatalf("shards %v", sh)
	}
	if _, err := ShardRows(flat, 4, 3); err == nil {
		t.Fatal("4 rows over 3 devices: no error")
	}
}

func TestDataParallelValidation(t *testing.T) {
	c := tinyTrain()
	c.DataParallel = 3
	err := c.Validate()
	if err == nil || !strings.Contains(err.Error(), "train.data_parallel = 3") || !strings.Contains(err.Error(), "train.batch_size = 4") {
		t.Fatalf("batch 4 over 3 devices: %v", err)
	}
	c.DataParallel = -1
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "train.data_parallel") {
		t.Fatalf("data_parallel -1: %v", err)
	}
	c.DataParallel = 2
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	backend, err := model.NewBackend("go")
	if err != nil {
		t.Fatal(err)
	}
	_, err = New(backend, tinyModel(), nil, c, 1)
	if err == nil || !strings.Contains(err.Error(), "train.data_parallel = 2") || !strings.Contains(err.Error(), "has 1 device") {
		t.Fatalf("2 devices on the Go backend: %v", err)
	}
}

func natsMasker(t *testing.T) model.Masker {
	t.Helper()
	m, err := nats.New(nats.Config{Lambda: 1e-2, Window: 4, Chunk: 1, GlobalBonus: 0.1})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestDataParallelOneIsOrdinary: data_parallel = 1 is the ordinary trainer, bit for bit.
func TestDataParallelOneIsOrdinary(t *testing.T) {
	cfg := tinyTrain()
	a := newTrainer(t, natsMasker(t), cfg)
	cfg.DataParallel = 1
	b := newTrainer(t, natsMasker(t), cfg)
	for step := 0; step < 3; step++ {
		in, tg := batchFor(int64(step), 4, 16, 32)
		ra, err := a.TrainStep([][]int32{in}, [][]int32{tg})
		if err != nil {
			t.Fatal(err)
		}
		rb, err := b.TrainStep([][]int32{in}, [][]int32{tg})
		if err != nil {
			t.Fatal(err)
		}
		ra.Seconds, rb.Seconds = 0, 0
		if ra != rb {
			t.Fatalf("step %d: %+v vs %+v", step, ra, rb)
		}
	}
	for i := range a.Params.Specs {
		if !slices.Equal(a.Params.Flat(i), b.Params.Flat(i)) {
			t.Fatalf("parameter %s differs", a.Params.Specs[i].Name)
		}
	}
}

// simulated returns a data-parallel trainer whose n shards run one after another on the Go backend.
func simulated(t *testing.T, m model.Masker, cfg Config, n int) *Trainer {
	t.Helper()
	backend, err := model.NewBackend("go")
	if err != nil {
		t.Fatal(err)
	}
	cfg.DataParallel = n
	tr, err := newWith(backend, tinyModel(), m, cfg, 1, true)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func closeRows(a, b Row, tol float64) bool {
	near := func(x, y float64) bool {
		return math.Abs(x-y) <= tol*math.Max(1, math.Abs(y)) || (math.IsNaN(x) && math.IsNaN(y))
	}
	return a.Step == b.Step && a.Tokens == b.Tokens && a.LR == b.LR && near(a.Loss, b.Loss) && near(a.Aux, b.Aux) &&
		near(a.Density, b.Density) && near(a.GradNorm, b.GradNorm)
}

// TestDataParallelSimulatedMatchesOneDevice: the data-parallel step (shards, their noise, the gradient mean, the
// update), simulated on one device, equals the one-device step on the whole batch up to float order, for full
// attention and NAtS (Gumbel noise and the λ term), without and with gradient accumulation, over 2 and 4 shards.
func TestDataParallelSimulatedMatchesOneDevice(t *testing.T) {
	for _, c := range []struct {
		name         string
		nats         bool
		devices, acc int
	}{{"full/2", false, 2, 1}, {"nats/2", true, 2, 1}, {"nats/4", true, 4, 1}, {"nats/2/accum2", true, 2, 2}} {
		t.Run(strings.ReplaceAll(c.name, "/", "-"), func(t *testing.T) {
			var m1, m2 model.Masker
			if c.nats {
				m1, m2 = natsMasker(t), natsMasker(t)
			}
			cfg := tinyTrain()
			cfg.GradAccum = c.acc
			one := newTrainer(t, m1, cfg)
			dp := simulated(t, m2, cfg, c.devices)
			for step := 0; step < 3; step++ {
				var ins, tgs [][]int32
				for k := 0; k < c.acc; k++ {
					in, tg := batchFor(int64(step*c.acc+k), 4, 16, 32)
					ins, tgs = append(ins, in), append(tgs, tg)
				}
				ra, err := one.TrainStep(ins, tgs)
				if err != nil {
					t.Fatal(err)
				}
				rb, err := dp.TrainStep(ins, tgs)
				if err != nil {
					t.Fatal(err)
				}
				if c.nats && (ra.Aux == 0 || math.IsNaN(ra.Density)) {
					t.Fatalf("NAtS row without aux or density: %+v", ra)
				}
				if !closeRows(ra, rb, 1e-5) {
					t.Fatalf("step %d: one device %+v, data-parallel %+v", step, ra, rb)
				}
			}
			for i, sp := range one.Params.Specs {
				pa, pb := one.Params.Flat(i), dp.Params.Flat(i)
				for k := range pa {
					if math.Abs(float64(pa[k]-pb[k])) > 1e-5*math.Max(1, math.Abs(float64(pa[k]))) {
						t.Fatalf("%s[%d]: one device %v, data-parallel %v", sp.Name, k, pa[k], pb[k])
					}
				}
			}
		})
	}
}

// TestDataParallelCheckpointsInterchange: a checkpoint of the one-device trainer resumes in a data-parallel one
// and the reverse (one format), and the resumed steps agree.
func TestDataParallelCheckpointsInterchange(t *testing.T) {
	cfg := tinyTrain()
	one := newTrainer(t, natsMasker(t), cfg)
	dp := simulated(t, natsMasker(t), cfg, 2)
	for step := 0; step < 2; step++ {
		in, tg := batchFor(int64(step), 4, 16, 32)
		if _, err := one.TrainStep([][]int32{in}, [][]int32{tg}); err != nil {
			t.Fatal(err)
		}
		if _, err := dp.TrainStep([][]int32{in}, [][]int32{tg}); err != nil {
			t.Fatal(err)
		}
	}
	d1, d2 := t.TempDir(), t.TempDir()
	if err := one.Save(d1, 1); err != nil {
		t.Fatal(err)
	}
	if err := dp.Save(d2, 1); err != nil {
		t.Fatal(err)
	}
	fromOne := simulated(t, natsMasker(t), cfg, 2)
	fromDP := newTrainer(t, natsMasker(t), cfg)
	if err := fromOne.Restore(d1); err != nil {
		t.Fatal(err)
	}
	if err := fromDP.Restore(d2); err != nil {
		t.Fatal(err)
	}
	in, tg := batchFor(2, 4, 16, 32)
	var rows []Row
	for _, tr := range []*Trainer{one, dp, fromOne, fromDP} {
		if tr.Step != 2 {
			t.Fatalf("step %d after restore, want 2", tr.Step)
		}
		r, err := tr.TrainStep([][]int32{in}, [][]int32{tg})
		if err != nil {
			t.Fatal(err)
		}
		rows = append(rows, r)
	}
	for i, r := range rows[1:] {
		if !closeRows(r, rows[0], 1e-5) {
			t.Fatalf("trainer %d: %+v, one device %+v", i+1, r, rows[0])
		}
	}
}
