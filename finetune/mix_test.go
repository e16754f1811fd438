package finetune

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"natsbench/longbench"
)

const lbFixture = "../testdata/longbench" // real LongBench rows (lcc, qasper, trec) and generated passage_retrieval_en

func TestLongBenchSources(t *testing.T) {
	all, err := LongBenchSources(lbFixture, 0, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 6 {
		t.Fatalf("%d rows, want 6 (1 lcc + 3 passage_retrieval_en + 1 qasper + 1 trec)", len(all))
	}
	d, err := longbench.ReadFile(filepath.Join(lbFixture, "trec.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	want, _ := longbench.BuildPrompt("trec", d.Samples[0])
	var trec *TrainSample
	for i := range all {
		if all[i].Source == "trec" {
			trec = &all[i]
		}
	}
	if trec == nil || trec.Prompt != want || trec.Answer != d.Samples[0].Answers[0] {
		t.Fatalf("trec row not formatted with its LongBench prompt and first answer: %+v", trec)
	}
	if per, _ := LongBenchSources(lbFixture, 1, 0, 0); len(per) != 4 {
		t.Fatalf("perSource 1: %d rows, want one per task (4)", len(per))
	}
	if _, err := LongBenchSources(lbFixture, 0, 1<<30, 0); err == nil || !strings.Contains(err.Error(), lbFixture) {
		t.Fatalf("no row in the length range: err = %v", err)
	}
	dir := t.TempDir()
	bad := filepath.Join(dir, "not_a_task.jsonl")
	os.WriteFile(bad, []byte(`{"input":"q","context":"c","answers":["a"],"length":1}`+"\n"), 0o644)
	if _, err := LongBenchSources(dir, 0, 0, 0); err == nil || !strings.Contains(err.Error(), bad) {
		t.Fatalf("unknown task file: err = %v", err)
	}
}

func TestMixDeterministicAndRatio(t *testing.T) {
	lb, err := LongBenchSources(lbFixture, 0, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	hay := strings.Repeat("the river ran past the old mill and into the quiet town ", 40)
	m := Mix{LongBench: lb, Ratio: 0.3, Haystacks: []string{hay}, NumKeys: 2, KeyWords: 3}
	n, nlb := 1000, 0
	for i := 0; i < n; i++ {
		a, err := m.Sample(5, uint64(i))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := m.Sample(5, uint64(i))
		if a != b {
			t.Fatalf("sample %d differs between two draws", i)
		}
		if a.Source != "passkey" {
			nlb++
		}
	}
	if f := float64(nlb) / float64(n); f < 0.25 || f > 0.35 { // ±3.5σ of a binomial(1000, 0.3)
		t.Fatalf("LongBench share %.3f, want about 0.3", f)
	}
	for _, tc := range []struct {
		m    Mix
		want string
	}{{Mix{Ratio: 0.5, Haystacks: []string{hay}}, "needs LongBench"}, {Mix{Ratio: 0.5, LongBench: lb}, "haystacks"},
		{Mix{Ratio: 1.5, LongBench: lb}, "outside"}} {
		if _, err := tc.m.Sample(1, 1); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: err = %v, want %q", tc.m.Ratio, err, tc.want)
		}
	}
	only := Mix{LongBench: lb, Ratio: 1}
	if s, err := only.Sample(1, 2); err != nil || s.Source == "passkey" {
		t.Fatalf("ratio 1 without haystacks: %+v, %v", s, err)
	}
}
