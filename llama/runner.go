package llama

import (
	"fmt"

	"github.com/gomlx/compute"
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"
)

// Runner executes a Model on a GoMLX backend: full forward passes and greedy generation. Executables are compiled
// on first use and reused (one per input shape).
type Runner struct {
	Model   *Model
	backend compute.Backend
	fwd     *Exec // params, tokens [b, s] → logits [b, s, vocab]
	prefill *Exec // params, tokens [b, cap], last [b] → next [b], logits at last [b, vocab], K, V [L, b, kv, cap, hd]
	step    *Exec // params, tokens [b], pos, K, V → next [b], logits [b, vocab], K, V
}

// NewRunner returns a runner of m on backend (e.g. model.NewBackend("go")).
func NewRunner(backend compute.Backend, m *Model) *Runner {
	return &Runner{Model: m, backend: backend}
}

// Logits is a host copy of logits `[Batch, Seq, Vocab]`, row-major.
type Logits struct {
	Batch, Seq, Vocab int
	Data              []float32
}

// At returns the logits of row b at position s.
func (l *Logits) At(b, s int) []float32 {
	o := (b*l.Seq + s) * l.Vocab
	return l.Data[o : o+l.Vocab]
}

func (r *Runner) params() []any {
	args := make([]any, 0, len(r.Model.Params.Values)+4)
	for _, v := range r.Model.Params.Values {
		args = append(args, v)
	}
	return args
}

func (r *Runner) checkTokens(ids []int) error {
	for _, t := range ids {
		if t < 0 || t >= r.Model.Config.VocabSize {
			return fmt.Errorf("token id %d outside the vocabulary [0, %d)", t, r.Model.Config.VocabSize)
		}
	}
	return nil
}

// Forward returns the logits of token rows (all of the same length), positions 0..seq-1.
func (r *Runner) Forward(tokens [][]int) (*Logits, error) {
	if len(tokens) == 0 || len(tokens[0]) == 0 {
		return nil, fmt.Errorf("llama forward: empty batch")
	}
	b, s := len(tokens), len(tokens[0])
	flat := make([]int32, 0, b*s)
	for i, row := range tokens {
		if len(row) != s {
			return nil, fmt.Errorf("llama forward: row %d has %d tokens, row 0 has %d", i, len(row), s)
		}
		if err := r.checkTokens(row); err != nil {
			return nil, fmt.Errorf("llama forward: row %d: %w", i, err)
		}
		for _, t := range row {
			flat = append(flat, int32(t))
		}
	}
	n := len(r.Model.Params.Specs)
	if r.fwd == nil {
		var err error
		r.fwd, err = NewExec(r.backend, func(in []*Node) []*Node {
			w := WeightsFrom(r.Model.Config, r.Model.Params.Specs, in[:n])
			return []*Node{Forward(r.Model.Config, w, in[n], Options{}).Logits}
		})
		if err != nil {
			return nil, fmt.Errorf("llama forward: %w", err)
		}
	}
	out, err := r.fwd.Exec(append(r.params(), tensors.FromFlatDataAndDimensions(flat, b, s))...)
	if err != nil {
		return nil, fmt.Errorf("llama forward: %w", err)
	}
	v := r.Model.Config.VocabSize
	return &Logits{Batch: b, Seq: s, Vocab: v, Data: tensors.MustCopyFlatData[float32](out[0])}, nil
}

// capacityFor rounds a length up to a multiple of 64 (fewer distinct shapes, so fewer compilations).
func capacityFor(n int) int { return (n + 63) / 64 * 64 }

