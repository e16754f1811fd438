package experiments

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"natsbench/internal/progress"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/gomlx/compute"

	"natsbench/engine"
	"natsbench/longbench"
	"natsbench/model"
	"natsbench/pg19"
	"natsbench/results"
)

// Files a longbench run leaves in its folder besides metrics.parquet.
const (
	// predDir holds <task>.jsonl in pred.py's format and eval.py's result.json.
	predDir = "pred"
	// samplesFile holds one JSON line per sample: id, task, pred, answers, score, kv_fraction, tokens, time.
	samplesFile = "samples.jsonl"
)

// longbenchMetric maps a LongBench metric function to the registered result metric.
var longbenchMetric = map[string]string{
	longbench.MetricQAF1: "qa_f1", longbench.MetricQAF1ZH: "qa_f1", longbench.MetricRouge: "rouge_l",
	longbench.MetricRougeZH: "rouge_l", longbench.MetricClassify: "classification", longbench.MetricCount: "count",
	longbench.MetricRetrieval: "retrieval", longbench.MetricRetrievalZH: "retrieval", longbench.MetricCodeSim: "code_sim",
}

// gpt2Tokenizer adapts pg19's GPT-2 BPE to longbench.Tokenizer. Encode is tiktoken's encode_ordinary, as Hugging
// Face's GPT-2 tokenizer does without adding BOS; Decode skips EOT (the only special token: skip_special_tokens)
// and ids past the GPT-2 vocabulary (the model's padded embedding rows). The interface has no error results: the
// first error is kept in err and checked by the caller after each sample.
type gpt2Tokenizer struct {
	tok *pg19.Tokenizer
	err error
}

func (g *gpt2Tokenizer) Encode(text string) []int {
	ids, err := g.tok.Encode(text)
	if err != nil && g.err == nil {
		g.err = err
	}
	out := make([]int, len(ids))
	for i, id := range ids {
		out[i] = int(id)
	}
	return out
}

func (g *gpt2Tokenizer) Decode(ids []int) string {
	toks := make([]uint16, 0, len(ids))
	for _, id := range ids {
		if id >= 0 && id < pg19.EOT {
			toks = append(toks, uint16(id))
		}
	}
	s, err := g.tok.Decode(toks)
	if err != nil && g.err == nil {
		g.err = err
	}
	return s
}

// Err returns the first encoding or decoding error.
func (g *gpt2Tokenizer) Err() error { return g.err }

// lbTokenizer is a model's tokenizer as LongBench prediction uses it: Encode as tokenizer(prompt).input_ids (special
// tokens such as BOS included), Decode with skip_special_tokens; Err reports the first error of either (the
// longbench.Tokenizer interface has no error results).
type lbTokenizer interface {
	longbench.Tokenizer
	Err() error
}

// lbGenerate decodes greedily from the prompt ids of a sample of task index ti with at most maxNew new tokens. It
// returns the generated tokens without a final EOS, the number of tokens emitted (a final EOS included), whether
// decoding stopped at an EOS, and the KV fraction and kept keys at the end of generation (NATS-SPEC §1.9).
type lbGenerate func(ti int, ids []int, maxNew int) (gen []int, emitted int, eos bool, kvFrac, kvTok float64, err error)

// lbTask is one task's samples as read from longbench.data.
type lbTask struct {
	name, file string
	samples    []longbench.Sample
}

