package longbench

import (
	"bufio"
	"encoding/json"
	"math"
	"os"
	"testing"
)

// vector is one line of testdata/vectors.jsonl (see gen_vectors.py).
type vector struct {
	Fn      string          `json:"fn"`
	Want    json.RawMessage `json:"want"`
	S       string          `json:"s"`
	Pred    string          `json:"pred"`
	GT      string          `json:"gt"`
	A       string          `json:"a"`
	B       string          `json:"b"`
	Classes []string        `json:"classes"`
	X       float64         `json:"x"`
}

// TestPythonVectors checks the metrics bit for bit against values computed by
// the official Python code (testdata/vectors.jsonl).
func TestPythonVectors(t *testing.T) {
	f, err := os.Open("testdata/vectors.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	counts := map[string]int{}
	line := 0
	for sc.Scan() {
		line++
		var v vector
		if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
			t.Fatalf("vectors.jsonl:%d: %v", line, err)
		}
		if v.Fn == "" {
			continue // header
		}
		counts[v.Fn]++
		var wantS string
		var wantF float64
		if err := json.Unmarshal(v.Want, &wantS); err != nil {
			if err := json.Unmarshal(v.Want, &wantF); err != nil {
				t.Fatalf("vectors.jsonl:%d: want %s: %v", line, v.Want, err)
			}
		}
		checkF := func(got float64) {
			t.Helper()
			if math.Float64bits(got) != math.Float64bits(wantF) {
				t.Errorf("vectors.jsonl:%d: %s(pred=%q, gt=%q, a=%q, b=%q, classes=%q, x=%v) = %v, want %v",
					line, v.Fn, v.Pred, v.GT, v.A, v.B, v.Classes, v.X, got, wantF)
			}
		}
		checkS := func(got string) {
			t.Helper()
			if got != wantS {
				t.Errorf("vectors.jsonl:%d: %s(%q) = %q, want %q", line, v.Fn, v.S+v.A, got, wantS)
			}
		}
		switch v.Fn {
		case "normalize_answer":
			checkS(NormalizeAnswer(v.S))
		case "normalize_zh_answer":
			checkS(NormalizeZHAnswer(v.S))
		case "qa_f1_score":
			checkF(QAF1Score(v.Pred, v.GT))
		case "rouge_score":
			checkF(RougeScore(v.Pred, v.GT))
		case "classification_score":
			checkF(ClassificationScore(v.Pred, v.GT, v.Classes))
		case "count_score":
			checkF(CountScore(v.Pred, v.GT))
		case "retrieval_score":
			checkF(RetrievalScore(v.Pred, v.GT))
		case "retrieval_zh_score":
			checkF(RetrievalZHScore(v.Pred, v.GT))
		case "code_sim_score":
			checkF(CodeSimScore(v.Pred, v.GT))
		case "fuzz_ratio":
			checkF(float64(FuzzRatio(v.A, v.B)))
		case "seqmatch_ratio":
			checkF(SequenceMatcherRatio(v.A, v.B))
		case "round2":
			checkF(Round2(v.X))
		case "repr":
			wantS = string(v.Want)
			if err := json.Unmarshal(v.Want, &wantS); err != nil {
				t.Fatal(err)
			}
			checkS(pyFloatRepr(v.X))
		default:
			t.Fatalf("vectors.jsonl:%d: unknown fn %q", line, v.Fn)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	t.Logf("vector counts: %v", counts)
	if counts["rouge_score"] < 300 || counts["code_sim_score"] < 200 || counts["normalize_answer"] < 300 {
		t.Errorf("too few vectors: %v", counts)
	}
}