// Generate decodes greedily from prompt for at most n new tokens with a KV cache (one prefill over the prompt,
// then one step per token), stopping after an EOS token of the config (which is returned). It returns the new
// tokens. prompt+n may not exceed max_position_embeddings.
func (r *Runner) Generate(prompt []int, n int) ([]int, error) {
	c := r.Model.Config
	if err := r.checkGenerate(prompt, n); err != nil {
		return nil, err
	}
	capacity := min(capacityFor(len(prompt)+n), max(c.MaxPositions, len(prompt)+n))
	np := len(r.Model.Params.Specs)
	if r.prefill == nil {
		var err error
		r.prefill, err = NewExec(r.backend, func(in []*Node) []*Node {
			w := WeightsFrom(c, r.Model.Params.Specs, in[:np])
			tokens, last := in[np], in[np+1]
			o := Forward(c, w, tokens, Options{SkipLogits: true})
			b := tokens.Shape().Dimensions[0]
			rows := Iota(tokens.Graph(), shapes.Make(dtypes.Int32, b, 1), 0)
			hid := Gather(o.Hidden, Concatenate([]*Node{rows, InsertAxes(last, -1)}, 1)) // [b, hidden]
			logits := LMHead(c, w, hid)
			stack := func(l []*Node) *Node { return ConvertDType(Stack(l, 0), dtypes.Float32) }
			return []*Node{ArgMax(logits, -1, dtypes.Int32), logits, stack(o.K), stack(o.V)}
		})
		if err != nil {
			return nil, fmt.Errorf("llama generate: %w", err)
		}
		r.step, err = NewExec(r.backend, func(in []*Node) []*Node {
			w := WeightsFrom(c, r.Model.Params.Specs, in[:np])
			logits, K, V := DecodeStep(c, w, in[np], in[np+1], in[np+2], in[np+3])
			return []*Node{ArgMax(logits, -1, dtypes.Int32), logits, K, V}
		})
		if err != nil {
			return nil, fmt.Errorf("llama generate: %w", err)
		}
	}
	padded := make([]int32, capacity)
	for i, t := range prompt {
		padded[i] = int32(t)
	}
	out, err := r.prefill.Exec(append(r.params(), tensors.FromFlatDataAndDimensions(padded, 1, capacity),
		tensors.FromFlatDataAndDimensions([]int32{int32(len(prompt) - 1)}, 1))...)
	if err != nil {
		return nil, fmt.Errorf("llama generate: prefill: %w", err)
	}
	K, V := out[2], out[3]
	next := int(tensors.MustCopyFlatData[int32](out[0])[0])
	var gen []int
	for pos := len(prompt); ; pos++ {
		gen = append(gen, next)
		if len(gen) == n || c.IsEOS(next) {
			return gen, nil
		}
		out, err := r.step.Exec(append(r.params(), tensors.FromFlatDataAndDimensions([]int32{int32(next)}, 1),
			int32(pos), K, V)...)
		if err != nil {
			return nil, fmt.Errorf("llama generate: step at position %d: %w", pos, err)
		}
		K, V = out[2], out[3]
		next = int(tensors.MustCopyFlatData[int32](out[0])[0])
	}
}

// GenerateNoCache is Generate by repeated full forward passes over the growing sequence (padded to a fixed
// length so that one executable serves every step): slow, but the simplest reference for Generate.
func (r *Runner) GenerateNoCache(prompt []int, n int) ([]int, error) {
	if err := r.checkGenerate(prompt, n); err != nil {
		return nil, err
	}
	c := r.Model.Config
	capacity := min(capacityFor(len(prompt)+n), max(c.MaxPositions, len(prompt)+n))
	seq := append([]int(nil), prompt...)
	var gen []int
	for len(gen) < n {
		row := make([]int, capacity)
		copy(row, seq)
		lg, err := r.Forward([][]int{row})
		if err != nil {
			return nil, fmt.Errorf("llama generate: %w", err)
		}
		next := argmax(lg.At(0, len(seq)-1))
		gen = append(gen, next)
		seq = append(seq, next)
		if c.IsEOS(next) {
			break
		}
	}
	return gen, nil
}

func (r *Runner) checkGenerate(prompt []int, n int) error {
	c := r.Model.Config
	if len(prompt) == 0 {
		return fmt.Errorf("llama generate: empty prompt (start it with BOS)")
	}
	if n <= 0 {
		return fmt.Errorf("llama generate: n = %d new tokens, want > 0", n)
	}
	if len(prompt)+n > c.MaxPositions {
		return fmt.Errorf("llama generate: prompt %d + %d new tokens exceeds max_position_embeddings = %d", len(prompt), n, c.MaxPositions)
	}
	if err := r.checkTokens(prompt); err != nil {
		return fmt.Errorf("llama generate: prompt: %w", err)
	}
	return nil
}

// argmax returns the first index of the largest value (as llama2.c's sample_argmax).
func argmax(v []float32) int {
	best := 0
	for i, x := range v {
		if x > v[best] {
			best = i
		}
	}
	return best
}
