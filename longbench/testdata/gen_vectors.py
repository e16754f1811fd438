"""Generate longbench/testdata/vectors.jsonl: reference values from the
official LongBench metrics.py (THUDM/LongBench 2e00731, LongBench/metrics.py),
pltrdy rouge 1.0.1, fuzzywuzzy 0.18.0 (no python-Levenshtein, so Python's
difflib.SequenceMatcher) and CPython's own re / string / difflib / round.

Usage: python3 gen_vectors.py SRC > vectors.jsonl
SRC must contain metrics.py, rouge/ and fuzzywuzzy/ from those releases, a
six.py stub (string_types = (str,)) and a jieba.py stub (the ZH segmentation is
not covered by these vectors). The rouge calls go through eval.py's call depth
(<module> -> scorer -> rouge_score) so the RecursionError quirk is reproduced.
"""
import difflib, json, random, sys, warnings

warnings.simplefilter("ignore")
sys.path.insert(0, sys.argv[1])
import metrics  # noqa: E402
from fuzzywuzzy import fuzz  # noqa: E402

out = []


def emit(fn, want, **kw):
    kw["fn"] = fn
    kw["want"] = want
    out.append(kw)


# eval.py's scorer frame structure: <module> -> scorer -> metric.
def scorer_rouge(pred, gt):
    score = 0.
    for g in [gt]:
        score = max(score, metrics.rouge_score(pred, g, all_classes=None))
    return score


rng = random.Random(20240601)
UNI = ["a", "an", "the", "The", "A", "AN", "é", "É", "İ", "Σ", "ΟΔΟΣ", "ß", "ﬁ", "_", "-", "'", "’", ".", ",", "!",
       " ", "  ", "\t", "\n", "\u00a0", "\u3000", "\u2003", "\x1c", "\x1f", "\x85", "1", "٣", "²", "Ⅻ", "中", "文",
       "。", "，", "x", "cat", "dog", "theory", "another", "a1", "1a", "ä", "a\u0308", "ǅ", "\u200b", "\u0301", "ß",
       "`", "#", "//", "段落", "Paragraph", "{", "}"]


def rstr(n):
    return "".join(rng.choice(UNI) for _ in range(n))


norm_cases = ["", "   ", "!!!", "The cat", "a an the", "anthem", "theater a", "A.B.C", "the_a", "a_the", "Ünited the",
              "İstanbul the", "ΟΔΟΣ Σ ΑΣ.", "x\u0301a b", "é a é", "a\u00a0the\u3000an", "\x1ca\x1fthe", "1a a1 a",
              "２ a", "the-the", "‘the’", "«a»", "ǅa the", "a\u200bb", "an.", "THE END", "a–the", "Ⅻa the"]
for s in norm_cases + [rstr(rng.randint(0, 12)) for _ in range(300)]:
    emit("normalize_answer", metrics.normalize_answer(s), s=s)
    emit("normalize_zh_answer", metrics.normalize_zh_answer(s), s=s)

qa_pairs = [("", ""), ("", "x"), ("x", ""), ("!!!", "!!!"), ("the cat sat", "a cat sat down"),
            ("Paris", "paris."), ("cat cat dog", "cat dog dog"), ("The The", "the"), ("É a", "é"),
            ("unanswerable", "Unanswerable"), ("By conducting a survey among engineers", "By conducting a survey among engineers"),
            ("a survey", "By conducting a survey among engineers")]
for p, g in qa_pairs + [(rstr(rng.randint(0, 10)), rstr(rng.randint(0, 10))) for _ in range(300)]:
    emit("qa_f1_score", metrics.qa_f1_score(p, g), pred=p, gt=g)

WORDS = ["the", "cat", "sat", "on", "mat", "a", "dog", "ran", ".", " . ", "..", " ", "\n", "big", "red", "Cat"]


def rwords(n):
    return " ".join(rng.choice(WORDS) for _ in range(n))


