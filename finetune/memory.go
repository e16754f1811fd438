package finetune

import (
	"fmt"
	"strings"

	"natsbench/llama"
	"natsbench/model"
)

// Memory is an ESTIMATE from tensor shapes of the device memory of one scorer-only fine-tuning step on one
// sequence — not a measurement. It counts the tensors that must coexist at the peak; XLA's buffer reuse,
// fusion and allocator overhead are ignored, so real use can differ by tens of percent either way (the fused path's
// attention term is calibrated on H200 plans: fusedBlockF32Terms, fusedHeadTerms, fusedMaskTerms).
type Memory struct {
	Weights     int64 // frozen base weights as held on the device
	WeightsCast int64 // the compute-dtype copy of the weights when they are held in another dtype (0 otherwise)
	Kept        int64 // student activations kept for the backward pass (all layers, or only layer inputs when checkpointing)
	Layer       int64 // one layer's activations, re-materialised during its backward when checkpointing
	LayerGrad   int64 // one layer's activation gradients during its backward (same shapes as Layer)
	AttnTerm    int64 // one `[heads, seq, seq]` float32 term of the materialised masked attention
	// AttnPeak is, on the fused path, the s² tensors that exist at once during one layer's backward pass (see
	// MemoryOptions.Fused); 0 on the materialised path, whose s² tensors are in Layer and LayerGrad.
	AttnPeak int64
	Total    int64
}

// MemoryOptions sets what is counted.
type MemoryOptions struct {
	Seq          int  // tokens per sequence
	ParamBytes   int  // bytes per weight held on the device: 4 (finetune.weights_dtype float32) or 2 (bfloat16)
	ComputeBytes int  // bytes per activation element: 2 (bf16) or 4 (float32)
	Checkpoint   bool // gradient checkpointing per layer (Config.Checkpoint): keep layer inputs, recompute a layer in its backward
	// Fused counts the fused attention path (llama.AttentionPath; what finetune runs in bf16) instead of the
	// materialised one: nothing of size seq² is kept between the passes, and one layer's backward holds, at its peak,
	// the carrier backward's float32 temporaries for one block of query rows (model.CarrierBlockRows: all the rows
	// up to 2 GiB per tensor), counted as fusedBlockF32Terms tensors `[heads, rows, seq]`, fusedHeadTerms
	// compute-dtype `[heads, seq, seq]` tensors (the fused kernel's bias and what its backward writes) and
	// fusedMaskTerms Bool `[kv_heads, seq, seq]` masks.
	Fused bool
}

// Per-layer `[heads, seq, seq]` float32 tensors of the student's masked attention kept for backward: scores and
// probabilities over the query heads, and over the KV heads the NAtS hard mask and the four role terms A, B, C,
// D of the gradient carrier (NATS-SPEC.md §1.5).
const (
	queryHeadTerms = 2
	kvHeadTerms    = 5
)

