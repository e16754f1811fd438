package finetune

import (
	"fmt"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"

	"natsbench/llama"
	"natsbench/model"
)

// Evaluation of a fine-tuned adapter on the frozen base model by the masked parallel forward pass: the attention
// mask of a cache policy is what that policy's KV cache would hold at each query (NATS-SPEC.md §1.8; for NAtS and
// StreamingLLM decoding with the cache equals this masked forward, as the engine and evaluate tests show for the
// natsbench LM), so no Llama KV-cache engine is needed to score retrieval. Answers are scored teacher-forced: the
// prediction at every answer position is the argmax after the true prefix, so "all answer tokens predicted" is
// exactly "greedy decoding reproduces the answer".

// Policy is the attention pattern evaluated: "full", "nats" (the trainer's scorers, argmax roles) or
// "streamingllm" (Sinks + Budget).
type Policy struct {
	Name          string
	Sinks, Budget int
}

// Prediction of one sequence.
type Prediction struct {
	Argmax   []int32 // argmax next token at every position `[seq]`
	KVFrac   float64 // mean over layers, KV heads and queries < n of (keys visible)/(keys seen)
	KeptLast float64 // mean keys visible to query n−1 (the cache size at the end of the prompt)
}

// Predict runs the base model with the trainer's scorers under policy p on tokens (padded to a fixed length by
// the caller so one compiled graph serves all samples); n is the number of real tokens (statistics use queries
// < n).
func (t *Trainer) Predict(p Policy, tokens []int32, n int) (Prediction, error) {
	key := fmt.Sprintf("%s/%d/%d", p.Name, p.Sinks, p.Budget)
	if t.predict == nil {
		t.predict = map[string]*Exec{}
	}
	ex := t.predict[key]
	if ex == nil {
		var err error
		ex, err = NewExec(t.backend, func(in []*Node) []*Node { return t.predictGraph(p, in) })
		if err != nil {
			return Prediction{}, err
		}
		t.predict[key] = ex
	}
	args := make([]any, 0, len(t.weights)+len(t.Scorers.Values)+2)
	for _, v := range t.weights {
		args = append(args, v)
	}
	for _, v := range t.Scorers.Values {
		args = append(args, v)
	}
	tok := tensors.FromFlatDataAndDimensions(tokens, 1, len(tokens))
	args = append(args, tok, int32(n))
	out, err := ex.Exec(args...)
	model.Free(tok)
	if err != nil {
		return Prediction{}, fmt.Errorf("finetune: predict (%s): %w", p.Name, err)
	}
	defer model.Free(out...)
	return Prediction{Argmax: tensors.MustCopyFlatData[int32](out[0]), KVFrac: scalar(out[1]), KeptLast: scalar(out[2])}, nil
}

func (t *Trainer) predictGraph(p Policy, in []*Node) []*Node {
	c := t.Base.Config
	nb, ns := len(t.Base.Params.Specs), len(t.Scorers.Specs)
	base, sc := in[:nb], in[nb:nb+ns]
	tokens, n := in[nb+ns], in[nb+ns+1]
	g := tokens.Graph()
	seq := tokens.Shape().Dimensions[1]
	w := llama.WeightsFrom(c, t.Base.Params.Specs, base)
	mc := maskerConfig(c)
	rowOK := LessThan(Iota(g, shapes.Make(dtypes.Int32, seq), 0), n) // queries < n
	seen := AddScalar(ConvertDType(Iota(g, shapes.Make(dtypes.Int32, seq), 0), dtypes.Float32), 1)
	frac, last := ScalarZero(g, dtypes.Float32), ScalarZero(g, dtypes.Float32)
	stats := func(mask *Node) { // mask [1, kv, seq, seq] float
		vis := visibleKeys(c, mask) // [1,kv,seq]
		f := Where(BroadcastToShape(ExpandLeftToRank(rowOK, 3), vis.Shape()), Div(vis, BroadcastToShape(ExpandLeftToRank(seen, 3), vis.Shape())), ZerosLike(vis))
		frac = Add(frac, Div(ReduceAllSum(f), MulScalar(ConvertDType(n, dtypes.Float32), float64(vis.Shape().Dimensions[1]))))
		atLast := Where(BroadcastToShape(ExpandLeftToRank(Equal(Iota(g, shapes.Make(dtypes.Int32, seq), 0), SubScalar(n, 1)), 3), vis.Shape()), vis, ZerosLike(vis))
		last = Add(last, DivScalar(ReduceAllSum(atLast), float64(vis.Shape().Dimensions[1])))
	}
	var masker model.Masker
	switch p.Name {
	case "nats":
		masker = t.Masker
	case "streamingllm":
		masker = model.SinkWindow{Sinks: p.Sinks, Budget: p.Budget}
	}
	opt := llama.Options{}
	if masker != nil {
		opt.Mask = func(l int, normed *Node) *Node {
			scorer := ConvertDType(sc[l], normed.DType())
			out := masker.Mask(&model.AttnSite{Cfg: mc, Layer: l, Normed: normed, Param: func(string) *Node { return scorer }})
			m := ConvertDType(out.Materialize(), dtypes.Float32)
			stats(m)
			return m
		}
	}
	logits := llama.Forward(c, w, tokens, opt).Logits // [1, seq, vocab]
	am := Reshape(ArgMax(logits, -1, dtypes.Int32), seq)
	if masker == nil {
		frac, last = ScalarOne(g, dtypes.Float32), ConvertDType(n, dtypes.Float32)
	} else {
		frac, last = DivScalar(frac, float64(c.NumLayers)), DivScalar(last, float64(c.NumLayers))
	}
	return []*Node{am, frac, last}
}

// visibleKeys returns, per KV head and query, the number of keys a multiplicative mask `[1, kv, seq, seq]` leaves
// visible within what the model allows (causality and Mistral's sliding window): `[1, kv, seq]` float32.
func visibleKeys(c llama.Config, mask *Node) *Node {
	seq := mask.Shape().Dimensions[3]
	allowed := ConvertDType(Reshape(llama.AllowedMask(mask.Graph(), c, seq), 1, 1, seq, seq), dtypes.Float32)
	return ReduceSum(Mul(ConvertDType(mask, dtypes.Float32), allowed), -1)
}