rouge_pairs = [("", ""), ("", "a b"), ("a b", ""), ("...", "a"), ("a", "..."), (" . ", "a"), ("a. .", "a. ."),
               ("the cat sat. on the mat", "the cat on mat"), ("a b c", "c b a"), ("x y", "z w"),
               ("a a a a", "a"), ("a  b", "a b"), (" ", " "), ("a.b.c", "c.b.a")]
for p, g in rouge_pairs + [(rwords(rng.randint(0, 30)), rwords(rng.randint(0, 30))) for _ in range(300)]:
    emit("rouge_score", scorer_rouge(p, g), pred=p, gt=g)
# Around the recursion limit: one long sentence each side.
for n in [985, 989, 990, 991, 1000]:
    s = " ".join("w%d" % i for i in range(n))
    emit("rouge_score", scorer_rouge(s, s), pred=s, gt=s)
for n, m in [(500, 490), (500, 491), (600, 400), (995, 3), (3, 995)]:
    p = " ".join("p%d" % i for i in range(n))
    g = " ".join("g%d" % i for i in range(m))
    emit("rouge_score", scorer_rouge(p, g), pred=p, gt=g)
for _ in range(8):
    n, m = rng.randint(400, 700), rng.randint(400, 700)
    p = " ".join(rng.choice(["a", "b", "c", "d", "e", "f"]) for _ in range(n))
    g = " ".join(rng.choice(["a", "b", "c", "d", "e", "f", "g"]) for _ in range(m))
    emit("rouge_score", scorer_rouge(p, g), pred=p, gt=g)



def recon_steps(x, y):
    # Steps of rouge's _recon backtrack (used only to pick test cases).
    n, m = len(x), len(y)
    t = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            t[i][j] = t[i - 1][j - 1] + 1 if x[i - 1] == y[j - 1] else max(t[i - 1][j], t[i][j - 1])
    i, j, k = n, m, 0
    while i and j:
        if x[i - 1] == y[j - 1]:
            i, j = i - 1, j - 1
        elif t[i - 1][j] > t[i][j - 1]:
            i -= 1
        else:
            j -= 1
        k += 1
    return k


# Pairs whose backtrack needs 985..995 steps, with common words (non-zero F).
found = {}
while len(found) < 11:
    n, m = rng.randint(500, 800), rng.randint(500, 800)
    p = [rng.choice(["a", "b", "c", "d", "e", "f", "g", "h"]) for _ in range(n)]
    g = [rng.choice(["a", "b", "c", "d", "e", "f", "g", "h", "i"]) for _ in range(m)]
    k = recon_steps(g, p)
    if 985 <= k <= 995 and k not in found:
        found[k] = True
        ps, gs = " ".join(p), " ".join(g)
        emit("rouge_score", scorer_rouge(ps, gs), pred=ps, gt=gs, steps=k)

CLS = ["Food", "Date", "Order, rank", "Speed", "Other", "Other entity", "Date of birth", "Abbreviation",
       "Expression abbreviated", "Animal"]
cls_cases = [
    ("Other entity", "Other entity", ["Other", "Other entity"]),
    ("Other entity", "Other entity", ["Other entity", "Other"]),
    ("Date of birth", "Date of birth", ["Date", "Date of birth"]),
    ("Date Date of birth", "Date", ["Date", "Date of birth"]),
    ("Date of birth Other entity", "Other entity", ["Date", "Date of birth", "Other", "Other entity"]),
    ("Other Other entity", "Other entity", ["Other", "Other", "Other entity"]),
    ("Food", "Food", ["Food", "Food"]),
    ("", "Food", ["Food"]),
    ("Food", "Food", []),
    ("Expression abbreviated Abbreviation", "Expression abbreviated", ["Abbreviation", "Expression abbreviated"]),
    ("ab abc abcd", "abcd", ["a", "ab", "abc", "abcd"]),
    ("ab abc abcd", "abcd", ["ab", "a", "abc", "abcd"]),
]
for _ in range(200):
    k = rng.randint(0, 6)
    cl = [rng.choice(CLS) for _ in range(k)]
    pred = " ".join(rng.choice(CLS) for _ in range(rng.randint(0, 4)))
    cls_cases.append((pred, rng.choice(CLS), cl))
