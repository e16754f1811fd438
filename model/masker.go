package model

import (
	. "github.com/gomlx/gomlx/core/graph"
)

// AttnSite is what a Masker sees at one attention layer of a full-sequence forward pass. Shapes are static.
type AttnSite struct {
	Cfg      Config
	Layer    int
	Normed   *Node              // `[batch, seq, d_model]`: the pre-norm output that feeds Q/K/V
	Param    func(string) *Node // the masker's own parameters of this layer, by the name given in Specs
	Training bool               // training (Gumbel sampling) or inference (argmax)
	Uniform  func([]int) *Node  // uniform noise in [0,1) of the given dims, from the step's RNG state (training)
}

// MaskOut is a masker's contribution to one layer.
type MaskOut struct {
	// Mask is a multiplicative mask `[batch, kv_heads, seq, seq]` whose forward value is 0/1 and which may carry
	// gradients (NATS-SPEC.md §1.4–1.5); nil means plain causal attention. It is ANDed with causality.
	Mask *Node
	// Aux is a scalar added to the training loss (e.g. the λ sparsity term); may be nil.
	Aux *Node
	// Density is a scalar statistic of the mask (NATS-SPEC.md §1.6); may be nil.
	Density *Node
	// Roles is the chosen role per key `[batch, kv_heads, seq]` (int32: 0 Global, 1 Local, 2 Window); may be nil.
	Roles *Node
}

// Masker builds the attention mask of a method for full-sequence forward passes (training and the parallel
// evaluation path). Full attention is a nil Masker.
type Masker interface {
	// Specs declares the masker's parameters for one layer; names are local to the layer.
	Specs(cfg Config, layer int) []Spec
	// Mask builds the mask of one layer.
	Mask(s *AttnSite) MaskOut
}

// DecodeSite is what a DecodeRoler sees at one layer of a single-token decoding step.
type DecodeSite struct {
	Cfg    Config
	Layer  int
	Normed *Node              // `[batch, d_model]`: the normed input of the new token
	Param  func(string) *Node // the masker's parameters of this layer
	Pos    *Node              // scalar int32: the position of the new token
	State  *Node              // `[batch, d_model]`: running state of the layer (chunk sums); zeros at the start
}

// DecodeRoler is implemented by maskers whose cache policy needs a per-token decision from the model (NAtS).
type DecodeRoler interface {
	// DecodeRoles returns the role of the new token (or of the chunk it completes) per KV head, `[batch, kv_heads]`
	// int32, and the layer's new state.
	DecodeRoles(s *DecodeSite) (roles, newState *Node)
}
