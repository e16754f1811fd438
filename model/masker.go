package model

import (
	"github.com/gomlx/compute/dtypes"
	. "github.com/gomlx/gomlx/core/graph"
)

// AttnSite is what a Masker sees at one attention layer of a full-sequence forward pass. Shapes are static.
type AttnSite struct {
	Cfg      Config
	Layer    int
	Normed   *Node              // `[batch, seq, d_model]`: the pre-norm output that feeds Q/K/V
	Param    func(string) *Node // the masker's own parameters of this layer, by the name given in Specs
	Training bool               // training (Gumbel sampling) or inference (argmax)
	// Uniform gives uniform noise in [0,1) of the given dims from the step's RNG state (training). Axis 0 must be
	// the batch axis: data-parallel training draws the whole batch's noise and keeps the device's rows (train/dp.go).
	Uniform func([]int) *Node
}

// MaskOut is a masker's contribution to one layer. A masker gives its mask either as Mask (any multiplicative
// mask, gradients included) or in structured form as Hard plus Terms: the forward value Hard and a gradient carrier
// Σ_t Coef_t·Key_t[j]·Region_t[i,j] whose value is subtracted out (NATS-SPEC.md §1.5). The structured form lets
// the model run attention on the fused kernel and compute the carrier's gradient in its own backward pass, without
// a differentiable [batch, heads, seq, seq] mask (see carrier.go); Materialize gives the equivalent Mask.
type MaskOut struct {
	// Mask is a multiplicative mask `[batch, kv_heads, seq, seq]` whose forward value is 0/1 and which may carry
	// gradients (NATS-SPEC.md §1.4–1.5); nil means plain causal attention (or the structured form below). It is
	// ANDed with causality.
	Mask *Node
	// Hard is the structured form's forward mask, Bool `[batch, kv_heads, seq, seq]`, already causal. It carries
	// no gradient.
	Hard *Node
	// Terms is the structured form's gradient carrier (training only; nil at inference).
	Terms []CarrierTerm
	// Aux is a scalar added to the training loss (e.g. the λ sparsity term); may be nil. It must be a sum of per-row
	// terms over the batch's rows, as the data-parallel step assumes (train/dp.go).
	Aux *Node
	// Density is a scalar statistic of the mask (NATS-SPEC.md §1.6); may be nil.
	Density *Node
	// Roles is the chosen role per key `[batch, kv_heads, seq]` (int32: 0 Global, 1 Local, 2 Window); may be nil.
	Roles *Node
}

// CarrierTerm is one term Coef·Key[j]·Region[i,j] of a structured gradient carrier: Key `[batch, kv_heads, seq]`
// float32 holds per-key values that receive gradient; Region is Bool `[batch, kv_heads, seq, seq]` (query i, key j)
// and carries none. The gradient that reaches Key[j] is Coef·Σ_i Region[i,j]·∂L/∂M[i,j], summed over the query
// heads that share the KV head.
type CarrierTerm struct {
	Key    *Node
	Region *Node
	Coef   float64
}

// Materialize returns the multiplicative mask of o: Mask when set, else float(Hard) plus the carrier (whose forward
// value is zero), or nil when o has no mask at all.
func (o MaskOut) Materialize() *Node {
	if o.Mask != nil || o.Hard == nil {
		return o.Mask
	}
	m := ConvertDType(o.Hard, dtypes.Float32)
	if len(o.Terms) == 0 {
		return m
	}
	var c *Node
	for _, t := range o.Terms {
		x := MulScalar(Mul(InsertAxes(t.Key, 2), ConvertDType(t.Region, dtypes.Float32)), t.Coef)
		if c == nil {
			c = x
		} else {
			c = Add(c, x)
		}
	}
	return Add(m, Sub(c, StopGradient(c)))
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
