package longbench

import (
	"fmt"
	"strings"
)

// Language is the language group a LongBench task belongs to.
type Language string

// Language groups of LongBench v1. Code tasks are counted in both the English
// and the Chinese averages of the LongBench README.
const (
	English Language = "en"
	Chinese Language = "zh"
	Code    Language = "code"
)

// Category is one of the six LongBench task categories.
type Category string

// The six LongBench categories, spelled as in the LongBench README tables.
const (
	SingleDocQA   Category = "Single-Doc QA"
	MultiDocQA    Category = "Multi-Doc QA"
	Summarization Category = "Summarization"
	FewShot       Category = "Few-shot Learning"
	Synthetic     Category = "Synthetic Tasks"
	CodeCompl     Category = "Code Completion"
)

// Categories lists the six categories in the column order of the LongBench
// README tables.
var Categories = []Category{SingleDocQA, MultiDocQA, Summarization, FewShot, CodeCompl, Synthetic}

// Metric names, spelled as the functions of LongBench/metrics.py.
const (
	MetricQAF1        = "qa_f1_score"
	MetricQAF1ZH      = "qa_f1_zh_score"
	MetricRouge       = "rouge_score"
	MetricRougeZH     = "rouge_zh_score"
	MetricClassify    = "classification_score"
	MetricCount       = "count_score"
	MetricRetrieval   = "retrieval_score"
	MetricRetrievalZH = "retrieval_zh_score"
	MetricCodeSim     = "code_sim_score"
)

// TaskInfo describes one LongBench v1 task.
type TaskInfo struct {
	// Name is the dataset name used by the official code and data files.
	Name string
	// Language is the language group (en, zh or code).
	Language Language
	// Category is the LongBench category.
	Category Category
	// Metric is the name of the metrics.py function eval.py uses.
	Metric string
	// NumTest is the number of test samples of the LongBench (not -E) split.
	NumTest int
	// MaxNewTokens is dataset2maxlen[task], the generation budget.
	MaxNewTokens int
	// FirstLineCut is true where eval.py scores only
	// pred.lstrip('\n').split('\n')[0] (trec, triviaqa, samsum, lsht).
	FirstLineCut bool
	// ChatTemplate is true where pred.py wraps the prompt with the model's
	// chat template (every task except trec, triviaqa, samsum, lsht, lcc,
	// repobench-p).
	ChatTemplate bool
	// HasE is true for the 13 tasks that have a LongBench-E variant
	// ("<task>_e").
	HasE bool
}

// taskTable is the single source of truth for the 21 tasks, in the order of
// pred.py's dataset list.
var taskTable = []TaskInfo{
	{"narrativeqa", English, SingleDocQA, MetricQAF1, 200, 128, false, true, false},
	{"qasper", English, SingleDocQA, MetricQAF1, 200, 128, false, true, true},
	{"multifieldqa_en", English, SingleDocQA, MetricQAF1, 150, 64, false, true, true},
	{"multifieldqa_zh", Chinese, SingleDocQA, MetricQAF1ZH, 200, 64, false, true, false},
	{"hotpotqa", English, MultiDocQA, MetricQAF1, 200, 32, false, true, true},
	{"2wikimqa", English, MultiDocQA, MetricQAF1, 200, 32, false, true, true},
	{"musique", English, MultiDocQA, MetricQAF1, 200, 32, false, true, false},
	{"dureader", Chinese, MultiDocQA, MetricRougeZH, 200, 128, false, true, false},
	{"gov_report", English, Summarization, MetricRouge, 200, 512, false, true, true},
	{"qmsum", English, Summarization, MetricRouge, 200, 512, false, true, false},
	{"multi_news", English, Summarization, MetricRouge, 200, 512, false, true, true},
	{"vcsum", Chinese, Summarization, MetricRougeZH, 200, 512, false, true, false},
	{"trec", English, FewShot, MetricClassify, 200, 64, true, false, true},
	{"triviaqa", English, FewShot, MetricQAF1, 200, 32, true, false, true},
	{"samsum", English, FewShot, MetricRouge, 200, 128, true, false, true},
	{"lsht", Chinese, FewShot, MetricClassify, 200, 64, true, false, false},
	{"passage_count", English, Synthetic, MetricCount, 200, 32, false, true, true},
	{"passage_retrieval_en", English, Synthetic, MetricRetrieval, 200, 32, false, true, true},
	{"passage_retrieval_zh", Chinese, Synthetic, MetricRetrievalZH, 200, 32, false, true, false},
	{"lcc", Code, CodeCompl, MetricCodeSim, 500, 64, false, false, true},
	{"repobench-p", Code, CodeCompl, MetricCodeSim, 500, 64, false, false, true},
}

var taskIndex = func() map[string]int {
	m := make(map[string]int, len(taskTable))
	for i, t := range taskTable {
		m[t.Name] = i
	}
	return m
}()

// Tasks returns the 21 LongBench v1 tasks in the order of pred.py.
func Tasks() []TaskInfo {
	out := make([]TaskInfo, len(taskTable))
	copy(out, taskTable)
	return out
}

// TaskNames returns the 21 task names in the order of pred.py.
func TaskNames() []string {
	out := make([]string, len(taskTable))
	for i, t := range taskTable {
		out[i] = t.Name
	}
	return out
}

// ETaskNames returns the 13 tasks that have a LongBench-E variant, in the
// order of pred.py's --e dataset list.
func ETaskNames() []string {
	var out []string
	for _, t := range taskTable {
		if t.HasE {
			out = append(out, t.Name)
		}
	}
	return out
}

// EnglishAndCodeTaskNames returns the 16 tasks (14 English + 2 code) that
// KV-cache papers usually average over.
func EnglishAndCodeTaskNames() []string {
	var out []string
	for _, t := range taskTable {
		if t.Language != Chinese {
			out = append(out, t.Name)
		}
	}
	return out
}

// Task returns the description of the named task. The name must be one of
// the 21 official dataset names; a LongBench-E name ("qasper_e") is rejected
// with a hint, use SplitE first.
func Task(name string) (TaskInfo, error) {
	if i, ok := taskIndex[name]; ok {
		return taskTable[i], nil
	}
	hint := ""
	if base, e := SplitE(name); e {
		if i, ok := taskIndex[base]; ok && taskTable[i].HasE {
			hint = fmt.Sprintf(" (%q is the LongBench-E variant of %q; use SplitE)", name, base)
		}
	}
	return TaskInfo{}, fmt.Errorf("longbench: unknown task %q%s; known tasks: %s",
		name, hint, strings.Join(TaskNames(), ", "))
}

// SplitE splits a LongBench-E dataset name "<task>_e" into the task name and
// true. Other names are returned unchanged with false.
func SplitE(name string) (string, bool) {
	if base, ok := strings.CutSuffix(name, "_e"); ok {
		if _, known := taskIndex[base]; known {
			return base, true
		}
	}
	return name, false
}
