package longbench

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// asciiPunct is Python's string.punctuation (ASCII only).
const asciiPunct = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"

// zhPunct is the cn_punctuation string of metrics.py's normalize_zh_answer.
const zhPunct = "！？｡。＂＃＄％＆＇（）＊＋，－／：；＜＝＞＠［＼］＾＿｀｛｜｝～｟｠｢｣､、〃》「」『』【】〔〕〖〗〘〙〚〛〜〝〞〟〰〾〿–—‘’‛“”„‟…‧﹏."

var zhPunctSet = func() map[rune]bool {
	m := map[rune]bool{}
	for _, r := range asciiPunct + zhPunct {
		m[r] = true
	}
	return m
}()

func isASCIIPunct(r rune) bool {
	return r < 0x80 && strings.ContainsRune(asciiPunct, r)
}

// NormalizeAnswer is metrics.py's normalize_answer: Python str.lower(),
// delete every string.punctuation character, replace
// re.sub(r"\b(a|an|the)\b", " ", ·) with Python's Unicode \b (word
// characters are str.isalnum() and '_'), then " ".join(s.split()) with
// Python's whitespace set.
func NormalizeAnswer(s string) string {
	s = pyLower(s)
	s = strings.Map(func(r rune) rune {
		if isASCIIPunct(r) {
			return -1
		}
		return r
	}, s)
	s = removeArticles(s)
	return strings.Join(pySplit(s), " ")
}

// removeArticles is re.sub(r"\b(a|an|the)\b", " ", s): scanning left to
// right, at a word boundary the alternatives are tried in order a, an, the,
// each needing a word boundary after it; matches do not overlap.
func removeArticles(s string) string {
	if !strings.Contains(s, "a") && !strings.Contains(s, "the") {
		return s
	}
	rs := []rune(s)
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(rs); {
		if (rs[i] == 'a' || rs[i] == 't') && (i == 0 || !pyIsWord(rs[i-1])) {
			if k := matchArticle(rs, i); k > 0 {
				b.WriteByte(' ')
				i += k
				continue
			}
		}
		b.WriteRune(rs[i])
		i++
	}
	return b.String()
}

func matchArticle(rs []rune, i int) int {
	for _, alt := range [...]string{"a", "an", "the"} {
		k := len(alt)
		if i+k > len(rs) || string(rs[i:i+k]) != alt {
			continue
		}
		if i+k == len(rs) || !pyIsWord(rs[i+k]) {
			return k
		}
	}
	return 0
}

// NormalizeZHAnswer is metrics.py's normalize_zh_answer: Python
// str.lower(), delete ASCII and Chinese punctuation, delete all whitespace.
func NormalizeZHAnswer(s string) string {
	s = pyLower(s)
	return strings.Map(func(r rune) rune {
		if zhPunctSet[r] || pyIsSpace(r) {
			return -1
		}
		return r
	}, s)
}

// F1Tokens is metrics.py's f1_score on two token lists: the multiset
// overlap num_same = sum of min counts; 0 when num_same is 0; else
// 2PR/(P+R) with P = num_same/len(pred), R = num_same/len(gt).
func F1Tokens(pred, gt []string) float64 {
	counts := make(map[string]int, len(gt))
	for _, t := range gt {
		counts[t]++
	}
	same := 0
	for _, t := range pred {
		if counts[t] > 0 {
			counts[t]--
			same++
		}
	}
	if same == 0 {
		return 0
	}
	p := 1.0 * float64(same) / float64(len(pred))
	r := 1.0 * float64(same) / float64(len(gt))
	return (2 * p * r) / (p + r)
}

// QAF1Score is metrics.py's qa_f1_score: F1Tokens over the
// whitespace-split NormalizeAnswer of both texts.
func QAF1Score(pred, gt string) float64 {
	return F1Tokens(pySplit(NormalizeAnswer(pred)), pySplit(NormalizeAnswer(gt)))
}

// QAF1ZHScore is metrics.py's qa_f1_zh_score: both texts are segmented with
// jieba.cut(cut_all=False) (here cppjieba through gojieba, precise mode with
// HMM; close to but not guaranteed byte-identical with Python jieba), each
// token is normalised with NormalizeZHAnswer, empty tokens are dropped and
// F1Tokens is applied.
func QAF1ZHScore(pred, gt string) float64 {
	return F1Tokens(zhTokens(pred), zhTokens(gt))
}

func zhTokens(s string) []string {
	var out []string
	for _, t := range jiebaCut(s) {
		if t = NormalizeZHAnswer(t); t != "" {
			out = append(out, t)
		}
	}
	return out
}

