package finetune

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sort"

	"natsbench/longbench"
)

// TrainSample is one fine-tuning sample: a prompt and the answer whose tokens are distilled (NATS-SPEC.md §3.5).
type TrainSample struct {
	Source string // a LongBench task name, or "passkey"
	Prompt string
	Answer string
}

// LongBenchSources reads the LongBench-style training set of §3.5 from a folder of `<task>.jsonl` files in
// LongBench's row format (the source datasets' training splits, formatted like LongBench: context, input,
// answers, length): per task, in file order, the first perSource rows (0 = all) whose `length` lies in
// [minLen, maxLen] (0 = unbounded), with the task's LongBench prompt and the first answer as the label. A file
// that is not a LongBench task, a malformed line, a row without answers or an empty result is an error naming
// the file.
func LongBenchSources(dir string, perSource, minLen, maxLen int) ([]TrainSample, error) {
	sets, err := longbench.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("finetune data %s: %w", dir, err)
	}
	names := make([]string, 0, len(sets))
	for n := range sets {
		names = append(names, n)
	}
	sort.Strings(names)
	var out []TrainSample
	for _, task := range names {
		d := sets[task]
		file := filepath.Join(dir, task+".jsonl")
		if len(d.Errors) > 0 {
			return nil, fmt.Errorf("finetune data %s: %w", file, d.Errors[0])
		}
		if _, err := longbench.PromptTemplate(task); err != nil {
			return nil, fmt.Errorf("finetune data %s: %w", file, err)
		}
		kept := 0
		for i, s := range d.Samples {
			if perSource > 0 && kept == perSource {
				break
			}
			if (minLen > 0 && s.Length < minLen) || (maxLen > 0 && s.Length > maxLen) {
				continue
			}
			if len(s.Answers) == 0 {
				return nil, fmt.Errorf("finetune data %s: row %d has no answers", file, i+1)
			}
			prompt, err := longbench.BuildPrompt(task, s)
			if err != nil {
				return nil, fmt.Errorf("finetune data %s: row %d: %w", file, i+1, err)
			}
			out = append(out, TrainSample{Source: task, Prompt: prompt, Answer: s.Answers[0]})
			kept++
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("finetune data %s: no LongBench-format rows within length [%d, %d]", dir, minLen, maxLen)
	}
	return out, nil
}

// Mix is the "mixed" training data of §3.5: LongBench-style rows and synthetic multi-passkey samples.
type Mix struct {
	LongBench []TrainSample // from LongBenchSources; may be empty (then Ratio must be 0)
	Ratio     float64       // probability that a sample is a LongBench row, in [0, 1]
	Haystacks []string      // texts the passkeys are inserted into (e.g. PG-19 books); may be empty when Ratio = 1
	NumKeys   int           // passkeys per sample (official: 10)
	KeyWords  int           // NATO words per passkey (official: 32)
}

// Validate checks that every source the ratio can pick exists.
func (m Mix) Validate() error {
	switch {
	case m.Ratio < 0 || m.Ratio > 1:
		return fmt.Errorf("finetune mix: ratio %g outside [0, 1]", m.Ratio)
	case m.Ratio > 0 && len(m.LongBench) == 0:
		return fmt.Errorf("finetune mix: ratio %g needs LongBench rows, none given", m.Ratio)
	case m.Ratio < 1 && len(m.Haystacks) == 0:
		return fmt.Errorf("finetune mix: ratio %g needs passkey haystacks, none given", m.Ratio)
	}
	return nil
}

// Sample returns sample index of a run, a pure function of (seed, index): resuming a run at step k draws the
// same samples as the uninterrupted run.
func (m Mix) Sample(seed, index uint64) (TrainSample, error) {
	if err := m.Validate(); err != nil {
		return TrainSample{}, err
	}
	r := rand.New(rand.NewPCG(seed^0x6d6978, index)) // "mix"
	if r.Float64() < m.Ratio {
		return m.LongBench[r.IntN(len(m.LongBench))], nil
	}
	hay := m.Haystacks[r.IntN(len(m.Haystacks))]
	p, err := NewPasskey(hay, m.NumKeys, m.KeyWords, seed, index)
	if err != nil {
		return TrainSample{}, err
	}
	return TrainSample{Source: "passkey", Prompt: p.Context, Answer: p.Answer}, nil
}