for p, g, cl in cls_cases:
    emit("classification_score", metrics.classification_score(p, g, all_classes=cl), pred=p, gt=g, classes=cl)

cnt = [("", "3"), ("3", "3"), ("3 33 3", "3"), ("There are 12 unique, 12", "12"), ("٣ 3", "3"), ("٣", "٣"),
       ("3.5", "3"), ("²", "2"), ("x12y12", "12"), ("012", "12")]
for p, g in cnt:
    emit("count_score", metrics.count_score(p, g), pred=p, gt=g)
ret = [("Paragraph 3", "Paragraph 3"), ("Paragraph 3, Paragraph 30", "Paragraph 3"), ("", "Paragraph 3"),
       ("Paragraph ٣", "Paragraph ٣"), ("The answer is Paragraph 12 or 13", "Paragraph 12"),
       ("3", "Paragraph x Paragraph 3"), ("Paragraph 7", "Paragraph 7 and Paragraph 8")]
for p, g in ret:
    emit("retrieval_score", metrics.retrieval_score(p, g), pred=p, gt=g)
retzh = [("段落3", "段落3"), ("段落3，段落4", "段落4"), ("答案是段落12", "段落12"), ("", "段落1"), ("段落 1 段落1", "段落 1 段落1")]
for p, g in retzh:
    emit("retrieval_zh_score", metrics.retrieval_zh_score(p, g), pred=p, gt=g)

CODECH = list("abcdefghij (){};=.,_\t") + ["  ", "if", "x", "\n"]


def rcode(n):
    return "".join(rng.choice(CODECH) for _ in range(n))


code_cases = [("", ""), ("", "x"), ("x", ""), ("\n\n", ""), ("# c\n// d\n`x`", ""), ("# c\nabc", "abc"),
              ("\n\n\t\tif(beans == null)\n", "\t\tif(beans == null)"), ("abcde", "abcdf"),
              ("abcd", "abce"), ("aaaa", "aaab"), ("a#\nb//\nc`\nd", "d"), ("\nx\ny", "y")]
for _ in range(200):
    code_cases.append((rcode(rng.randint(0, 40)), rcode(rng.randint(0, 40))))
for _ in range(40):  # long ground truths: autojunk (len(b) >= 200)
    code_cases.append((rcode(rng.randint(150, 260)).replace("\n", " "), rcode(rng.randint(195, 320)).replace("\n", " ")))
for p, g in code_cases:
    emit("code_sim_score", metrics.code_sim_score(p, g), pred=p, gt=g)
    a = p.lstrip("\n").split("\n")[0]
    emit("fuzz_ratio", fuzz.ratio(a, g), a=a, b=g)
    emit("seqmatch_ratio", difflib.SequenceMatcher(None, a, g).ratio(), a=a, b=g)
# ratio exactly 0.625 -> 62.5 -> round half even 62
for a, b in [("abcdefgh", "abcdexyz"), ("abcdefgh", "abcwxyzq"), ("abcde", "abcxyz")]:
    emit("fuzz_ratio", fuzz.ratio(a, b), a=a, b=b)
    emit("code_sim_score", metrics.code_sim_score(a, b), pred=a, gt=b)

for x in [0.125, 0.375, 2.675, 1.005, 12.345, 12.355, 99.995, 33.33333333333333, 66.66666666666667, 0.0, 100.0,
          50.0, 1e-9, 0.005, 0.015, 0.025, 12.5, 87.125]:
    emit("round2", round(x, 2), x=x)
for x in [25.0, 0.0, 100.0, 33.33, 1e-05, 0.0001, 1e16, 1234567890123456.0, 1.5e300, 5e-324, -0.0, 12.5, 0.1]:
    emit("repr", repr(x), x=x)

for o in out:
    sys.stdout.write(json.dumps(o, ensure_ascii=False) + "\n")