// loadLongBenchData reads longbench.data (a folder of <task>.jsonl files, the official data.zip, or one
// <task>.jsonl) and returns the selected tasks in the official order, each cut to max_samples. With no task list,
// every LongBench v1 file present is used and LongBench-E files (<task>_e.jsonl, also in data.zip) are skipped.
// A malformed line, an unknown file name or a requested task that is absent or empty is an error naming the file.
func loadLongBenchData(lc LongBenchConfig) ([]lbTask, error) {
	st, err := os.Stat(lc.Data)
	if err != nil {
		return nil, fmt.Errorf("longbench.data = %q: %w", lc.Data, err)
	}
	var sets map[string]*longbench.Dataset
	switch {
	case st.IsDir():
		sets, err = longbench.ReadDir(lc.Data)
	case strings.HasSuffix(lc.Data, ".zip"):
		sets, err = longbench.ReadZip(lc.Data)
	case strings.HasSuffix(lc.Data, ".jsonl"):
		var d *longbench.Dataset
		d, err = longbench.ReadFile(lc.Data)
		if d != nil {
			sets = map[string]*longbench.Dataset{d.Name: d}
		}
	default:
		return nil, fmt.Errorf("longbench.data = %q: want a folder, a .zip or a .jsonl file", lc.Data)
	}
	if err != nil {
		return nil, fmt.Errorf("longbench.data = %q: %w", lc.Data, err)
	}
	for _, d := range sets {
		if len(d.Errors) > 0 {
			return nil, fmt.Errorf("longbench.data: %d malformed line(s), first: %w", len(d.Errors), d.Errors[0])
		}
		if _, err := longbench.Task(d.Task); err != nil {
			return nil, fmt.Errorf("longbench.data: %s: the file name is not a LongBench task: %w", d.File, err)
		}
	}
	want := lc.Tasks
	if len(want) == 0 {
		for _, name := range longbench.TaskNames() {
			if _, ok := sets[name]; ok {
				want = append(want, name)
			}
		}
		if len(want) == 0 {
			return nil, fmt.Errorf("longbench.data = %q: no LongBench v1 <task>.jsonl file found", lc.Data)
		}
	}
	var out []lbTask
	for _, name := range longbench.TaskNames() { // the official order, whatever the order of longbench.tasks
		if !slices.Contains(want, name) {
			continue
		}
		d, ok := sets[name]
		if !ok {
			return nil, fmt.Errorf("longbench.data = %q has no %s.jsonl (longbench.tasks asks for it)", lc.Data, name)
		}
		if len(d.Samples) == 0 {
			return nil, fmt.Errorf("longbench.data: %s has no sample", d.File)
		}
		s := d.Samples
		if lc.MaxSamples > 0 && len(s) > lc.MaxSamples {
			s = s[:lc.MaxSamples]
		}
		out = append(out, lbTask{name: name, file: d.File, samples: s})
	}
	return out, nil
}

// lbSample is the record of one predicted sample (a line of samples.jsonl).
type lbSample struct {
	ID         string   `json:"id"`
	Task       string   `json:"task"`
	Pred       string   `json:"pred"`
	Answers    []string `json:"answers"`
	AllClasses []string `json:"all_classes"`
	Length     int      `json:"length"`
	Score      float64  `json:"score"`       // eval.py's sample score in [0, 1]
	KVFraction float64  `json:"kv_fraction"` // kept keys / tokens seen at the end of generation (NATS-SPEC §1.9)
	KVTokens   float64  `json:"kv_tokens"`   // kept keys, mean over layers and heads
	TokensIn   int      `json:"tokens_in"`   // prompt tokens after truncation
	TokensOut  int      `json:"tokens_out"`  // generated tokens, the final EOT included
	Truncated  bool     `json:"truncated"`   // the prompt was cut in the middle
	Stop       string   `json:"stop"`        // "eos" or "length"
	Seconds    float64  `json:"seconds"`     // wall time of prompt building, prefill and decoding
}

// longBenchInputs is what both longbench paths (natsbench's LM, a Llama-family model) read first: the chat
// template, the tasks' samples and the backend.
func longBenchInputs(lc LongBenchConfig, env Env) (longbench.ChatTemplate, []lbTask, compute.Backend, error) {
	chat, err := longbench.ParseChatTemplate(lc.ChatTemplate)
	if err != nil {
		return chat, nil, nil, err
	}
	tasks, err := loadLongBenchData(lc)
	if err != nil {
		return chat, nil, nil, err
	}
	backend, err := model.NewBackend(env.Backend)
	return chat, tasks, backend, err
}

