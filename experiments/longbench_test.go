package experiments

import (
	"archive/zip"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"natsbench/longbench"
	"natsbench/results"
	"natsbench/sweeps"
)

var updateTestdata = flag.Bool("update", false, "rewrite the generated files in testdata/longbench")

// longbenchData is the bundled LongBench sample, seen from the package folder.
const longbenchData = "../testdata/longbench"

// genPassageRetrieval builds the synthetic rows of testdata/longbench/passage_retrieval_en.jsonl from a PG-19
// test book: each sample lists `paras` consecutive paragraphs of 30–80 words as "Paragraph i: …" (the official
// context format), the input is the first 20 words of one of them, verbatim, and the answer is "Paragraph k";
// eval.py scores it with retrieval_score. Lines follow the official data files: json.dumps key order and
// separators, length = whitespace words of context and input, _id = the first 48 hex digits of SHA-256.
func genPassageRetrieval(book string, n, paras int) ([]byte, error) {
	text, err := os.ReadFile(book)
	if err != nil {
		return nil, err
	}
	var ps []string
	for _, p := range regexp.MustCompile(`\n\s*\n`).Split(string(text), -1) {
		if w := strings.Fields(p); len(w) >= 30 && len(w) <= 80 {
			ps = append(ps, strings.Join(w, " "))
		}
	}
	if len(ps) < n*2*paras {
		return nil, fmt.Errorf("%s: %d paragraphs of 30–80 words, need %d", book, len(ps), n*2*paras)
	}
	var b bytes.Buffer
	for i := 0; i < n; i++ {
		group := ps[i*2*paras : i*2*paras+paras] // every other run of paragraphs, so samples do not overlap
		k := (i*2)%paras + 1
		var ctx []string
		for j, p := range group {
			ctx = append(ctx, fmt.Sprintf("Paragraph %d: %s", j+1, p))
		}
		context := strings.Join(ctx, "\n\n")
		input := strings.Join(strings.Fields(group[k-1])[:20], " ")
		sum := sha256.Sum256([]byte(context + input))
		fmt.Fprintf(&b, `{"input": %s, "context": %s, "answers": [%s], "length": %d, "dataset": "passage_retrieval_en", "language": "en", "all_classes": null, "_id": "%s"}`+"\n",
			longbench.PyJSONString(input), longbench.PyJSONString(context), longbench.PyJSONString(fmt.Sprintf("Paragraph %d", k)),
			len(strings.Fields(context))+len(strings.Fields(input)), hex.EncodeToString(sum[:])[:48])
	}
	return b.Bytes(), nil
}

// TestLongBenchTestdata: the generated task file is what the generator makes from the bundled PG-19 sample
// (refresh with go test ./experiments -run TestLongBenchTestdata -update), and every bundled file reads cleanly.
func TestLongBenchTestdata(t *testing.T) {
	got, err := genPassageRetrieval("../testdata/pg19/test/35920.txt", 3, 5)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(longbenchData, "passage_retrieval_en.jsonl")
	if *updateTestdata {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the generator's output (go test ./experiments -run TestLongBenchTestdata -update)", path)
	}
	sets, err := longbench.ReadDir(longbenchData)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"lcc", "qasper", "trec", "passage_retrieval_en"} {
		d := sets[name]
		if d == nil || len(d.Errors) > 0 || len(d.Samples) == 0 {
			t.Fatalf("%s: %+v", name, d)
		}
		for _, s := range d.Samples {
			if s.Dataset != name {
				t.Errorf("%s: sample %s has dataset %q", name, s.ID, s.Dataset)
			}
		}
	}
}

// lbRun is a longbench run of the tiny model trained by the run "src" of tinyRun.
func lbRun(data, name, method string, m map[string]any, lb map[string]any, src string) sweeps.Run {
	if m == nil {
		m = map[string]any{"name": method}
	}
	r := tinyRun(data, name, method, map[string]any{"method": m, "longbench": lb})
	r.Kind, r.FromKey, r.FromID = "longbench", src+",seed=0", src+"id"
	return r
}

// predLine is one line of a prediction file, decoded with its keys in file order.
type predLine struct {
	keys []string
	obj  map[string]json.RawMessage
}

