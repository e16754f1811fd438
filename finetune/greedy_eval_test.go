package finetune

import (
	"math"
	"strings"
	"testing"

	"natsbench/llama"
	"natsbench/model"
)

// byteTok is a reversible tokenizer for tests: ASCII bytes b are ids b+3, and every id can be written as the
// rune 0x100+id, so any generated id sequence decodes to a string that encodes back to it.
type byteTok struct{}

func (byteTok) Encode(s string) []int {
	var ids []int
	for _, r := range s {
		if r >= 0x100 {
			ids = append(ids, int(r-0x100))
		} else {
			ids = append(ids, int(r)+3)
		}
	}
	return ids
}
func (byteTok) Decode(ids []int) string {
	var sb strings.Builder
	for _, id := range ids {
		sb.WriteRune(rune(0x100 + id))
	}
	return sb.String()
}
func (byteTok) BOS() int       { return 1 }
func (byteTok) EOS() int       { return -1 }
func (byteTok) VocabSize() int { return 259 }

// TestEvalPasskeyFullMatchesRunner: with full attention, EvalPasskey's greedy answer (repeated masked forward)
// equals llama.Runner.GenerateNoCache's (checked against transformers elsewhere): the sample whose answer is the
// runner's output scores 1, one with another answer 0; the KV fraction is 1.
func TestEvalPasskeyFullMatchesRunner(t *testing.T) {
	base := tinyBase(t)
	backend, err := model.NewBackend("go")
	if err != nil {
		t.Fatal(err)
	}
	ctx := "the quiet town by the river kept the first passkey: alfa bravo. Passkey: "
	prompt := append([]int{1}, byteTok{}.Encode(ctx)...)
	gen, err := llama.NewRunner(backend, base).GenerateNoCache(prompt, 6)
	if err != nil {
		t.Fatal(err)
	}
	want := byteTok{}.Decode(gen)
	res, err := EvalPasskey(backend, base, byteTok{}, nil, nil, []Passkey{{Context: ctx, Answer: want}, {Context: ctx, Answer: want + "x"}}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if res.Accuracy != 0.5 || res.KVFraction != 1 || res.N != 2 {
		t.Fatalf("full attention: %+v, want accuracy 0.5 (runner's answer %q found, the other not), kv 1", res, want)
	}
}

// TestEvalPasskeyStreamingKV: StreamingLLM's KV fraction is the analytic mean over prompt rows of
// min(i+1, budget)/(i+1).
func TestEvalPasskeyStreamingKV(t *testing.T) {
	base := tinyBase(t)
	backend, err := model.NewBackend("go")
	if err != nil {
		t.Fatal(err)
	}
	ctx := "a short haystack with a passkey in it: alfa. Passkey: "
	budget := 16
	res, err := EvalPasskey(backend, base, byteTok{}, model.SinkWindow{Sinks: 4, Budget: budget}, nil, []Passkey{{Context: ctx, Answer: "alfa"}}, 0)
	if err != nil {
		t.Fatal(err)
	}
	n := len(ctx) + 1 // BOS
	var want float64
	for i := 0; i < n; i++ {
		want += float64(min(i+1, budget)) / float64(i+1)
	}
	want /= float64(n)
	if math.Abs(res.KVFraction-want) > 1e-5 {
		t.Fatalf("streamingllm kv fraction %v, want %v", res.KVFraction, want)
	}
}

// TestEvalPasskeyNAtS: the adapter's inference mask runs through EvalPasskey and gives a KV fraction in (0, 1];
// with λ large and a window of 4 on a 55-token prompt it must be below full attention's 1.
func TestEvalPasskeyNAtS(t *testing.T) {
	tr := newTrainer(t, 10)
	toks, lab := sample()
	for i := 0; i < 2; i++ {
		if _, err := tr.TrainStep(toks, lab); err != nil {
			t.Fatal(err)
		}
	}
	res, err := EvalPasskey(tr.backend, tr.Base, byteTok{}, tr.Masker, tr.Scorers,
		[]Passkey{{Context: "a short haystack with a passkey in it: alfa. Passkey: ", Answer: "alfa"}}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !(res.KVFraction > 0 && res.KVFraction < 1) {
		t.Fatalf("nats kv fraction %v, want in (0, 1)", res.KVFraction)
	}
	t.Logf("nats: %+v", res)
}
