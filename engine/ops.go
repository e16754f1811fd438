package engine

import (
	"fmt"

	"github.com/gomlx/compute/dtypes"
	. "github.com/gomlx/gomlx/core/graph"

	"natsbench/model"
)

// The block arithmetic is the model's own (model.LayerNorm, model.GELU, model.RoPE, model.Contract), so the engine
// computes what model.Inference computes; the equality tests against it check the cache, not a copy of the ops.

// param returns a named parameter node, panicking (graph code) with the name when it is missing.
func param(p model.Nodes, name string) *Node {
	x, ok := p[name]
	if !ok {
		panic(fmt.Errorf("engine: no parameter %q", name))
	}
	return x
}

// scoped returns the masker parameters of one layer by local name.
func scoped(p model.Nodes, prefix string) func(string) *Node {
	return func(name string) *Node { return param(p, prefix+name) }
}

// lmHead maps final normed states `[..., d]` to float32 logits `[..., vocab]`.
func lmHead(cfg model.Config, p model.Nodes, xf *Node) *Node {
	var logits *Node
	if cfg.TieEmbeddings {
		if xf.Rank() == 3 {
			logits = model.Contract("bsd,vd->bsv", xf, param(p, "wte"))
		} else {
			logits = model.Contract("bd,vd->bv", xf, param(p, "wte"))
		}
	} else {
		if xf.Rank() == 3 {
			logits = model.Contract("bsd,dv->bsv", xf, param(p, "lm_head"))
		} else {
			logits = model.Contract("bd,dv->bv", xf, param(p, "lm_head"))
		}
	}
	return ConvertDType(logits, dtypes.Float32)
}