func readPredFile(t *testing.T, path string) []predLine {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []predLine
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<24)
	for sc.Scan() {
		var pl predLine
		dec := json.NewDecoder(bytes.NewReader(sc.Bytes()))
		dec.Token()
		for dec.More() {
			k, _ := dec.Token()
			var v json.RawMessage
			if err := dec.Decode(&v); err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			pl.keys = append(pl.keys, k.(string))
		}
		if err := json.Unmarshal(sc.Bytes(), &pl.obj); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		out = append(out, pl)
	}
	return out
}

// TestLongBenchRun predicts the bundled LongBench sample (three real rows and three generated ones) with a tiny
// trained model under full attention, H2O and NAtS, and checks the official-format prediction files, result.json,
// samples.jsonl, the rows, the KV fractions, and that the prediction files re-score to the same numbers with
// longbench.EvalDir.
func TestLongBenchRun(t *testing.T) {
	data := corpus(t)
	out := t.TempDir()
	dirOf := func(name string) string {
		d := filepath.Join(out, "t", name)
		os.MkdirAll(d, 0o755)
		return d
	}
	natsM := map[string]any{"name": "nats", "lambda": 1e-2, "window": 4, "chunk_size": 1}
	for _, r := range []sweeps.Run{tinyRun(data, "full", "full", nil), tinyRun(data, "nats", "nats", map[string]any{"method": natsM})} {
		if err := Run(context.Background(), r, dirOf(r.Name), "", Env{}); err != nil {
			t.Fatal(err)
		}
	}
	sets, err := longbench.ReadDir(longbenchData)
	if err != nil {
		t.Fatal(err)
	}
	tasks := []string{"qasper", "trec", "passage_retrieval_en", "lcc"} // the official order
	lb := map[string]any{"data": longbenchData, "max_new_tokens": 4}
	runs := []sweeps.Run{
		lbRun(data, "lb-full", "full", nil, lb, "full"),
		lbRun(data, "lb-h2o", "h2o", map[string]any{"name": "h2o", "budget": 8, "recent": 2}, lb, "full"),
		lbRun(data, "lb-nats", "nats", natsM, lb, "nats"),
	}
	kvMean := map[string]float64{}
	for _, r := range runs {
		if err := Validate(r); err != nil {
			t.Fatal(err)
		}
		dir := dirOf(r.Name)
		var log bytes.Buffer
		src, _, _ := strings.Cut(r.FromKey, ",")
		if err := Run(context.Background(), r, dir, filepath.Join(out, "t", src), Env{Log: &log}); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(log.String(), "6/6 lcc 1/1") {
			t.Errorf("%s: no progress line per sample:\n%s", r.Name, log.String())
		}
		// Prediction files: pred.py's keys in its order, one line per sample, answers etc. copied from the data.
		pdir := filepath.Join(dir, predDir)
		var scoresFromFiles []float64
		for _, task := range tasks {
			lines := readPredFile(t, filepath.Join(pdir, task+".jsonl"))
			samples := sets[task].Samples
			if len(lines) != len(samples) {
				t.Fatalf("%s/%s: %d lines for %d samples", r.Name, task, len(lines), len(samples))
			}
			for i, l := range lines {
				if !slices.Equal(l.keys, []string{"pred", "answers", "all_classes", "length"}) {
					t.Fatalf("%s/%s line %d: keys %v", r.Name, task, i+1, l.keys)
				}
				var answers, classes []string
				var length int
				json.Unmarshal(l.obj["answers"], &answers)
				json.Unmarshal(l.obj["all_classes"], &classes)
				json.Unmarshal(l.obj["length"], &length)
				if !slices.Equal(answers, samples[i].Answers) || !slices.Equal(classes, samples[i].AllClasses) || length != samples[i].Length {
					t.Errorf("%s/%s line %d: answers/all_classes/length not copied from the data", r.Name, task, i+1)
				}
			}
		}
		// result.json and the rows agree; the rows hold the unrounded scores.
		var resJSON map[string]float64
		raw, err := os.ReadFile(filepath.Join(pdir, "result.json"))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(raw, &resJSON); err != nil {
			t.Fatal(err)
		}
		rows, err := results.ReadRows(filepath.Join(dir, results.MetricsFile))
		if err != nil {
			t.Fatal(err)
		}
		get := func(task, metric string) results.Row {
			for _, row := range rows {
				if row.Task == task && row.Metric == metric {
					return row
				}
			}
			t.Fatalf("%s: no row %s %s", r.Name, task, metric)
			return results.Row{}
		}
		metricOf := map[string]string{"qasper": "qa_f1", "trec": "classification", "passage_retrieval_en": "retrieval", "lcc": "code_sim"}
		// Re-scoring a copy of the prediction files with the official-format scorer gives the same numbers.
		copyDir := t.TempDir()
		for _, task := range tasks {
			b, _ := os.ReadFile(filepath.Join(pdir, task+".jsonl"))
			os.WriteFile(filepath.Join(copyDir, task+".jsonl"), b, 0o644)
		}
		res, err := longbench.EvalDir(copyDir, false)
		if err != nil || len(res.Errors) > 0 || len(res.Tasks) != 4 {
			t.Fatalf("%s: re-score: %v %v %d tasks", r.Name, err, res.Errors, len(res.Tasks))
		}
		var kvs []float64
		for _, tr := range res.Tasks {
			row := get("longbench/"+tr.Task, metricOf[tr.Task])
			if row.Value != tr.Score || row.N != int64(tr.Count) || resJSON[tr.Task] != tr.Rounded {
				t.Errorf("%s/%s: row %v (n %d), result.json %v; re-scored %v (n %d, rounded %v)", r.Name, tr.Task, row.Value, row.N,
					resJSON[tr.Task], tr.Score, tr.Count, tr.Rounded)
			}
			scoresFromFiles = append(scoresFromFiles, tr.Score)
			kv := get("longbench/"+tr.Task, "kv_fraction").Value
			kvs = append(kvs, kv)
			if kv <= 0 || kv > 1 || math.IsNaN(kv) {
				t.Errorf("%s/%s: kv_fraction %v", r.Name, tr.Task, kv)
			}
		}
		avg := get("longbench/mean_16_en_code", "longbench_avg")
		want := (scoresFromFiles[0] + scoresFromFiles[1] + scoresFromFiles[2] + scoresFromFiles[3]) / 4
		if math.Abs(avg.Value-want) > 1e-9 || avg.N != 4 {
			t.Errorf("%s: mean_16_en_code %v (n %d), want %v", r.Name, avg.Value, avg.N, want)
		}
		get("longbench/avg_en_categories", "longbench_avg")
		for _, row := range rows {
			if row.Task == "longbench/avg_zh_categories" {
				t.Errorf("%s: a Chinese average without a Chinese task", r.Name)
			}
		}
		kvMean[r.Name] = get("longbench/mean_16_en_code", "kv_fraction").Value
		// samples.jsonl: one line per sample with its score and KV fraction; scores average to the task rows.
		sb, err := os.ReadFile(filepath.Join(dir, samplesFile))
		if err != nil {
			t.Fatal(err)
		}
		var recs []lbSample
		for _, line := range strings.Split(strings.TrimSpace(string(sb)), "\n") {
			var s lbSample
			if err := json.Unmarshal([]byte(line), &s); err != nil {
				t.Fatal(err)
			}
			recs = append(recs, s)
		}
		if len(recs) != 6 {
			t.Fatalf("%s: %d samples", r.Name, len(recs))
		}
		for _, s := range recs {
			if s.ID == "" || s.TokensIn < 1 || s.TokensIn > 60 || s.TokensOut < 1 || s.TokensOut > 4 || !s.Truncated {
				t.Errorf("%s: sample %+v", r.Name, s)
			}
			if got := longbench.ScoreSample(s.Task, s.Pred, s.Answers, s.AllClasses); got != s.Score {
				t.Errorf("%s: sample %s: score %v, ScoreSample %v", r.Name, s.ID, s.Score, got)
			}
		}
	}
	if kvMean["lb-full"] != 1 {
		t.Errorf("full attention kv_fraction %v, want 1", kvMean["lb-full"])
	}
	if kvMean["lb-h2o"] >= 0.5 { // budget 8 of ~64 tokens
		t.Errorf("h2o (budget 8) kv_fraction %v, want well below 1", kvMean["lb-h2o"])
	}
	if kvMean["lb-nats"] >= 1 {
		t.Errorf("nats kv_fraction %v, want < 1", kvMean["lb-nats"])
	}
}

