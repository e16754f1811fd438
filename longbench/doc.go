// Package longbench re-implements LongBench v1 (THUDM/LongBench, folder
// LongBench/, commit 2e00731) for natsbench: the task table, data reading,
// prompt building, middle truncation, the metrics and the scoring script,
// with the official semantics including their quirks.
//
// What mirrors which official file:
//
//   - tasks.go: the dataset lists of pred.py (21 tasks, 13 LongBench-E
//     tasks), dataset2metric of eval.py, the first-line-cut and chat-template
//     task lists of eval.py / pred.py, and the categories of the README.
//   - config/ (embedded, MIT licence in config/LICENSE.LongBench-MIT):
//     LongBench/config/dataset2prompt.json and dataset2maxlen.json, byte
//     for byte. prompt.go renders them with Python str.format semantics.
//   - reader.go: the HF dataset / data.zip record format (README "data
//     format"): <task>.jsonl and <task>_e.jsonl files, a folder of them, or
//     data.zip.
//   - truncate.go: pred.py's middle truncation and build_chat (llama2), plus
//     a few other chat templates as a model option.
//   - metrics.go, rouge.go, difflib.go, jieba.go: LongBench/metrics.py, with
//     the libraries it calls re-implemented from their algorithms: pltrdy
//     rouge 1.0.1 (rouge/rouge.py, rouge/rouge_score.py), fuzzywuzzy 0.18.0
//     fuzz.ratio (without python-Levenshtein) over Python's
//     difflib.SequenceMatcher, and jieba.cut via cppjieba (gojieba).
//   - score.go, eval.go: LongBench/eval.py (scorer, scorer_e, result.json)
//     and the README's averaging.
//   - pyutil.go: the Python / NumPy behaviour the above depends on
//     (str.split, str.lower, re's \w, \d and \b, round, np.mean, np.round,
//     float repr).
//
// Known deviations from the official code are listed in the doc comments of
// the functions concerned; in short: where the official script would raise
// (malformed line, unknown file, retrieval answer without a paragraph id,
// null all_classes) this package reports and scores 0 or skips, and the
// Chinese segmentation is cppjieba's, which is close to but not guaranteed
// identical with Python jieba.
package longbench