// runLongBench predicts LongBench v1 with the KV-cache engine under the run's cache policy and scores the
// predictions with the official eval.py semantics (NATS-SPEC §3.6, §7.3, §7.4). The model comes from the `from`
// run. For each sample: the official prompt (no chat template unless longbench.chat_template says otherwise),
// middle truncation to max_length tokens, a chunked prefill, greedy decoding of at most the task's max new
// tokens that stops at EOT, and the KV fraction (kept keys / tokens seen at the end of generation, mean over
// layers and KV heads). It writes DIR/pred/<task>.jsonl (pred.py's lines of pred, answers, all_classes, length,
// each file written whole and atomically), DIR/samples.jsonl, DIR/pred/result.json (longbench.EvalDir) and rows:
// per task "longbench/<task>" the task's metric (100 × mean sample score, unrounded), kv_fraction and kv_tokens
// (means over samples); per averaging "longbench/<avg>" (avg_en_categories: the README's mean of category means;
// avg_zh_categories; mean_16_en_code: the plain mean over the English and code tasks present) longbench_avg and
// kv_fraction averaged the same way. Missing averages (no task of that kind) are left out.
//
// The KV fraction's denominator is the number of tokens the cache has seen: the prompt plus the generated tokens
// fed back (a final EOT is emitted but never fed), so full attention gives exactly 1.
func runLongBench(ctx context.Context, rc RunConfig, info runInfo, dir, fromDir string, env Env) error {
	lc := rc.LongBench
	if fromDir == "" {
		return fmt.Errorf("%s: kind longbench needs `from` (the run whose trained model to evaluate)", info.key)
	}
	chat, tasks, backend, err := longBenchInputs(lc, env)
	if err != nil {
		return err
	}
	masker, evictor, err := rc.Method.Build()
	if err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(fromDir, adapterFile)); err == nil {
		return fmt.Errorf("from: %s is a finetune run (it holds %s): set finetune.model (and finetune.tokenizer) to its base model to evaluate a Llama-family model",
			fromDir, adapterFile)
	}
	mcfg, params, err := loadFinal(fromDir, masker)
	if err != nil {
		return err
	}
	if mcfg.VocabSize < pg19.VocabSize {
		return fmt.Errorf("from: %s: model.vocab_size = %d is smaller than GPT-2's %d", fromDir, mcfg.VocabSize, pg19.VocabSize)
	}
	// Per task: the generation budget and the prompt budget. An explicit max_length may pass the trained length
	// (RoPE has no learned positions, as in the latency kind); the default keeps prompt + answer within it.
	trained := mcfg.MaxSeqLen
	maxLen, maxNew, err := lbLengths(lc, tasks, trained, "model.max_seq_len")
	if err != nil {
		return err
	}
	longestNew := 0
	for i := range tasks {
		mcfg.MaxSeqLen = max(mcfg.MaxSeqLen, maxLen[i]+maxNew[i])
		longestNew = max(longestNew, maxNew[i])
	}
	if mcfg.MaxSeqLen > trained {
		fmt.Fprintf(env.Log, "  longbench %s: prompts of up to %d tokens pass the trained max_seq_len %d (RoPE extrapolation)\n",
			short(info.key), mcfg.MaxSeqLen, trained)
	}
	e, err := engine.New(backend, mcfg, masker, evictor, params, engine.Options{EOS: []int32{pg19.EOT}, MaxNewTokens: longestNew})
	if err != nil {
		return fmt.Errorf("%s: %w", info.key, err)
	}
	nc := 1
	if rc.Method.Name == "nats" {
		nc = max(rc.Method.ChunkSize, 1)
	}
	tok := &gpt2Tokenizer{tok: pg19.NewTokenizer()}
	chunks := make([]int, len(tasks))
	for ti := range tasks {
		// One prefill chunk length per task (graphs are reused across its samples): the configured chunk, or the
		// whole prompt budget when shorter, rounded up to the NAtS chunk size.
		chunks[ti] = min(lc.PrefillChunk, (maxLen[ti]+nc-1)/nc*nc)
	}
	gen := func(ti int, ids []int, maxNew int) ([]int, int, bool, float64, float64, error) {
		in := make([]int32, len(ids))
		for i, id := range ids {
			in[i] = int32(id)
		}
		if _, err := e.Prefill([][]int32{in}, chunks[ti]); err != nil {
			return nil, 0, false, 0, 0, err
		}
		dr, err := e.Decode(maxNew)
		if err != nil {
			return nil, 0, false, 0, 0, err
		}
		g := dr.Tokens[0]
		emitted, eos := len(g), false
		if n := len(g); n > 0 && g[n-1] == pg19.EOT {
			g, eos = g[:n-1], true
		}
		out := make([]int, len(g))
		for i, t := range g {
			out[i] = int(t)
		}
		return out, emitted, eos, e.KVFraction(), e.KVTokens(), nil
	}
	return predictLongBench(ctx, info, dir, env, tasks, chat, maxLen, maxNew, tok, gen, longbench.PostNone)
}