// TestLongBenchValidate: bad [longbench] tables are refused before anything runs, naming the field.
func TestLongBenchValidate(t *testing.T) {
	data := corpus(t)
	lb := func(kv map[string]any) map[string]any {
		m := map[string]any{"data": longbenchData}
		for k, v := range kv {
			m[k] = v
		}
		return m
	}
	noFrom := lbRun(data, "x", "full", nil, lb(nil), "full")
	noFrom.FromKey = ""
	cases := []struct {
		name string
		run  sweeps.Run
		want string
	}{
		{"no from", noFrom, "from"},
		{"unknown task", lbRun(data, "x", "full", nil, lb(map[string]any{"tasks": []any{"qaspr"}}), "full"), `did you mean "qasper"`},
		{"E task", lbRun(data, "x", "full", nil, lb(map[string]any{"tasks": []any{"qasper_e"}}), "full"), "LongBench-E"},
		{"missing data", lbRun(data, "x", "full", nil, map[string]any{"data": "nope.zip"}, "full"), "longbench.data"},
		{"chat template", lbRun(data, "x", "full", nil, lb(map[string]any{"chat_template": "llama9"}), "full"), "chat_template"},
		{"negative", lbRun(data, "x", "full", nil, lb(map[string]any{"max_samples": -1}), "full"), "max_samples"},
		{"unknown key", lbRun(data, "x", "full", nil, lb(map[string]any{"max_len": 3}), "full"), "max_len"},
		{"nats chunk", lbRun(data, "x", "nats", map[string]any{"name": "nats", "window": 8, "chunk_size": 4}, lb(map[string]any{"prefill_chunk": 6}), "nats"), "prefill_chunk"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := Validate(c.run)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Validate = %v, want an error mentioning %q", err, c.want)
			}
		})
	}
	if err := Validate(lbRun(data, "x", "full", nil, lb(nil), "full")); err != nil {
		t.Fatal(err)
	}
}