// ClassificationScore is metrics.py's classification_score, including its
// list-mutation quirk: L = classes that are substrings of pred (in
// allClasses order, duplicates kept); then Python's
// "for t in L: if t in gt and t != gt: L.remove(t)" runs, which removes the
// first element equal to t and, because the list shrinks under the
// iterator, skips the element after each removal. The score is 1/len(L)
// when gt is in L, else 0. (Official code fails on a null all_classes;
// here nil classes score 0.)
func ClassificationScore(pred, gt string, allClasses []string) float64 {
	var l []string
	for _, c := range allClasses {
		if strings.Contains(pred, c) {
			l = append(l, c)
		}
	}
	// Python's list iterator: an index that always advances, checked
	// against the current length.
	for idx := 0; idx < len(l); {
		t := l[idx]
		idx++
		if strings.Contains(gt, t) && t != gt {
			for k, v := range l {
				if v == t {
					l = append(l[:k], l[k+1:]...)
					break
				}
			}
		}
	}
	for _, v := range l {
		if v == gt {
			return 1.0 / float64(len(l))
		}
	}
	return 0
}

// findDigitRuns is re.findall(r"\d+", s) with Python's Unicode \d.
func findDigitRuns(s string) []string {
	var out []string
	start := -1
	for i, r := range s {
		if pyIsDecimal(r) {
			if start < 0 {
				start = i
			}
		} else if start >= 0 {
			out = append(out, s[start:i])
			start = -1
		}
	}
	if start >= 0 {
		out = append(out, s[start:])
	}
	return out
}

// digitRatio is the share of \d+ runs of pred equal to want; 0 when pred has
// none.
func digitRatio(pred, want string) float64 {
	nums := findDigitRuns(pred)
	if len(nums) == 0 {
		return 0
	}
	right := 0
	for _, n := range nums {
		if n == want {
			right++
		}
	}
	return float64(right) / float64(len(nums))
}

// CountScore is metrics.py's count_score: the share of the \d+ runs in pred
// that equal gt as strings (0 when there are none).
func CountScore(pred, gt string) float64 {
	return digitRatio(pred, gt)
}

// firstIDAfter is re.findall(prefix + r"(\d+)", s)[0]; ok is false when
// there is no match.
func firstIDAfter(s, prefix string) (string, bool) {
	for off := 0; ; {
		k := strings.Index(s[off:], prefix)
		if k < 0 {
			return "", false
		}
		start := off + k + len(prefix)
		end := start
		for end < len(s) {
			r, size := utf8.DecodeRuneInString(s[end:])
			if !pyIsDecimal(r) {
				break
			}
			end += size
		}
		if end > start {
			return s[start:end], true
		}
		off += k + 1
	}
}

// RetrievalScore is metrics.py's retrieval_score: the paragraph id is the
// first "Paragraph (\d+)" of gt, the score the share of the \d+ runs of
// pred equal to it. (Official code raises IndexError when gt has no
// "Paragraph N"; here that scores 0.)
func RetrievalScore(pred, gt string) float64 {
	id, ok := firstIDAfter(gt, "Paragraph ")
	if !ok {
		return 0
	}
	return digitRatio(pred, id)
}

// RetrievalZHScore is metrics.py's retrieval_zh_score, with the pattern
// "段落(\d+)"; see RetrievalScore.
func RetrievalZHScore(pred, gt string) float64 {
	id, ok := firstIDAfter(gt, "段落")
	if !ok {
		return 0
	}
	return digitRatio(pred, id)
}

// CodeSimScore is metrics.py's code_sim_score: after pred.lstrip('\n'),
// take the first '\n'-separated line that contains none of "`", "#", "//"
// ("" if none) and return fuzz.ratio(line, gt)/100 (see FuzzRatio).
func CodeSimScore(pred, gt string) float64 {
	line := ""
	for _, l := range strings.Split(strings.TrimLeft(pred, "\n"), "\n") {
		if !strings.Contains(l, "`") && !strings.Contains(l, "#") && !strings.Contains(l, "//") {
			line = l
			break
		}
	}
	return float64(FuzzRatio(line, gt)) / 100
}

// MetricFunc scores one prediction against one gold answer; allClasses is
// used only by classification_score.
type MetricFunc func(pred, gt string, allClasses []string) float64

var metricFuncs = map[string]MetricFunc{
	MetricQAF1:        func(p, g string, _ []string) float64 { return QAF1Score(p, g) },
	MetricQAF1ZH:      func(p, g string, _ []string) float64 { return QAF1ZHScore(p, g) },
	MetricRouge:       func(p, g string, _ []string) float64 { return RougeScore(p, g) },
	MetricRougeZH:     func(p, g string, _ []string) float64 { return RougeZHScore(p, g) },
	MetricClassify:    ClassificationScore,
	MetricCount:       func(p, g string, _ []string) float64 { return CountScore(p, g) },
	MetricRetrieval:   func(p, g string, _ []string) float64 { return RetrievalScore(p, g) },
	MetricRetrievalZH: func(p, g string, _ []string) float64 { return RetrievalZHScore(p, g) },
	MetricCodeSim:     func(p, g string, _ []string) float64 { return CodeSimScore(p, g) },
}

// Metric returns the metric function with the given metrics.py name
// (e.g. "qa_f1_score").
func Metric(name string) (MetricFunc, error) {
	f, ok := metricFuncs[name]
	if !ok {
		return nil, fmt.Errorf("longbench: unknown metric %q", name)
	}
	return f, nil
}
