package longbench

import (
	"strings"
	"testing"
)

func readRealRow(t *testing.T, task string) Sample {
	t.Helper()
	d, err := ReadFile("testdata/" + task + ".jsonl")
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Errors) != 0 || len(d.Samples) != 1 {
		t.Fatalf("%s: %d samples, errors %v", task, len(d.Samples), d.Errors)
	}
	return d.Samples[0]
}

func TestBuildPromptRealRows(t *testing.T) {
	for _, tc := range []struct {
		task, prefix, suffix string
	}{
		{"qasper", "You are given a scientific article and a question. Answer the question as concisely as you can",
			"Do not provide any explanation.\n\nQuestion: How do the authors evidence the claim that many engineers find it a big overhead to choose from multiple frameworks, models and optimization techniques?\n\nAnswer:"},
		{"trec", "Please determine the type of the question below. Here are some examples of questions.\n\nQuestion: What is commonly considered the fifth sense ?\nType: Definition of something\n",
			"Type: Other location\nQuestion: What is home equity ?\nType:"},
		{"lcc", "Please complete the code given below. \n//####", "TumourGroupListVoCollection();\nNext line of code:\n"},
	} {
		s := readRealRow(t, tc.task)
		p, err := BuildPrompt(tc.task, s)
		if err != nil {
			t.Fatalf("%s: %v", tc.task, err)
		}
		if !strings.HasPrefix(p, tc.prefix) {
			t.Errorf("%s: prompt starts %q", tc.task, p[:min(len(p), 120)])
		}
		if !strings.HasSuffix(p, tc.suffix) {
			t.Errorf("%s: prompt ends %q", tc.task, p[max(0, len(p)-160):])
		}
		if !strings.Contains(p, s.Context) {
			t.Errorf("%s: context not in prompt", tc.task)
		}
		tmpl, _ := PromptTemplate(tc.task)
		want := strings.NewReplacer("{context}", s.Context, "{input}", s.Input).Replace(tmpl)
		if p != want {
			t.Errorf("%s: prompt differs from plain substitution", tc.task)
		}
	}
	// The LongBench-E name uses the same template.
	s := readRealRow(t, "qasper")
	a, _ := BuildPrompt("qasper", s)
	b, err := BuildPrompt("qasper_e", s)
	if err != nil || a != b {
		t.Errorf("qasper_e prompt differs: %v", err)
	}
}

func TestAllTemplatesFormat(t *testing.T) {
	s := Sample{Input: "IN{x}", Context: "CTX}{"}
	hot, _ := PromptTemplate("hotpotqa")
	for _, name := range TaskNames() {
		p, err := BuildPrompt(name, s)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if !strings.Contains(p, "CTX}{") || strings.Contains(p, "{context}") || strings.Contains(p, "{input}") {
			t.Errorf("%s: bad prompt %q", name, p)
		}
		if name == "2wikimqa" || name == "musique" {
			if tm, _ := PromptTemplate(name); tm != hot {
				t.Errorf("%s template differs from hotpotqa", name)
			}
		}
	}
	if _, err := BuildPrompt("nosuch", s); err == nil {
		t.Error("unknown task accepted")
	}
}

func TestFormatTemplate(t *testing.T) {
	s := Sample{Input: "Q", Context: "C", Dataset: "d", Language: "en", ID: "id1", Length: 42, Answers: []string{"a"}}
	for _, tc := range []struct{ tmpl, want string }{
		{"", ""},
		{"plain", "plain"},
		{"{context}|{input}", "C|Q"},
		{"{{context}}", "{context}"},
		{"{{{input}}}", "{Q}"},
		{"}}{{", "}{"},
		{"{dataset}/{language}/{_id}/{length}", "d/en/id1/42"},
		{"中文{input}：", "中文Q："},
	} {
		got, err := FormatTemplate(tc.tmpl, s)
		if err != nil || got != tc.want {
			t.Errorf("FormatTemplate(%q) = %q, %v; want %q", tc.tmpl, got, err, tc.want)
		}
	}
	for _, tmpl := range []string{"{", "}", "a}b", "{input", "{answers}", "{all_classes}", "{nosuch}", "{}", "{0}",
		"{input!r}", "{input:>5}", "{input.x}", "{input[0]}"} {
		if got, err := FormatTemplate(tmpl, s); err == nil {
			t.Errorf("FormatTemplate(%q) = %q, want an error", tmpl, got)
		}
	}
}