// TestLoadLongBenchData reads the three data forms (folder, data.zip, one file), keeps the official task order,
// cuts to max_samples, skips LongBench-E files unless asked, and names the file of a malformed line.
func TestLoadLongBenchData(t *testing.T) {
	names := func(ts []lbTask) (out []string) {
		for _, x := range ts {
			out = append(out, fmt.Sprintf("%s:%d", x.name, len(x.samples)))
		}
		return out
	}
	ts, err := loadLongBenchData(LongBenchConfig{Data: longbenchData, MaxSamples: 2})
	if err != nil {
		t.Fatal(err)
	}
	if got := names(ts); !slices.Equal(got, []string{"qasper:1", "trec:1", "passage_retrieval_en:2", "lcc:1"}) {
		t.Errorf("folder: %v", got)
	}
	// data.zip with data/<task>.jsonl and a LongBench-E file.
	trec, _ := os.ReadFile(filepath.Join(longbenchData, "trec.jsonl"))
	zpath := filepath.Join(t.TempDir(), "data.zip")
	zf, _ := os.Create(zpath)
	zw := zip.NewWriter(zf)
	for _, n := range []string{"data/trec.jsonl", "data/trec_e.jsonl"} {
		w, _ := zw.Create(n)
		w.Write(trec)
	}
	zw.Close()
	zf.Close()
	ts, err = loadLongBenchData(LongBenchConfig{Data: zpath})
	if err != nil || !slices.Equal(names(ts), []string{"trec:1"}) {
		t.Errorf("zip: %v %v", names(ts), err)
	}
	ts, err = loadLongBenchData(LongBenchConfig{Data: filepath.Join(longbenchData, "lcc.jsonl")})
	if err != nil || !slices.Equal(names(ts), []string{"lcc:1"}) {
		t.Errorf("one file: %v %v", names(ts), err)
	}
	if _, err := loadLongBenchData(LongBenchConfig{Data: longbenchData, Tasks: []string{"hotpotqa"}}); err == nil || !strings.Contains(err.Error(), "hotpotqa.jsonl") {
		t.Errorf("absent task: %v", err)
	}
	bad := t.TempDir()
	os.WriteFile(filepath.Join(bad, "qasper.jsonl"), []byte("{\"input\": 1}\n"), 0o644)
	if _, err := loadLongBenchData(LongBenchConfig{Data: bad}); err == nil || !strings.Contains(err.Error(), "qasper.jsonl:1") {
		t.Errorf("malformed line: %v", err)
	}
}