// fusedBlockF32Terms is the number of float32 `[heads, rows, seq]` tensors one block of the carrier's backward pass
// holds at its peak (MemoryOptions.Fused), measured rather than counted: the code's own count is two (S and dP, with
// exp, the products and ∂L/∂M fused into their consumers), but XLA's plan for Llama-3-8B cut to 4 layers, unblocked,
// on the H200 held 57.8 GiB of temporaries at 8,192 tokens (7.2 tensors of 8 GiB) and 102.0 GiB at 12,288 (5.7 of
// 18 GiB; results/finetune_memory).
//
// fusedHeadTerms and fusedMaskTerms are the s² tensors outside the carrier's blocks, which do not shrink with them.
// They are read off XLA's buffer assignment of the whole Llama-3-8B step (32 layers, 16,384 tokens, checkpointing,
// blocks of 1,024 rows; results/finetune_memory/probe-32layers-16k-buffer-assignment.txt.xz), whose 90.6 GiB of
// temporaries hold, besides the blocks' float32 tensors of 2 GiB:
//   - four compute-dtype `[heads, seq, seq]` tensors of 16 GiB: two copies of the hard mask's additive bias
//     broadcast to the query heads (both rebuilt by XLA's own rematerialisation), the dBias that cuDNN's backward
//     writes and go-xla drops (compute/xla/flash.go, v0.4.5), and cuDNN's backward workspace (a u8 buffer of the
//     same size);
//   - Bool hard masks `[kv_heads, seq, seq]` (2 GiB), 16 of them side by side. They are the forward pass's: GoMLX
//     (v0.28.8) holds the fused attention's bias in the node's options, not among its inputs, so the node that
//     checkpointing recomputes for the backward reuses the forward's bias, and XLA keeps each layer's mask to
//     rebuild that bias (its ".remat" copy) rather than the bias itself.
//
// Both constants are fitted to that one plan, not counted: the four head-sized buffers sit in three slots (48 GiB,
// the workspace sharing one) and the 16 masks take 32 GiB, where the formula counts 4 × 16 GiB and 2 masks; the sum
// meets the plan (105.9 GiB estimated, 105.6 GiB planned, of which 15.0 GiB inputs). How many masks XLA keeps
// depends on the number of layers (16 of 32 here) and on its scheduling, so other layer counts, head ratios and
// lengths are extrapolations. The earlier 4-layer plans (103.2 GiB at 16k, before the carrier stopped capturing
// each layer's forward q, k, v and output; 61.4 GiB at 8k unblocked) do not fit one formula with this one.
const (
	fusedBlockF32Terms = 7
	fusedHeadTerms     = 4
	fusedMaskTerms     = 2
)

// EstimateMemory returns the estimate for base config c. Scorer parameters and AdamW moments
// (hidden·kv_heads·3 per layer) are included in Weights; the teacher's forward keeps nothing but its final
// hidden states (it runs under StopGradient), its transient peak is below the student's backward peak.
func EstimateMemory(c llama.Config, o MemoryOptions) Memory {
	s, h, in := int64(o.Seq), int64(c.HiddenSize), int64(c.IntermediateSize)
	hd := int64(c.HeadDim)
	if hd == 0 {
		hd = h / int64(c.NumHeads)
	}
	nh, nkv, L, V := int64(c.NumHeads), int64(c.NumKVHeads), int64(c.NumLayers), int64(c.VocabSize)
	cb, pb := int64(o.ComputeBytes), int64(o.ParamBytes)
	perLayerParams := 2*h + h*nh*hd + 2*h*nkv*hd + nh*hd*h + 3*h*in
	nParams := L*perLayerParams + V*h + h
	if !c.TieEmbeddings {
		nParams += V * h
	}
	var m Memory
	scorer := L * h * nkv * 3 * 4 * 4 // float32 parameters, gradients, m, v
	m.Weights = nParams*pb + scorer
	if pb != cb {
		m.WeightsCast = nParams * cb
	}
	m.AttnTerm = nh * s * s * 4
	attn := queryHeadTerms*m.AttnTerm + kvHeadTerms*nkv*s*s*4
	if o.Fused {
		attn = 0
		rows := int64(model.CarrierBlockRows(int(nh), int(s))) // one sequence per step
		m.AttnPeak = fusedBlockF32Terms*nh*rows*s*4 + fusedHeadTerms*nh*s*s*cb + fusedMaskTerms*nkv*s*s
	}
	// Linear activations of one layer: input, normed, q, k, v, attention output, residual, normed, gate, up,
	// silu(gate)·up, MLP output.
	linear := s * (h + h + nh*hd + 2*nkv*hd + nh*hd + h + h + 3*in + h)
	m.Layer = linear*cb + attn
	m.LayerGrad = m.Layer
	final := 3 * s * h * cb // teacher and student final hidden states and their difference
	if o.Checkpoint {
		// Only the layer inputs: since 2026-11-29 the carrier's custom gradient also works on the recomputed q, k, v and
		// attention output (model.FusedMaskedAttention); before, it held every layer's from the forward pass (~0.44 GiB
		// a layer for Llama-3-8B at 16k, seen on the H200 as 0.72 GiB of temporaries per layer between the 4- and
		// 32-layer plans).
		m.Kept = L*s*h*cb + final
		m.Total = m.Weights + m.WeightsCast + m.Kept + m.Layer + m.LayerGrad + m.AttnPeak
	} else {
		m.Kept = L*m.Layer + final
		m.Total = m.Weights + m.WeightsCast + m.Kept + m.LayerGrad + m.AttnPeak
	}
	return m
}

