package llama

import (
	"fmt"

	"github.com/gomlx/compute/dtypes"
	. "github.com/gomlx/gomlx/core/graph"
	gattention "github.com/gomlx/gomlx/ml/layers/attention"

	"natsbench/model"
)

// AttentionPath picks how Forward computes attention.
//
// The materialised path (Attention) builds float32 scores and probabilities `[b, kv, rep, s, s]` and multiplies a
// mask into them; autodiff keeps them, the mask and its gradient carrier for the backward pass. The fused path
// keeps nothing of size s² between the passes:
//   - no mask: GoMLX's attention.Core with its causal mask (cuDNN flash attention forward and backward on CUDA in
//     bf16/f16; its decomposed form elsewhere);
//   - a structured mask (Options.MaskOut with MaskOut.Hard set): model.FusedMaskedAttention, i.e. attention.Core
//     with Hard as an additive bias plus a custom VJP that adds the carrier terms' gradients (model/carrier.go);
//     it gives the materialised path's forward values and gradients (finetune's TestFusedStudentMatchesMaterialized).
//
// Mistral's sliding window is folded in on the fused path: into the additive bias without a mask, and into Hard and
// every carrier term's Region with one (the materialised path has zero probability, hence zero ∂L/∂M, outside the
// window, so restricting the regions to it is exact). A plain multiplicative mask (Options.Mask, or MaskOut.Mask)
// and Options.Probs always take the materialised path.
type AttentionPath int

const (
	// AttentionAuto (the zero value) is fused when the compute dtype is half precision (Config.DType "bfloat16": the
	// GPU configuration) and materialised in float32 (CPU and tests), unless the environment says otherwise:
	// NATSBENCH_NO_FUSED_ATTENTION set keeps every layer materialised, NATSBENCH_MASKED_ATTENTION=materialized the
	// masked ones only (as in package model). Read when the graph is built.
	AttentionAuto AttentionPath = iota
	// AttentionMaterialized always materialises scores and probabilities.
	AttentionMaterialized
	// AttentionFused always takes the fused path where it applies, also in float32 (tests on the pure-Go backend).
	AttentionFused
)

// fused reports whether a layer with mask mo (its Mask or Hard set, or neither) takes the fused path.
func (o Options) fused(mo model.MaskOut, dt dtypes.DType) bool {
	if o.Probs != nil || mo.Mask != nil {
		return false
	}
	switch o.Attention {
	case AttentionMaterialized:
		return false
	case AttentionFused:
		return true
	case AttentionAuto:
		return dt.IsHalfPrecision() && model.FusedAttentionAllowed(mo.Hard != nil)
	}
	panic(fmt.Errorf("llama: unknown Options.Attention %d", o.Attention))
}

// fusedAttention is the fused path: q `[b, h, s, hd]`, k, v `[b, kv, s, hd]`, mo without Mask, allowed the Bool
// `[s, s]` of AllowedMask; it returns `[b, h, s, hd]` in q's dtype.
func fusedAttention(c Config, q, k, v *Node, mo model.MaskOut, allowed *Node) *Node {
	dims := q.Shape().Dimensions
	b, h, s := dims[0], dims[1], dims[2]
	kv := k.Shape().Dimensions[1]
	if mo.Hard == nil {
		opt := gattention.CoreOptions{UseCausalMask: true}
		if c.SlidingWindow > 0 {
			// cuDNN takes an additive bias of exactly [b, h, s, s].
			opt.AttentionBias = BroadcastToDims(Reshape(model.MaskBias(allowed, q.DType()), 1, 1, s, s), b, h, s, s)
		}
		att, _ := gattention.Core(q, k, v, gattention.LayoutBHSD, opt)
		return att
	}
	if c.SlidingWindow > 0 {
		win := BroadcastToDims(Reshape(allowed, 1, 1, s, s), b, kv, s, s)
		mo.Hard = And(mo.Hard, win)
		terms := make([]model.CarrierTerm, len(mo.Terms))
		for i, t := range mo.Terms {
			t.Region = And(t.Region, win)
			terms[i] = t
		}
		mo.Terms = terms
	}
	return model.FusedMaskedAttention(q, k, v, mo)
}
