package llama

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode"
)

const (
	aidreamsBin = "testdata/aidreams260K.bin"
	aidreamsTok = "testdata/tok512.bin"
)

func TestAidreamsGreedyMatchesReference(t *testing.T) {
	m, err := LoadLlama2C(aidreamsBin)
	if err != nil {
		t.Fatal(err)
	}
	c := m.Config
	if c.HiddenSize != 64 || c.NumLayers != 4 || c.NumHeads != 4 || c.VocabSize != 512 || c.MaxPositions != 128 ||
		!c.TieEmbeddings || c.RopeLayout != RopeInterleaved {
		t.Fatalf("config %+v", c)
	}
	tok, err := LoadTokenizerFor(aidreamsTok, c)
	if err != nil {
		t.Fatal(err)
	}
	ref := refLoadLlama2C(t, aidreamsBin)
	prompt := append([]int{tok.BOS()}, tok.Encode("Once upon a time")...)
	const n = 60
	start := time.Now()
	want := ref.greedy(prompt, n)
	t.Logf("reference (plain Go, full recompute): %v", time.Since(start))

	r := NewRunner(goBackend(t), m)
	if _, err := r.Generate(prompt, 2); err != nil { // compile
		t.Fatal(err)
	}
	start = time.Now()
	got, err := r.Generate(prompt, n)
	if err != nil {
		t.Fatal(err)
	}
	el := time.Since(start)
	t.Logf("GoMLX Generate with KV cache: %d tokens in %v (%.0f tokens/s, after compilation)", len(got), el, float64(len(got))/el.Seconds())
	// Generate stops after BOS/EOS (run.c stops at BOS); the reference does not.
	if len(got) == 0 || !equalInts(got, want[:len(got)]) || (len(got) < n && !c.IsEOS(got[len(got)-1])) {
		t.Fatalf("greedy tokens differ:\n got %v\nwant %v", got, want)
	}
	if len(got) < n/2 {
		t.Fatalf("generation stopped after %d tokens", len(got))
	}
	start = time.Now()
	noCache, err := r.GenerateNoCache(prompt, 20) // slow: a full forward per token
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("GoMLX GenerateNoCache: 20 tokens in %v (a full forward of %d positions per token)", time.Since(start), capacityFor(len(prompt)+20))
	if !equalInts(noCache, got[:min(20, len(got))]) {
		t.Fatalf("GenerateNoCache differs:\n got %v\nwant %v", noCache, want)
	}
	text := tok.Decode(append(append([]int{}, prompt...), got...))
	t.Logf("aidreams260K greedy: %q", text)
	if !englishLike(text) {
		t.Errorf("decoded text does not look like English: %q", text)
	}

	// Logits of every position agree with the reference.
	seq := append(append([]int{}, prompt...), got...)
	lg, err := r.Forward([][]int{seq})
	if err != nil {
		t.Fatal(err)
	}
	refLg := ref.logitsAll(seq)
	worst := 0.0
	for s := range seq {
		d, _ := maxAbsDiff(lg.At(0, s), refLg[s])
		worst = max(worst, d)
	}
	t.Logf("max |logit − reference| over %d positions: %.2g", len(seq), worst)
	if worst > 1e-4 {
		t.Errorf("logits differ from the reference by %g", worst)
	}

	// The same model converted to the HF rotate_half layout gives the same logits.
	half := m.ToHalfLayout()
	lh, err := NewRunner(goBackend(t), half).Forward([][]int{seq})
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := maxAbsDiff(lh.Data, lg.Data); d > 1e-4 {
		t.Errorf("ToHalfLayout changes the logits by %g", d)
	}
	// Saved as a HF folder and loaded back, it is the same model (the interleaved one cannot be saved).
	dir := t.TempDir()
	if err := m.Save(dir, "F32"); err == nil {
		t.Error("Save of an interleaved-RoPE model: no error")
	}
	if err := half.Save(dir, "F32"); err != nil {
		t.Fatal(err)
	}
	back, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	lb, err := NewRunner(goBackend(t), back).Forward([][]int{seq})
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := maxAbsDiff(lb.Data, lh.Data); d != 0 {
		t.Errorf("Save + Load changes the logits by %g", d)
	}
}

func englishLike(s string) bool {
	letters, other := 0, 0
	for _, r := range s {
		switch {
		case unicode.IsLetter(r) && r < 128, r == ' ', r == '\n', strings.ContainsRune(".,;:'\"!?-", r):
			letters++
		default:
			other++
		}
	}
	words := 0
	for _, w := range strings.Fields(strings.ToLower(s)) {
		switch strings.Trim(w, ".,;:'\"!?") {
		case "the", "a", "an", "and", "i", "of", "to", "was", "in", "into", "my", "it", "that", "with", "as", "like", "is":
			words++
		}
	}
	return letters > 0 && float64(other) < 0.05*float64(letters+other) && words >= 3
}

func TestLlama2CBadInput(t *testing.T) {
	dir := t.TempDir()
	data, err := os.ReadFile(aidreamsBin)
	if err != nil {
		t.Fatal(err)
	}
	trunc := filepath.Join(dir, "trunc.bin")
	if err := os.WriteFile(trunc, data[:len(data)-100], 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadLlama2C(trunc); err == nil || !strings.Contains(err.Error(), trunc) || !strings.Contains(err.Error(), "truncated") {
		t.Errorf("truncated checkpoint: err = %v", err)
	}
	short := filepath.Join(dir, "short.bin")
	os.WriteFile(short, data[:10], 0o644)
	if _, err := LoadLlama2C(short); err == nil || !strings.Contains(err.Error(), short) {
		t.Errorf("short checkpoint: err = %v", err)
	}
	tdata, _ := os.ReadFile(aidreamsTok)
	ttrunc := filepath.Join(dir, "tok.bin")
	os.WriteFile(ttrunc, tdata[:len(tdata)-3], 0o644)
	if _, err := LoadTokenizer(ttrunc); err == nil || !strings.Contains(err.Error(), ttrunc) {
		t.Errorf("truncated tokenizer: err = %v", err)
	}
	m, _ := LoadLlama2C(aidreamsBin)
	c := m.Config
	c.VocabSize = 100
	if _, err := LoadTokenizerFor(aidreamsTok, c); err == nil || !strings.Contains(err.Error(), aidreamsTok) {
		t.Errorf("tokenizer larger than the model: err = %v", err)
	}
}
