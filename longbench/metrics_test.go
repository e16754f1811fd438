package longbench

import (
	"math"
	"strings"
	"testing"
	"unicode/utf8"
)

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-12 }

func TestNormalizeAnswer(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"!!!", ""},
		{"   \t\n", ""},
		{"The Cat, the HAT.", "cat hat"},
		{"an apple a day", "apple day"},
		{"theatre another", "theatre another"},
		{"A-Team", "ateam"},         // punctuation goes before the article regex
		{"the_end", "theend"},       // '_' is in string.punctuation
		{"1a a1 a", "1a a1"},        // digits are word characters
		{"x\u0301a b", "x\u0301 b"}, // a combining mark is not \w in Python's re
		{"ΟΔΟΣ", "οδος"},            // final sigma
		{"ΣΑΣ Σ", "σας σ"},
		{"İ", "i\u0307"}, // full lowercase mapping
		{"the\u00a0end\u3000a", "end"},
		{"a\x1cthe\x1fb", "b"},   // U+001C..U+001F are whitespace for str.split
		{"ａ the", "ａ"},           // fullwidth letters are not ASCII punctuation or articles
		{"«a» “the”", "« » “ ”"}, // non-ASCII punctuation is kept
	} {
		if got := NormalizeAnswer(tc.in); got != tc.want {
			t.Errorf("NormalizeAnswer(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	if got := NormalizeZHAnswer("Hello， World！\u3000中文。"); got != "helloworld中文" {
		t.Errorf("NormalizeZHAnswer = %q", got)
	}
}

func TestQAF1(t *testing.T) {
	for _, tc := range []struct {
		pred, gt string
		want     float64
	}{
		{"", "", 0},
		{"!!!", "!!!", 0},
		{"", "cat", 0},
		{"The cat", "cat", 1},
		{"cat cat dog", "cat dog dog", 2.0 / 3},
		{"a survey of engineers", "By conducting a survey among engineers", 0.5},
		{"Paris.", "paris", 1},
	} {
		if got := QAF1Score(tc.pred, tc.gt); !near(got, tc.want) {
			t.Errorf("QAF1Score(%q, %q) = %v, want %v", tc.pred, tc.gt, got, tc.want)
		}
	}
	if got := F1Tokens([]string{"a", "a", "b"}, []string{"a"}); !near(got, 0.5) {
		t.Errorf("F1Tokens multiset = %v, want 0.5", got)
	}
}

func TestRouge(t *testing.T) {
	// F computed at run time in float64 (Go constant arithmetic is exact).
	fOf := func(p, r float64) float64 { return 2.0 * ((p * r) / (p + r + 1e-8)) }
	one := fOf(1, 1)
	for _, tc := range []struct {
		pred, gt string
		want     float64
	}{
		{"", "", 0},
		{"", "a b", 0},  // Hypothesis is empty.
		{"a b", "", 0},  // Reference is empty.
		{"...", "a", 0}, // only empty pieces
		{"a", "...", 0},
		{"a b c", "a b c", one},
		{"a b", "c d", 0},
		{"a a a a", "a", one},                 // set semantics
		{"The cat", "the cat", fOf(0.5, 0.5)}, // case-sensitive
		// Lin's summary-level example: LCS union {w1 w2 w3 w5}, m=5, n=8.
		{"w1 w2 w6 w7 w8. w1 w3 w8 w9 w5", "w1 w2 w3 w4 w5", fOf(0.5, 0.8)},
	} {
		if got := RougeScore(tc.pred, tc.gt); got != tc.want {
			t.Errorf("RougeScore(%q, %q) = %v, want %v", tc.pred, tc.gt, got, tc.want)
		}
	}
	// The recursion-limit quirk: a single sentence whose backtrack takes more
	// than 990 steps (989 for the ZH variant) scores 0.
	words := func(n int) string {
		w := make([]string, n)
		for i := range w {
			w[i] = "w" + strings.Repeat("x", i%7) + string(rune('a'+i%26))
		}
		return strings.Join(w, " ")
	}
	if got := RougeScore(words(990), words(990)); got != one {
		t.Errorf("990 words: %v, want %v", got, one)
	}
	if got := RougeScore(words(991), words(991)); got != 0 {
		t.Errorf("991 words: %v, want 0 (RecursionError)", got)
	}
	if got := rougeLF(words(989), words(989), rougeBaseDepthZH); got != one {
		t.Errorf("ZH depth, 989 words: %v", got)
	}
	if got := rougeLF(words(990), words(990), rougeBaseDepthZH); got != 0 {
		t.Errorf("ZH depth, 990 words: %v, want 0", got)
	}
	// Sentences split on '.' keep each backtrack short.
	long := strings.ReplaceAll(words(2000), "wa ", "wa. ")
	if got := RougeScore(long, long); got != one {
		t.Errorf("2000 words in short sentences: %v", got)
	}
}

func TestClassification(t *testing.T) {
	for _, tc := range []struct {
		pred, gt string
		classes  []string
		want     float64
	}{
		{"Definition of something", "Definition of something", []string{"Food", "Definition of something"}, 1},
		{"Description of something", "Definition of something", []string{"Description of something", "Definition of something"}, 0},
		{"Description of something or Definition of something", "Definition of something",
			[]string{"Description of something", "Definition of something"}, 0.5},
		// "a" is removed, which makes the iterator skip "b": L = [b, ab].
		{"ab", "ab", []string{"a", "b", "ab"}, 0.5},
		// Without "a" in front, "b" is removed too.
		{"ab", "ab", []string{"b", "ab"}, 1},
		// Duplicate classes are both kept.
		{"Food", "Food", []string{"Food", "Food"}, 0.5},
		// remove() drops the first equal element, not the current one.
		{"Other Other entity", "Other entity", []string{"Other", "Other", "Other entity"}, 0.5},
		{"", "Food", []string{"Food"}, 0},
		{"Food", "Food", nil, 0},
		{"Food", "Food", []string{}, 0},
	} {
		if got := ClassificationScore(tc.pred, tc.gt, tc.classes); !near(got, tc.want) {
			t.Errorf("ClassificationScore(%q, %q, %q) = %v, want %v", tc.pred, tc.gt, tc.classes, got, tc.want)
		}
	}
}

func TestCountAndRetrieval(t *testing.T) {
	for _, tc := range []struct {
		f        func(string, string) float64
		pred, gt string
		want     float64
	}{
		{CountScore, "", "3", 0},
		{CountScore, "3 33 3", "3", 2.0 / 3},
		{CountScore, "٣", "3", 0}, // Unicode digits are \d but compare as strings
		{CountScore, "٣ apples", "٣", 1},
		{CountScore, "3.5", "3", 0.5},
		{RetrievalScore, "Paragraph 3, Paragraph 30", "Paragraph 3", 0.5},
		{RetrievalScore, "Paragraph 3", "no id here", 0},
		{RetrievalScore, "3", "Paragraph x, then Paragraph 3", 1},
		{RetrievalZHScore, "答案是段落12", "段落12", 1},
		{RetrievalZHScore, "段落1，段落2", "段落2", 0.5},
	} {
		if got := tc.f(tc.pred, tc.gt); !near(got, tc.want) {
			t.Errorf("(%q, %q) = %v, want %v", tc.pred, tc.gt, got, tc.want)
		}
	}
}

func TestCodeSim(t *testing.T) {
	for _, tc := range []struct {
		pred, gt string
		want     float64
	}{
		{"", "", 1},               // fuzz: s1 == s2 is checked before emptiness
		{"# c\n// d\n```", "", 1}, // no usable line -> "" == ""
		{"x", "", 0},
		{"", "x", 0},
		{"\n\n\t\tif(beans == null)\n\t\t\treturn;", "\t\tif(beans == null)", 1},
		{"if (beans == null)", "\t\tif(beans == null)", 0.92},
		{"abcdefgh", "abcdexyz", 0.62}, // ratio 0.625 -> 62.5 -> 62 (half to even)
		{"abcdefgh", "abcwxyzq", 0.38}, // 37.5 -> 38
		{"a # b\nreal", "real", 1},
	} {
		if got := CodeSimScore(tc.pred, tc.gt); got != tc.want {
			t.Errorf("CodeSimScore(%q, %q) = %v, want %v", tc.pred, tc.gt, got, tc.want)
		}
	}
	// Autojunk: in a ground truth of >= 200 characters, characters occurring
	// more than 1+len/100 times cannot start a match.
	a := "c" + strings.Repeat("a", 150) + strings.Repeat("b", 60)
	b := strings.Repeat("a", 150) + strings.Repeat("b", 60)
	if r := SequenceMatcherRatio(a, b); r != 0 {
		t.Errorf("autojunk ratio %v, want 0", r)
	}
	if r := SequenceMatcherRatio(b[1:], b[1:]+"x"); r != 2.0*209/419 {
		// b[1:]+"x" has 210 chars: popular, but the match starts at (0,0)
		// and is found by extension.
		t.Errorf("prefix extension ratio %v", r)
	}
	if r := SequenceMatcherRatio("", ""); r != 1 {
		t.Errorf("empty ratio %v", r)
	}
}

func TestRound(t *testing.T) {
	for _, tc := range []struct{ x, py, np float64 }{
		{0.125, 0.12, 0.12},
		{0.375, 0.38, 0.38},
		{2.675, 2.67, 2.68}, // 2.675*100 == 267.5 exactly in float64
		{1.005, 1.0, 1.0},
		{0.005, 0.01, 0.0}, // Python rounds the exact binary value, NumPy rint(0.5)
		{0.015, 0.01, 0.02},
		{62.5, 62.5, 62.5},
		{33.333333333333336, 33.33, 33.33},
		{100, 100, 100},
	} {
		if got := Round2(tc.x); got != tc.py {
			t.Errorf("Round2(%v) = %v, want %v", tc.x, got, tc.py)
		}
		if got := NumpyRound2(tc.x); got != tc.np {
			t.Errorf("NumpyRound2(%v) = %v, want %v", tc.x, got, tc.np)
		}
	}
	if !math.IsNaN(Round2(math.NaN())) || !math.IsNaN(NumpyRound2(math.NaN())) {
		t.Error("NaN not kept")
	}
}

func TestJiebaMetrics(t *testing.T) {
	if err := CheckJieba(); err != nil {
		t.Skip(err)
	}
	// The classic jieba example: 我/来到/北京/清华大学.
	got := strings.Join(jiebaCut("我来到北京清华大学"), "/")
	if got != "我/来到/北京/清华大学" {
		t.Errorf("jieba cut = %q", got)
	}
	if s := QAF1ZHScore("我来到北京清华大学", "清华大学"); !near(s, 0.4) {
		t.Errorf("QAF1ZHScore = %v, want 0.4", s)
	}
	if s := QAF1ZHScore("清华大学。", "清华大学"); s != 1 {
		t.Errorf("QAF1ZHScore with punctuation = %v, want 1", s)
	}
	if s := QAF1ZHScore("，。", "，"); s != 0 {
		t.Errorf("QAF1ZHScore all punctuation = %v", s)
	}
	p, r := 1.0, 1.0
	one := 2.0 * ((p * r) / (p + r + 1e-8))
	if s := RougeZHScore("我来到北京清华大学", "我来到北京清华大学"); s != one {
		t.Errorf("RougeZHScore identical = %v", s)
	}
	if s := RougeZHScore("", "我来到北京"); s != 0 {
		t.Errorf("RougeZHScore empty = %v", s)
	}
	// A long Chinese text has no ASCII '.', so it is one sentence and hits
	// the recursion limit.
	long := strings.Repeat("我来到北京清华大学，", 300)
	if s := RougeZHScore(long, long); s != 0 {
		t.Errorf("RougeZHScore long single sentence = %v, want 0", s)
	}
}

func FuzzNormalizeAnswer(f *testing.F) {
	for _, s := range []string{"", "The Cat!", "a an the", "x\u0301a", "ΟΔΟΣ", "İ", "\x1c\xff\xfe", "a\u00a0the"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n := NormalizeAnswer(s)
		if strings.HasPrefix(n, " ") || strings.HasSuffix(n, " ") || strings.Contains(n, "  ") {
			t.Fatalf("bad spacing %q", n)
		}
		for _, w := range strings.Split(n, " ") {
			if w == "a" || w == "an" || w == "the" {
				t.Fatalf("article left in %q", n)
			}
		}
		if strings.ContainsAny(n, asciiPunct) {
			t.Fatalf("punctuation left in %q", n)
		}
		if utf8.ValidString(s) {
			if n2 := NormalizeAnswer(n); n2 != n {
				t.Fatalf("not idempotent: %q -> %q -> %q", s, n, n2)
			}
		}
		_ = NormalizeZHAnswer(s)
		if v := QAF1Score(s, n); v < 0 || v > 1 {
			t.Fatalf("QAF1Score out of range: %v", v)
		}
	})
}

func FuzzRouge(f *testing.F) {
	f.Add("the cat sat. on the mat", "the cat on mat")
	f.Add("", "a")
	f.Add(" . . ", ". a .")
	f.Add("a a a", "a")
	f.Add("\xff\x00.", "\u3000.")
	f.Fuzz(func(t *testing.T, pred, gt string) {
		for _, v := range []float64{RougeScore(pred, gt), CodeSimScore(pred, gt), ClassificationScore(pred, gt, strings.Fields(pred))} {
			if math.IsNaN(v) || v < 0 || v > 1 {
				t.Fatalf("score %v out of [0, 1] for %q, %q", v, pred, gt)
			}
		}
	})
}
