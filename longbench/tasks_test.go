package longbench

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestTaskTable(t *testing.T) {
	tasks := Tasks()
	if len(tasks) != 21 {
		t.Fatalf("%d tasks, want 21", len(tasks))
	}
	langs := map[Language]int{}
	seen := map[string]bool{}
	total := 0
	for _, ti := range tasks {
		if seen[ti.Name] {
			t.Errorf("duplicate task %q", ti.Name)
		}
		seen[ti.Name] = true
		langs[ti.Language]++
		total += ti.NumTest
		if _, err := Metric(ti.Metric); err != nil {
			t.Errorf("%s: %v", ti.Name, err)
		}
		n, err := MaxNewTokens(ti.Name)
		if err != nil || n != ti.MaxNewTokens {
			t.Errorf("%s: dataset2maxlen.json says %d (%v), table says %d", ti.Name, n, err, ti.MaxNewTokens)
		}
	}
	if langs[English] != 14 || langs[Chinese] != 5 || langs[Code] != 2 {
		t.Errorf("languages %v, want 14 en, 5 zh, 2 code", langs)
	}
	if total != 4750 {
		t.Errorf("total test samples %d, want 4750 (LongBench README)", total)
	}
	wantE := "qasper multifieldqa_en hotpotqa 2wikimqa gov_report multi_news trec triviaqa samsum passage_count passage_retrieval_en lcc repobench-p"
	if got := strings.Join(ETaskNames(), " "); got != wantE {
		t.Errorf("E tasks %q, want pred.py's %q", got, wantE)
	}
	if n := len(EnglishAndCodeTaskNames()); n != 16 {
		t.Errorf("%d EN+code tasks, want 16", n)
	}
	// eval.py's first-line list and pred.py's no-chat list.
	cut := map[string]bool{"trec": true, "triviaqa": true, "samsum": true, "lsht": true}
	noChat := map[string]bool{"trec": true, "triviaqa": true, "samsum": true, "lsht": true, "lcc": true, "repobench-p": true}
	for _, ti := range tasks {
		if ti.FirstLineCut != cut[ti.Name] || ti.ChatTemplate == noChat[ti.Name] {
			t.Errorf("%s: FirstLineCut=%v ChatTemplate=%v", ti.Name, ti.FirstLineCut, ti.ChatTemplate)
		}
	}
	// The embedded config knows exactly the 21 tasks.
	for _, f := range []string{"dataset2prompt.json", "dataset2maxlen.json"} {
		b, err := ConfigFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		if len(m) != 21 {
			t.Errorf("%s has %d entries", f, len(m))
		}
		for k := range m {
			if !seen[k] {
				t.Errorf("%s: unknown task %q", f, k)
			}
		}
	}
	if b, err := ConfigFile("LICENSE.LongBench-MIT"); err != nil || !strings.Contains(string(b), "MIT License") {
		t.Errorf("licence not embedded: %v", err)
	}
}

func TestTaskLookup(t *testing.T) {
	ti, err := Task("repobench-p")
	if err != nil || ti.Metric != MetricCodeSim || ti.Category != CodeCompl {
		t.Errorf("Task(repobench-p) = %+v, %v", ti, err)
	}
	_, err = Task("nosuch")
	if err == nil || !strings.Contains(err.Error(), "narrativeqa") || !strings.Contains(err.Error(), "repobench-p") {
		t.Errorf("unknown-task error should list the known tasks: %v", err)
	}
	_, err = Task("qasper_e")
	if err == nil || !strings.Contains(err.Error(), "SplitE") {
		t.Errorf("Task(qasper_e) error should hint at SplitE: %v", err)
	}
	for in, want := range map[string]string{"qasper_e": "qasper", "qasper": "qasper", "foo_e": "foo_e", "repobench-p_e": "repobench-p"} {
		got, _ := SplitE(in)
		if got != want {
			t.Errorf("SplitE(%q) = %q, want %q", in, got, want)
		}
	}
}