// lbLengths returns per task the prompt budget (longbench.max_length, or room − the task's new tokens) and the
// new-token budget (longbench.max_new_tokens, or the task's official one); room is the model's length, named
// roomName in errors.
func lbLengths(lc LongBenchConfig, tasks []lbTask, room int, roomName string) (maxLen, maxNew []int, err error) {
	maxNew = make([]int, len(tasks))
	maxLen = make([]int, len(tasks))
	for i, t := range tasks {
		ti, _ := longbench.Task(t.name)
		maxNew[i] = ti.MaxNewTokens
		if lc.MaxNewTokens > 0 {
			maxNew[i] = lc.MaxNewTokens
		}
		maxLen[i] = lc.MaxLength
		if maxLen[i] == 0 {
			maxLen[i] = room - maxNew[i]
			if maxLen[i] < 1 {
				return nil, nil, fmt.Errorf("longbench: task %s: max new tokens %d leave no prompt room in %s = %d; set longbench.max_new_tokens or longbench.max_length",
					t.name, maxNew[i], roomName, room)
			}
		}
	}
	return maxLen, maxNew, nil
}

// predictLongBench predicts every sample of tasks with gen (prompts built by tok, middle-truncated to maxLen[ti]
// tokens, at most maxNew[ti] new tokens; each answer post-processed by post), writes DIR/pred/<task>.jsonl, scores them (DIR/pred/result.json) and
// writes DIR/samples.jsonl and the rows: the part of runLongBench shared by every model family.
func predictLongBench(ctx context.Context, info runInfo, dir string, env Env, tasks []lbTask, chat longbench.ChatTemplate,
	maxLen, maxNew []int, tok lbTokenizer, gen lbGenerate, post longbench.PostProcess) error {
	pdir := filepath.Join(dir, predDir)
	if err := os.RemoveAll(pdir); err != nil { // a rerun starts over: no stale prediction file may be scored
		return err
	}
	if err := os.MkdirAll(pdir, 0o755); err != nil {
		return err
	}
	var all []lbSample
	total := 0
	for _, t := range tasks {
		total += len(t.samples)
	}
	done := 0
	live := progress.New(env.Log)
	for ti, t := range tasks {
		var lines bytes.Buffer
		for si, s := range t.samples {
			if err := ctx.Err(); err != nil {
				return err
			}
			where := fmt.Sprintf("%s line %d", t.file, si+1)
			if s.ID != "" {
				where += " (_id " + s.ID + ")"
			}
			rec, err := predictSample(tok, post, t.name, s, maxLen[ti], maxNew[ti], chat, func(ids []int, maxNew int) ([]int, int, bool, float64, float64, error) {
				return gen(ti, ids, maxNew)
			})
			if err != nil {
				return fmt.Errorf("%s: longbench %s: %w", info.key, where, err)
			}
			rec.ID = s.ID
			if rec.ID == "" {
				rec.ID = fmt.Sprintf("%s-%d", t.name, si)
			}
			writePredLine(&lines, rec)
			all = append(all, rec)
			done++
			live.Update("  longbench %-24s %d/%d %s %d/%d: %d+%d tokens, kv %.3f, %.1fs   ", short(info.key), done, total,
				t.name, si+1, len(t.samples), rec.TokensIn, rec.TokensOut, rec.KVFraction, rec.Seconds)
		}
		path := filepath.Join(pdir, t.name+".jsonl")
		if err := results.WriteFileAtomic(path, func(w io.Writer) error { _, err := w.Write(lines.Bytes()); return err }); err != nil {
			return err
		}
	}
	live.End()

	res, err := longbench.EvalDir(pdir, false)
	if err != nil {
		return err
	}
	if len(res.Errors) > 0 {
		return fmt.Errorf("%s: scoring %s: %w", info.key, pdir, res.Errors[0])
	}
	rows, err := longbenchRows(info, tasks, res, all)
	if err != nil {
		return err
	}
	for _, tr := range res.Tasks {
		fmt.Fprintf(env.Log, "  longbench %s %-20s n=%-4d score %6.2f\n", short(info.key), tr.Task, tr.Count, tr.Rounded)
	}
	if err := writeSamples(filepath.Join(dir, samplesFile), all); err != nil {
		return err
	}
	return results.WriteRows(filepath.Join(dir, results.MetricsFile), rows)
}

