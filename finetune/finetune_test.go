package finetune

import (
	"math"
	"path/filepath"
	"strings"
	"testing"

	"natsbench/llama"
	"natsbench/model"
	"natsbench/nats"
)

func tinyBase(t *testing.T) *llama.Model {
	t.Helper()
	m, err := llama.Load(filepath.Join("..", "llama", "testdata", "hf-tiny"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func newTrainer(t *testing.T, steps int) *Trainer {
	t.Helper()
	backend, err := model.NewBackend("go")
	if err != nil {
		t.Fatal(err)
	}
	nm, err := nats.New(nats.Config{Lambda: 1e-3, Window: 4, Chunk: 1})
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Steps = steps
	tr, err := New(backend, tinyBase(t), nm, cfg, 1)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func sample() ([]int32, []float32) {
	toks := make([]int32, 48)
	lab := make([]float32, 48)
	for i := range toks {
		toks[i] = int32((i*37 + 11) % 512)
		if i >= 40 {
			lab[i] = 1
		}
	}
	return toks, lab
}

// TestOnlyScorersTrain: after a step the pretrained weights are bit-identical and the scorers moved.
func TestOnlyScorersTrain(t *testing.T) {
	tr := newTrainer(t, 10)
	before := make([][]float32, len(tr.Base.Params.Specs))
	for i := range before {
		before[i] = tr.Base.Params.Flat(i)
	}
	sc0 := tr.Scorers.Flat(0)
	toks, lab := sample()
	row, err := tr.TrainStep(toks, lab)
	if err != nil {
		t.Fatal(err)
	}
	if math.IsNaN(row.Loss) || row.Loss <= 0 {
		t.Fatalf("distillation loss %v: the student with a sparse mask should differ from the teacher", row.Loss)
	}
	for i := range before {
		after := tr.Base.Params.Flat(i)
		for k := range after {
			if after[k] != before[i][k] {
				t.Fatalf("frozen weight %s[%d] changed", tr.Base.Params.Specs[i].Name, k)
			}
		}
	}
	sc1 := tr.Scorers.Flat(0)
	moved := false
	for k := range sc1 {
		if sc1[k] != sc0[k] {
			moved = true
		}
	}
	if !moved {
		t.Fatal("scorer did not change after a step")
	}
}

func TestAdapterRoundTrip(t *testing.T) {
	tr := newTrainer(t, 10)
	toks, lab := sample()
	if _, err := tr.TrainStep(toks, lab); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "adapter.safetensors")
	if err := tr.SaveAdapter(path); err != nil {
		t.Fatal(err)
	}
	m, back, err := LoadAdapter(path, tr.Base)
	if err != nil {
		t.Fatal(err)
	}
	if m.Config().Window != 4 || m.Config().Lambda != 1e-3 {
		t.Fatalf("nats settings lost: %+v", m.Config())
	}
	for i := range tr.Scorers.Specs {
		a, b := tr.Scorers.Flat(i), back.Scorers.Flat(i)
		for k := range a {
			if a[k] != b[k] {
				t.Fatalf("scorer %d[%d]: %v vs %v", i, k, a[k], b[k])
			}
		}
	}
	// Another architecture is refused, naming the file and the fields that differ.
	other := *tr.Base
	other.Config.NumLayers++
	if _, _, err := LoadAdapter(path, &other); err == nil || !strings.Contains(err.Error(), path) ||
		!strings.Contains(err.Error(), "NumLayers 2 (adapter) ≠ 3 (model)") {
		t.Fatalf("adapter loaded onto another architecture: %v", err)
	}
	other = *tr.Base
	other.Config.NumKVHeads = 4
	if _, _, err := LoadAdapter(path, &other); err == nil || !strings.Contains(err.Error(), "NumKVHeads 2 (adapter) ≠ 4 (model)") ||
		strings.Contains(err.Error(), "NumLayers") {
		t.Fatalf("adapter loaded onto another number of KV heads: %v", err)
	}
}

func TestLRMultMatchesOfficialSchedule(t *testing.T) {
	c := Config{Steps: 100}
	for _, tc := range []struct {
		step int
		want float64
	}{{0, 0.1}, {9, 0.5}, {19, 1}, {50, 1}, {80, 1}, {90, 0.5}, {99, 0.1}} {
		if got := c.LRMult(tc.step); math.Abs(got-tc.want) > 1e-12 {
			t.Errorf("LRMult(%d) = %v, want %v", tc.step, got, tc.want)
		}
	}
}

func TestPasskeyDeterministicAndComplete(t *testing.T) {
	hay := strings.Repeat("the river ran past the old mill and into the quiet town ", 40)
	a, err := NewPasskey(hay, 3, 4, 7, 1)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := NewPasskey(hay, 3, 4, 7, 1)
	if a.Context != b.Context || a.Answer != b.Answer {
		t.Fatal("same (seed, index) gave different samples")
	}
	for k, key := range a.Passkeys {
		if !strings.Contains(a.Context, "the "+ordinals[k]+" passkey to the vault: "+key+".") {
			t.Fatalf("needle %d missing", k)
		}
	}
	if !strings.HasSuffix(a.Context, "passkey to the vault?\nPasskey: ") || len(strings.Fields(a.Answer)) != 4 {
		t.Fatalf("question/answer malformed: %q / %q", a.Context[len(a.Context)-80:], a.Answer)
	}
	if _, err := NewPasskey("too short", 3, 4, 1, 1); err == nil {
		t.Fatal("short haystack accepted")
	}
}
