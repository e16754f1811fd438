package longbench

import (
	"strings"
	"testing"
)

// byteTok is a fake tokenizer: BOS (id 256, special) then one id per byte.
type byteTok struct{}

func (byteTok) Encode(s string) []int {
	ids := []int{256}
	for i := 0; i < len(s); i++ {
		ids = append(ids, int(s[i]))
	}
	return ids
}

func (byteTok) Decode(ids []int) string {
	var b strings.Builder
	for _, id := range ids {
		if id != 256 { // skip_special_tokens
			b.WriteByte(byte(id))
		}
	}
	return b.String()
}

func TestTruncateMiddle(t *testing.T) {
	const p = "abcdefghij" // 11 tokens with BOS
	for _, tc := range []struct {
		maxLen int
		want   string
	}{
		{11, p},                          // not longer than maxLen: unchanged
		{100, p},                         //
		{10, "abcdfghij"},                // half 5: [BOS a b c d] + [f g h i j]
		{6, "abhij"},                     // half 3: BOS counts in the head
		{7, "abhij"},                     // int(7/2) = 3
		{2, "j"},                         // half 1: [BOS] + [j]
		{1, p},                           // half 0: tok[:0] + tok[-0:] = everything (Python quirk)
		{0, p},                           //
		{-3, "abcdefghi" + "abcdefghij"}, // half -1: tok[:-1] + tok[1:]
	} {
		got := TruncateMiddle(byteTok{}, p, tc.maxLen)
		if got != tc.want {
			t.Errorf("TruncateMiddle(maxLen=%d) = %q, want %q", tc.maxLen, got, tc.want)
		}
	}
}

func TestChatTemplates(t *testing.T) {
	for _, tc := range []struct {
		c    ChatTemplate
		want string
	}{
		{ChatNone, "P"},
		{ChatLlama2, "[INST]P[/INST]"},
		{ChatMistral, "[INST] P [/INST]"},
		{ChatLlama3, "<|start_header_id|>user<|end_header_id|>\n\nP<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"},
	} {
		got, err := tc.c.Apply("P")
		if err != nil || got != tc.want {
			t.Errorf("%s.Apply = %q, %v; want %q", tc.c, got, err, tc.want)
		}
	}
	if got, _ := ChatLlama31.Apply("P"); !strings.HasPrefix(got, "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|><|start_header_id|>user") {
		t.Errorf("llama3.1 = %q", got)
	}
	for _, name := range []string{"", "none", "llama2", "mistral", "llama3", "llama3.1"} {
		if _, err := ParseChatTemplate(name); err != nil {
			t.Errorf("ParseChatTemplate(%q): %v", name, err)
		}
	}
	if _, err := ParseChatTemplate("gpt"); err == nil {
		t.Error("unknown template accepted")
	}
	if _, err := ChatTemplate("gpt").Apply("x"); err == nil {
		t.Error("unknown template applied")
	}
}

func TestBuildModelPrompt(t *testing.T) {
	q := readRealRow(t, "qasper")
	p, err := BuildModelPrompt("qasper", q, nil, 0, ChatLlama2)
	if err != nil || !strings.HasPrefix(p, "[INST]You are given a scientific article") || !strings.HasSuffix(p, "Answer:[/INST]") {
		t.Errorf("qasper llama2 prompt: %v %q", err, p[:min(60, len(p))])
	}
	for _, task := range []string{"trec", "lcc"} {
		s := readRealRow(t, task)
		plain, _ := BuildPrompt(task, s)
		p, err := BuildModelPrompt(task, s, nil, 0, ChatLlama2)
		if err != nil || p != plain {
			t.Errorf("%s: chat template applied or error %v", task, err)
		}
	}
	// Truncation happens before the chat template.
	p, err = BuildModelPrompt("qasper", q, byteTok{}, 40, ChatMistral)
	if err != nil || p != "[INST] You are given a scitechniques?\n\nAnswer: [/INST]" {
		t.Errorf("truncated prompt %q, %v", p, err)
	}
	if _, err := BuildModelPrompt("trec", q, nil, 0, "bogus"); err == nil {
		t.Error("bogus template accepted for a no-chat task")
	}
	if _, err := BuildModelPrompt("nosuch", q, nil, 0, ChatNone); err == nil {
		t.Error("unknown task accepted")
	}
}
