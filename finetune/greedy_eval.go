package finetune

import (
	"fmt"
	"strings"

	"github.com/gomlx/compute"
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"

	"natsbench/llama"
	"natsbench/model"
)

// PasskeyResult is the passkey retrieval accuracy of one attention method and its KV fraction.
type PasskeyResult struct {
	Accuracy   float64 // fraction of samples whose greedy answer contains the asked passkey
	KVFraction float64 // mean over prompt queries, layers and KV heads of visible keys / (position+1)
	N          int
}

// EvalPasskey answers passkey samples greedily on base under an inference mask: masker nil is full attention;
// otherwise masker's inference mask (NAtS argmax roles with scorers, or model.SinkWindow for StreamingLLM,
// whose scorers may be nil). Route: the KV-cache engine serves only natsbench's GPT LM, so generation is by
// repeated masked parallel forward passes over a fixed padded length — for NAtS and StreamingLLM the inference
// mask is exactly what the cache keeps (decode = forward, tested in model/ and evaluate/), so the answers equal
// cache decoding's. The KV fraction is measured on the prompt rows of the first forward. It complements
// Trainer.Predict (teacher-forced, used by the finetune kind) with free greedy generation and a loose
// "answer contained in the output" score, as passkey benchmarks report.
func EvalPasskey(backend compute.Backend, base *llama.Model, tok llama.Tokenizer, masker model.Masker, scorers *model.Params,
	samples []Passkey, extraTokens int) (PasskeyResult, error) {
	var res PasskeyResult
	c := base.Config
	mc := maskerConfig(c)
	nb := len(base.Params.Specs)
	ns := 0
	if scorers != nil {
		ns = len(scorers.Specs)
	}
	execs := map[int]*Exec{}
	var kvSum float64
	for _, p := range samples {
		prompt := tok.Encode(p.Context)
		if b := tok.BOS(); b >= 0 {
			prompt = append([]int{b}, prompt...)
		}
		ans := tok.Encode(p.Answer)
		n := len(ans) + extraTokens
		total := (len(prompt) + n + 63) / 64 * 64
		if len(prompt)+n > c.MaxPositions {
			return res, fmt.Errorf("passkey: prompt of %d tokens + %d new exceeds max_position_embeddings %d", len(prompt), n, c.MaxPositions)
		}
		ex := execs[total]
		if ex == nil {
			var err error
			ex, err = NewExec(backend, func(in []*Node) []*Node {
				w := llama.WeightsFrom(c, base.Params.Specs, in[:nb])
				sc := in[nb : nb+ns]
				tokens, sel, rows := in[nb+ns], in[nb+ns+1], in[nb+ns+2] // [1,S] int32, [S] f32 one-hot, [S] f32 prompt rows
				g := tokens.Graph()
				kv := ScalarZero(g, dtypes.Float32)
				var mf func(int, *Node) *Node
				if masker != nil {
					mf = func(l int, normed *Node) *Node {
						var param func(string) *Node
						if ns > 0 {
							scorer := ConvertDType(sc[l], normed.DType())
							param = func(string) *Node { return scorer }
						}
						m := masker.Mask(&model.AttnSite{Cfg: mc, Layer: l, Normed: normed, Param: param}).Materialize()
						if m == nil {
							return nil
						}
						frac := Div(visibleKeys(c, m), AddScalar(Iota(g, shapes.Make(dtypes.Float32, 1, 1, total), 2), 1)) // [1,kv,S]
						kv = Add(kv, ReduceAllMean(Mul(frac, Reshape(rows, 1, 1, total))))
						return m
					}
				}
				h := llama.Forward(c, w, tokens, llama.Options{SkipLogits: true, Mask: mf}).Hidden
				last := ReduceSum(Mul(ConvertDType(h, dtypes.Float32), ExpandAxes(sel, 0, -1)), 1) // [1, hidden]
				logits := llama.LMHead(c, w, ConvertDType(last, h.DType()))
				return []*Node{ArgMax(logits, -1, dtypes.Int32), kv}
			})
			if err != nil {
				return res, err
			}
			execs[total] = ex
		}
		seq := append([]int{}, prompt...)
		var gen []int
		for k := 0; k < n; k++ {
			ids := make([]int32, total)
			for i, t := range seq {
				ids[i] = int32(t)
			}
			sel, rows := make([]float32, total), make([]float32, total)
			sel[len(seq)-1] = 1
			for i := range prompt {
				rows[i] = float32(total) / float32(len(prompt)) // mean over prompt rows after ReduceAllMean over S
			}
			args := []any{}
			for _, v := range base.Params.Values {
				args = append(args, v)
			}
			for i := 0; i < ns; i++ {
				args = append(args, scorers.Values[i])
			}
			args = append(args, tensors.FromFlatDataAndDimensions(ids, 1, total), tensors.FromFlatDataAndDimensions(sel, total),
				tensors.FromFlatDataAndDimensions(rows, total))
			out, err := ex.Exec(args...)
			if err != nil {
				return res, fmt.Errorf("passkey: %w", err)
			}
			next := int(tensors.MustCopyFlatData[int32](out[0])[0])
			if k == 0 {
				if masker == nil {
					kvSum++
				} else {
					kvSum += scalar(out[1]) / float64(c.NumLayers)
				}
			}
			gen, seq = append(gen, next), append(seq, next)
		}
		if strings.Contains(tok.Decode(gen), p.Answer) {
			res.Accuracy++
		}
		res.N++
	}
	if res.N > 0 {
		res.Accuracy /= float64(res.N)
		res.KVFraction = kvSum / float64(res.N)
	}
	return res, nil
}
