package longbench

import (
	"strings"
	"testing"
)

// TestPostProcessLlama3 checks hf_pred.py's Llama-3 post-processing on literal strings: each separator alone, none,
// several (the first occurrence of any wins), near misses that are not separators, and Python's strip.
func TestPostProcessLlama3(t *testing.T) {
	cases := []struct{ in, want string }{
		// No separator: only stripped.
		{"Paris", "Paris"},
		{"", ""},
		{"The assistant said yes", "The assistant said yes"}, // "assistant" without the dot
		{"Paris.\nassistant", "Paris.\nassistant"},           // the dot and "assistant" not adjacent
		{"Paris.Assistant", "Paris.Assistant"},               // case matters
		{"A\nQuestion: b", "A\nQuestion: b"},                 // one newline is not "\n\nQuestion"
		{"A\n\nquestion: b", "A\n\nquestion: b"},             // case matters
		{"A</S>b", "A</S>b"},
		// Each separator alone.
		{"Paris.assistant\n\nThe capital is Paris.", "Paris"},
		{"Paris\n\nQuestion: What is the capital of Italy?", "Paris"},
		{"Paris</s>garbage", "Paris"},
		// A separator at the very start leaves nothing.
		{".assistant Paris", ""},
		{"\n\nQuestion: x", ""},
		{"</s>", ""},
		// Several: whichever comes first cuts, in any order.
		{"A\n\nQuestion: x.assistant y</s>z", "A"},
		{"A</s>B.assistant C", "A"},
		{"A.assistant B</s>C\n\nQuestion D", "A"},
		{"one.assistant two.assistant three", "one"},
		// "\n\n\nQuestion" holds "\n\nQuestion" from its second newline: "x\n" is left, then stripped.
		{"x\n\n\nQuestion", "x"},
		// Leading and trailing whitespace, also before a separator; Python's str.strip also removes U+001C..U+001F,
		// NBSP and ideographic space, not a zero-width space.
		{"  \n\t Paris \r\n", "Paris"},
		{" Paris \n\nQuestion: y", "Paris"},
		{"\n Paris\t.assistant", "Paris"},
		{"\x1c\x1fParis\x1e\x1d", "Paris"},
		{"\u00a0\u3000Paris\u2009\u0085", "Paris"},
		{"\u200bParis\u200b", "\u200bParis\u200b"},
		{"  inner  space  ", "inner  space"},
	}
	for _, c := range cases {
		if got := PostProcessLlama3(c.in); got != c.want {
			t.Errorf("PostProcessLlama3(%q) = %q, want %q", c.in, got, c.want)
		}
		if got, err := PostLlama3.Apply(c.in); err != nil || got != c.want {
			t.Errorf("PostLlama3.Apply(%q) = %q, %v", c.in, got, err)
		}
		if got, err := PostNone.Apply(c.in); err != nil || got != c.in {
			t.Errorf("PostNone.Apply(%q) = %q, %v; want it unchanged", c.in, got, err)
		}
	}
	if got := strings.Join(Llama3Separators, "|"); got != ".assistant|\n\nQuestion|</s>" {
		t.Errorf("separators %q, want hf_pred.py's .assistant, \\n\\nQuestion, </s>", got)
	}
	if _, err := PostAuto.Apply("x"); err == nil {
		t.Error("PostAuto.Apply: want an error (auto must be resolved first)")
	}
}

// TestParsePostProcess: the three names, "" as auto, and an unknown name listing the known ones.
func TestParsePostProcess(t *testing.T) {
	for in, want := range map[string]PostProcess{"": PostAuto, "auto": PostAuto, "llama-3": PostLlama3, "none": PostNone} {
		if got, err := ParsePostProcess(in); err != nil || got != want {
			t.Errorf("ParsePostProcess(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	_, err := ParsePostProcess("llama3")
	if err == nil || !strings.Contains(err.Error(), `unknown post-processing "llama3" (did you mean "llama-3"?)`) ||
		!strings.Contains(err.Error(), "known: auto, llama-3, none") {
		t.Errorf("ParsePostProcess(llama3): %v", err)
	}
}
