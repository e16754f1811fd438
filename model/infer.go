package model

import (
	"fmt"

	"github.com/gomlx/compute"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"
)

// Inference runs full-sequence forward passes at inference (argmax roles, no noise): the parallel evaluation
// path and the reference for decoding tests.
type Inference struct {
	Cfg     Config
	Masker  Masker
	Params  *Params
	backend compute.Backend
	exec    *Exec
}

// NewInference builds a forward executor for the parameters.
func NewInference(backend compute.Backend, cfg Config, m Masker, p *Params) *Inference {
	return &Inference{Cfg: cfg, Masker: m, Params: p, backend: backend}
}

// Forward returns logits `[batch, seq, vocab]` (flat, row-major) for tokens `[batch, seq]`, and the per-layer
// roles `[layer][batch, kv_heads, seq]` when the masker gives them.
func (f *Inference) Forward(tokens []int32, batch, seq int) (logits []float32, roles [][]int32, err error) {
	n := len(f.Params.Specs)
	if f.exec == nil {
		f.exec, err = NewExec(f.backend, func(in []*Node) []*Node {
			nodes := NodesFrom(f.Cfg, f.Params.Specs, in[:n])
			out := Forward(f.Cfg, f.Masker, nodes, in[n], false, nil)
			res := []*Node{out.Logits}
			for _, r := range out.Roles {
				if r != nil {
					res = append(res, r)
				}
			}
			return res
		})
		if err != nil {
			return nil, nil, err
		}
	}
	args := make([]any, 0, n+1)
	for _, v := range f.Params.Values {
		args = append(args, v)
	}
	args = append(args, tensors.FromFlatDataAndDimensions(tokens, batch, seq))
	out, err := f.exec.Exec(args...)
	if err != nil {
		return nil, nil, fmt.Errorf("forward: %w", err)
	}
	logits = tensors.MustCopyFlatData[float32](out[0])
	for _, r := range out[1:] {
		roles = append(roles, tensors.MustCopyFlatData[int32](r))
	}
	return logits, roles, nil
}