// String prints the estimate in GiB (MiB or KiB for totals below 1 GiB or 1 MiB).
func (m Memory) String() string {
	unit, name := float64(1<<30), "GiB"
	switch {
	case m.Total < 1<<20:
		unit, name = 1<<10, "KiB"
	case m.Total < 1<<30:
		unit, name = 1<<20, "MiB"
	}
	g := func(b int64) string { return fmt.Sprintf("%.1f %s", float64(b)/unit, name) }
	var sb strings.Builder
	fmt.Fprintf(&sb, "weights %s + cast %s + kept activations %s", g(m.Weights), g(m.WeightsCast), g(m.Kept))
	fmt.Fprintf(&sb, " + one layer %s + its gradients %s", g(m.Layer), g(m.LayerGrad))
	if m.AttnPeak > 0 {
		fmt.Fprintf(&sb, " + fused attention backward peak %s", g(m.AttnPeak))
	}
	fmt.Fprintf(&sb, " = %s (estimate; one [heads,seq,seq] f32 term is %s)", g(m.Total), g(m.AttnTerm))
	return sb.String()
}

// Llama3_8B is the architecture of Meta-Llama-3-8B (its config.json; a valid llama.Config, compute dtype bfloat16),
// for estimates and probes (Probe) without the weights.
func Llama3_8B() llama.Config {
	return llama.Config{Architecture: "LlamaForCausalLM", HiddenSize: 4096, IntermediateSize: 14336, NumLayers: 32,
		NumHeads: 32, NumKVHeads: 8, HeadDim: 128, VocabSize: 128256, MaxPositions: 8192, RopeTheta: 500000,
		RMSNormEps: 1e-5, BOS: 128000, EOS: []int{128001}, TorchDType: "bfloat16", DType: "bfloat16"}
}

// MaxSeq returns the longest sequence (a multiple of step) whose estimate fits in budget bytes, 0 if none.
func MaxSeq(c llama.Config, o MemoryOptions, budget int64, step int) int {
	best := 0
	for s := step; s <= 1<<20; s += step {
		o.Seq = s
		if EstimateMemory(c, o).Total > budget {
			break
		}
		best = s
	}
	return best
}

// IsOutOfMemory reports whether err is a device out-of-memory failure (XLA's RESOURCE_EXHAUSTED, or a message
// saying out of memory).
func IsOutOfMemory(err error) bool {
	if err == nil {
		return false
	}
	s := strings.ToLower(err.Error())
	return strings.Contains(s, "resource_exhausted") || strings.Contains(s, "out of memory")
}

// outOfMemoryError wraps a training step's out-of-memory failure with what to try: XLA's allocator share and the
// estimate of the step's need.
func outOfMemoryError(step int64, tokens int, err error) error {
	return fmt.Errorf("finetune step %d (%d tokens): out of device memory: %w\n"+
		"  go-xla lets XLA's allocator use 75%% of a GPU by default: raise it with -backend xla:cuda,memory_fraction=0.95;\n"+
		"  `go run ./finetune/cmd/memest -seq %d` estimates a step's need (Llama-3-8B at 16k: 105.6 GiB on the H200, results/finetune_memory);\n"+
		"  shorter samples (finetune.seq_len), finetune.checkpoint = true and finetune.weights_dtype = \"bfloat16\" lower it",
		step, tokens, err, tokens)
}