// predictSample builds, truncates and tokenises one prompt, decodes greedily with gen, post-processes the decoded
// answer (post: longbench.PostNone or PostLlama3, resolved) and returns the sample's record (score not yet set).
func predictSample(tok lbTokenizer, post longbench.PostProcess, task string, s longbench.Sample, maxLen, maxNew int, chat longbench.ChatTemplate,
	gen func(ids []int, maxNew int) ([]int, int, bool, float64, float64, error)) (lbSample, error) {
	start := time.Now()
	prompt, err := longbench.BuildModelPrompt(task, s, tok, maxLen, chat)
	if err != nil {
		return lbSample{}, err
	}
	ids := tok.Encode(prompt)
	if err := tok.Err(); err != nil {
		return lbSample{}, err
	}
	rec := lbSample{Task: task, Answers: s.Answers, AllClasses: s.AllClasses, Length: s.Length}
	if whole, err := longbench.BuildModelPrompt(task, s, nil, 0, chat); err == nil { // nil tokenizer: no truncation
		rec.Truncated = whole != prompt
	}
	if len(ids) > maxLen {
		// Re-encoding the two decoded halves can merge differently at the seam and give a token more than
		// max_length: cut it in the middle at the token level so that prompt + answer fit the model.
		half := maxLen / 2
		ids = append(ids[:half:half], ids[len(ids)-(maxLen-half):]...)
	}
	if len(ids) == 0 {
		return lbSample{}, fmt.Errorf("empty prompt")
	}
	out, emitted, eos, kvFrac, kvTok, err := gen(ids, maxNew)
	if err != nil {
		return lbSample{}, err
	}
	rec.TokensIn, rec.TokensOut, rec.Stop = len(ids), emitted, "length"
	if eos {
		rec.Stop = "eos"
	}
	rec.Pred = tok.Decode(out)
	if err := tok.Err(); err != nil {
		return lbSample{}, err
	}
	if rec.Pred, err = post.Apply(rec.Pred); err != nil { // the answer only, never the prompt (hf_pred.py)
		return lbSample{}, err
	}
	rec.KVFraction, rec.KVTokens = kvFrac, kvTok
	rec.Seconds = time.Since(start).Seconds()
	return rec, nil
}

