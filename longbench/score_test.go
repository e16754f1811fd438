package longbench

import (
	"math"
	"testing"
)

func TestScoreSampleRealRows(t *testing.T) {
	for _, tc := range []struct {
		task, pred string
		want       float64
	}{
		{"qasper", "By conducting a survey among engineers", 1},
		{"qasper", "unanswerable", 1}, // max over answers: "Unanswerable"
		{"qasper", "a survey of engineers", 0.5},
		{"qasper", "", 0},
		{"trec", "Definition of something", 1},
		{"trec", "\n\nDefinition of something\nQuestion: What is x ?", 1}, // first-line cut
		{"trec", "Type: Description of something\nDefinition of something", 0},
		{"trec", "Description of something or Definition of something", 0.5},
		{"lcc", "\t\tif(beans == null)", 1},
		{"lcc", "if (beans == null)", 0.92},
		{"lcc", "// check\n\t\tif(beans == null)\n\t\t\treturn null;", 1},
		{"lcc", "", 0},
	} {
		s := readRealRow(t, tc.task)
		got := ScoreSample(tc.task, tc.pred, s.Answers, s.AllClasses)
		if !near(got, tc.want) {
			t.Errorf("%s: ScoreSample(%q) = %v, want %v", tc.task, tc.pred, got, tc.want)
		}
		if e := ScoreSample(tc.task+"_e", tc.pred, s.Answers, s.AllClasses); e != got {
			t.Errorf("%s_e scores %v, %s scores %v", tc.task, e, tc.task, got)
		}
	}
	if v := ScoreSample("nosuch", "x", []string{"x"}, nil); !math.IsNaN(v) {
		t.Errorf("unknown task scored %v, want NaN", v)
	}
	if v := ScoreSample("qasper", "x", nil, nil); v != 0 {
		t.Errorf("no answers scored %v", v)
	}
	if FirstLine("\n\na\nb") != "a" || FirstLine("") != "" || FirstLine("x") != "x" || FirstLine("\n") != "" {
		t.Error("FirstLine")
	}
}

func TestScoreTask(t *testing.T) {
	ans := []string{"cat"}
	preds := []Prediction{
		{Pred: "cat", Answers: ans, Length: 100},
		{Pred: "cat dog dog", Answers: ans, Length: 5000},
		{Pred: "dog", Answers: ans, Length: 3999},
		{Pred: "the cat", Answers: ans, Length: 4000},
	}
	score, per := ScoreTask("qasper", preds)
	if !near(score, 100*(1+0.5+0+1)/4.0) || len(per) != 4 || per[1] != 0.5 {
		t.Errorf("ScoreTask = %v, %v", score, per)
	}
	if s, _ := ScoreTask("qasper", nil); !math.IsNaN(s) {
		t.Errorf("empty ScoreTask = %v", s)
	}
	b, c, _ := ScoreTaskE("qasper", preds)
	if b["0-4k"] != 50 || b["4-8k"] != 75 || !math.IsNaN(b["8k+"]) || c["0-4k"] != 2 || c["4-8k"] != 2 || c["8k+"] != 0 {
		t.Errorf("ScoreTaskE = %v, %v", b, c)
	}
	for l, want := range map[int]string{0: "0-4k", 3999: "0-4k", 4000: "4-8k", 7999: "4-8k", 8000: "8k+", 100000: "8k+"} {
		if got := BucketOf(l); got != want {
			t.Errorf("BucketOf(%d) = %q, want %q", l, got, want)
		}
	}
}

func TestNumpyMean(t *testing.T) {
	// Pairwise summation differs from a running sum: 8 accumulators.
	a := []float64{1e16, 1, 1, 1, 1, 1, 1, 1}
	if got := npPairwiseSum(a); got != 1e16+6 {
		t.Errorf("pairwise sum = %v, want 1e16+6", got)
	}
	seq := 0.0
	for _, v := range a {
		seq += v
	}
	if seq != 1e16 {
		t.Errorf("running sum = %v", seq)
	}
	// Small lists are summed in order; large ones split in halves of
	// multiples of 8.
	x, y, z := 0.1, 0.2, 0.3
	if got := npPairwiseSum([]float64{x, y, z}); got != (x+y)+z {
		t.Errorf("small sum %v", got)
	}
	big := make([]float64, 300)
	for i := range big {
		big[i] = 1
	}
	if npMean(big) != 1 || !math.IsNaN(npMean(nil)) {
		t.Error("npMean")
	}
}

func TestSummarize(t *testing.T) {
	all := map[string]float64{}
	for _, n := range TaskNames() {
		all[n] = 50
	}
	s := Summarize(all)
	if s.AvgEN != 50 || s.AvgZH != 50 || s.Mean16 != 50 || s.N16 != 16 || len(s.Missing) != 0 ||
		len(s.CategoryEN) != 6 || len(s.CategoryZH) != 6 {
		t.Errorf("Summarize(all 50) = %+v", s)
	}
	s = Summarize(map[string]float64{"qasper": 40, "narrativeqa": 60, "lcc": 30, "vcsum": 10, "other": 99})
	if s.CategoryEN[SingleDocQA] != 50 || s.CategoryEN[CodeCompl] != 30 || s.AvgEN != 40 ||
		!near(s.Mean16, 130.0/3) || s.N16 != 3 || s.CategoryZH[Summarization] != 10 || s.AvgZH != 20 ||
		len(s.Missing) != 17 {
		t.Errorf("Summarize(partial) = %+v", s)
	}
	if s := Summarize(nil); !math.IsNaN(s.AvgEN) || !math.IsNaN(s.Mean16) {
		t.Errorf("Summarize(nil) = %+v", s)
	}
	// Category means first: EN avg is not the plain task mean.
	s = Summarize(map[string]float64{"narrativeqa": 0, "qasper": 0, "multifieldqa_en": 0, "hotpotqa": 90})
	if s.AvgEN != 45 || s.Mean16 != 22.5 {
		t.Errorf("AvgEN %v Mean16 %v", s.AvgEN, s.Mean16)
	}
}