// writePredLine appends one line of pred.py's output, json.dump({"pred", "answers", "all_classes", "length"},
// ensure_ascii=False) + "\n": Python's separators and escapes, keys in pred.py's order.
func writePredLine(b *bytes.Buffer, r lbSample) {
	b.WriteString(`{"pred": `)
	b.WriteString(longbench.PyJSONString(r.Pred))
	b.WriteString(`, "answers": `)
	writePyList(b, r.Answers)
	b.WriteString(`, "all_classes": `)
	if r.AllClasses == nil {
		b.WriteString("null")
	} else {
		writePyList(b, r.AllClasses)
	}
	fmt.Fprintf(b, `, "length": %d}`+"\n", r.Length)
}

func writePyList(b *bytes.Buffer, l []string) {
	b.WriteByte('[')
	for i, s := range l {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(longbench.PyJSONString(s))
	}
	b.WriteByte(']')
}

// writeSamples writes samples.jsonl atomically (one JSON object per sample, in prediction order).
func writeSamples(path string, all []lbSample) error {
	return results.WriteFileAtomic(path, func(w io.Writer) error {
		enc := json.NewEncoder(w)
		enc.SetEscapeHTML(false)
		for _, s := range all {
			if err := enc.Encode(s); err != nil {
				return err
			}
		}
		return nil
	})
}

// longbenchRows sets each sample's score from the evaluation (eval.py's, including its all_classes quirk) and
// returns the result rows.
func longbenchRows(info runInfo, tasks []lbTask, res longbench.Result, all []lbSample) ([]Row, error) {
	byTask := map[string]longbench.TaskResult{}
	for _, tr := range res.Tasks {
		byTask[tr.Task] = tr
	}
	now := time.Now()
	mk := func(task, metric string, v float64, n int) Row {
		r := info.row("longbench/"+task, "test", metric, math.NaN(), v, int64(n))
		r.Time = now
		return r
	}
	var rows []Row
	scores, kvs := map[string]float64{}, map[string]float64{}
	off := 0
	for _, t := range tasks {
		tr, ok := byTask[t.name]
		if !ok || tr.Count != len(t.samples) || len(tr.Samples) != len(t.samples) {
			return nil, fmt.Errorf("%s: scoring %s: task %s: %d of %d predictions scored", info.key, res.Dir, t.name, tr.Count, len(t.samples))
		}
		ti, _ := longbench.Task(t.name)
		var kv, kvt float64
		for i := range t.samples {
			s := &all[off+i]
			s.Score = tr.Samples[i].Score
			kv += s.KVFraction
			kvt += s.KVTokens
		}
		off += len(t.samples)
		n := len(t.samples)
		kv, kvt = kv/float64(n), kvt/float64(n)
		scores[t.name], kvs[t.name] = tr.Score, kv
		rows = append(rows, mk(t.name, longbenchMetric[ti.Metric], tr.Score, n), mk(t.name, "kv_fraction", kv, n), mk(t.name, "kv_tokens", kvt, n))
	}
	// The README's per-language averages need a task of that language (code tasks count in both); the plain mean
	// is over the English and code tasks present.
	nLang := map[longbench.Language]int{}
	for name := range scores {
		ti, _ := longbench.Task(name)
		nLang[ti.Language]++
	}
	ss, ks := longbench.Summarize(scores), longbench.Summarize(kvs)
	for _, a := range []struct {
		name  string
		score float64
		kv    float64
		n     int
	}{
		{"avg_en_categories", ss.AvgEN, ks.AvgEN, nLang[longbench.English] + nLang[longbench.Code]},
		{"avg_zh_categories", ss.AvgZH, ks.AvgZH, nLang[longbench.Chinese] + nLang[longbench.Code]},
		{"mean_16_en_code", ss.Mean16, ks.Mean16, ss.N16},
	} {
		if math.IsNaN(a.score) || (a.name == "avg_en_categories" && nLang[longbench.English] == 0) ||
			(a.name == "avg_zh_categories" && nLang[longbench.Chinese] == 0) {
			continue
		}
		rows = append(rows, mk(a.name, "longbench_avg", a.score, a.n), mk(a.name, "kv_fraction", a.kv, a.n))
	}
	return rows, nil
}
