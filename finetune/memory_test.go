package finetune

import (
	"errors"
	"strings"
	"testing"

	"natsbench/llama"
	"natsbench/model"
)

// TestEstimateMemoryByHand checks the estimate on a tiny config against sums done by hand.
func TestEstimateMemoryByHand(t *testing.T) {
	c := llama.Config{HiddenSize: 4, IntermediateSize: 8, NumLayers: 2, NumHeads: 2, NumKVHeads: 1, HeadDim: 2, VocabSize: 10}
	// params: per layer 2·4 + 4·4 + 2·4·2 + 4·4 + 3·4·8 = 152; 2 layers + embed 40 + norm 4 + head 40 = 388;
	// scorers 2·4·1·3 floats × 4 B × 4 copies = 384 B. Attention: 2 query-head terms 2·3·3·4 B + 5 kv terms 3·3·4 B
	// = 324 B; linear 3·56 elements × 4 B = 672 B; one layer 996 B; final states 3·3·4·4 = 144 B.
	o := MemoryOptions{Seq: 3, ParamBytes: 4, ComputeBytes: 4}
	if m := EstimateMemory(c, o); m.Weights != 1936 || m.WeightsCast != 0 || m.Layer != 996 || m.Kept != 2136 || m.Total != 5068 {
		t.Fatalf("no checkpointing: %+v", m)
	}
	o.Checkpoint = true
	if m := EstimateMemory(c, o); m.Kept != 240 || m.Total != 4168 {
		t.Fatalf("checkpointing: %+v", m)
	}
	o.ComputeBytes = 2
	if m := EstimateMemory(c, o); m.WeightsCast != 388*2 {
		t.Fatalf("weights held in f32 and computed in bf16 need a cast copy: %+v", m)
	}
	// Fused path: no s² term kept, so one layer is the linear 672 B (and its gradients too); the backward peak is
	// fusedBlockF32Terms = 7 float32 [heads, rows, seq] tensors, one block of all 3 rows here: 7·2·3·3·4 B = 504 B,
	// fusedHeadTerms = 4 compute-dtype (float32) [heads, seq, seq] tensors, 4·2·3·3·4 B = 288 B, and fusedMaskTerms = 2
	// Bool [kv_heads, seq, seq] masks, 2·1·3·3 B = 18 B: 810 B. Without checkpointing kept = 2·672 + 144 = 1488 B,
	// total 1936 + 1488 + 672 + 810 = 4906 B; with it kept = 240 B (layer inputs only: the carrier's VJP holds nothing
	// of the forward pass), total 1936 + 240 + 672 + 672 + 810 = 4330 B.
	o = MemoryOptions{Seq: 3, ParamBytes: 4, ComputeBytes: 4, Fused: true}
	if m := EstimateMemory(c, o); m.Layer != 672 || m.LayerGrad != 672 || m.AttnPeak != 810 || m.Kept != 1488 || m.Total != 4906 {
		t.Fatalf("fused, no checkpointing: %+v", m)
	}
	o.Checkpoint = true
	if m := EstimateMemory(c, o); m.Kept != 240 || m.AttnPeak != 810 || m.Total != 4330 {
		t.Fatalf("fused, checkpointing: %+v", m)
	}
	// The head terms are in the compute dtype, the blocks float32 whatever it is: bf16 gives 504 + 144 + 18 = 666 B.
	o.ComputeBytes = 2
	if m := EstimateMemory(c, o); m.AttnPeak != 666 {
		t.Fatalf("fused, bf16 compute: %+v", m)
	}
	// Blocks: with a bound of 2 rows' float32 tensor (2·2·3·4 B = 48 B) the carrier walks 3 queries in blocks of 2
	// (model.CarrierBlockRows), so its temporaries are 7·2·2·3·4 B = 336 B; the unblocked bf16 head terms stay
	// 144 B and the masks 18 B: 498 B.
	defer model.SetCarrierBlockBytes(48)()
	if m := EstimateMemory(c, o); m.AttnPeak != 498 {
		t.Fatalf("fused, blocks of 2 rows: %+v", m)
	}
}

// TestFusedLlama3_8B: the fused path's numbers for Llama-3-8B on an H200 (140.4 GiB), worked out by hand. At 16,384
// tokens the carrier's backward walks the queries in blocks of 1,024 rows (one float32 [32, 1024, 16384] tensor is
// 2 GiB, the bound): 7 such tensors, 14 GiB, plus 4 bf16 [32, 16k, 16k] tensors outside the blocks, 64 GiB, plus 2
// Bool [8, 16k, 16k] masks, 4 GiB: 82 GiB. With bf16 weights and checkpointing the rest is linear in s: weights
// 16,110,854,144 B (8,030,261,248·2 + the scorers' 50,331,648), kept (32 + 3)·4096·2 = 286,720 B/token, one layer
// and its gradients 2·73,728·2 = 294,912 B/token: total 113,687,142,400 B (105.9 GiB) at 16,384, against XLA's
// plan of 105.6 GiB for that step (results/finetune_memory). The longest sequence in steps of 1,024 within XLA's
// default share (go-xla's memory_fraction 0.75: 105 GiB) is 15,360 with bf16 weights and checkpointing, 12,288 with
// float32 weights plus their bf16 cast, 10,240 without checkpointing, 7,168 with neither; within 133 GiB
// (memory_fraction 0.95) 19,456 with bf16 weights and checkpointing.
func TestFusedLlama3_8B(t *testing.T) {
	c := Llama3_8B()
	o := MemoryOptions{Seq: 16384, ParamBytes: 2, ComputeBytes: 2, Checkpoint: true, Fused: true}
	if m := EstimateMemory(c, o); m.AttnPeak != 82<<30 || m.Total != 113_687_142_400 {
		t.Fatalf("fused, 16k: %+v", m)
	}
	for _, tc := range []struct {
		budget int64
		pb     int
		ck     bool
		want   int
	}{{105 << 30, 2, true, 15360}, {105 << 30, 4, true, 12288}, {105 << 30, 2, false, 10240}, {105 << 30, 4, false, 7168},
		{133 << 30, 2, true, 19456}} {
		o := MemoryOptions{ParamBytes: tc.pb, ComputeBytes: 2, Checkpoint: tc.ck, Fused: true}
		if got := MaxSeq(c, o, tc.budget, 1024); got != tc.want {
			t.Errorf("budget %d GiB, weights %d B, checkpointing %v: max seq %d, want %d", tc.budget>>30, tc.pb, tc.ck, got, tc.want)
		}
	}
}

// TestLlama3_8BParameterCount: the architecture gives Meta-Llama-3-8B's published 8,030,261,248 parameters.
func TestLlama3_8BParameterCount(t *testing.T) {
	m := EstimateMemory(Llama3_8B(), MemoryOptions{Seq: 1, ParamBytes: 1, ComputeBytes: 1})
	scorer := int64(32 * 4096 * 8 * 3 * 16)
	if got := m.Weights - scorer; got != 8_030_261_248 {
		t.Fatalf("Llama-3-8B parameters %d, want 8030261248", got)
	}
	if s := MaxSeq(Llama3_8B(), MemoryOptions{ParamBytes: 2, ComputeBytes: 2, Checkpoint: true}, 139<<30, 1024); s < 1024 || s >= 16384 {
		t.Fatalf("max seq %d: the materialised [heads,s,s] attention should not fit 16k on 139 GiB", s)
	}
}

// TestOutOfMemoryError: a step's out-of-memory failure names the step, its length and the remedies, and keeps the
// original error; other errors are not taken for one.
func TestOutOfMemoryError(t *testing.T) {
	base := errors.New("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 128.52GiB")
	if !IsOutOfMemory(base) || IsOutOfMemory(errors.New("INVALID_ARGUMENT: shape mismatch")) || IsOutOfMemory(nil) {
		t.Fatal("IsOutOfMemory misclassifies")
	}
	err := outOfMemoryError(3, 16384, base)
	for _, want := range []string{"finetune step 3 (16384 tokens)", "memory_fraction=0.95", "memest -seq 16384", "finetune.seq_len"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q lacks %q", err, want)
		}
	}
	if !errors.Is(err, base) {
		t.Error("the device's error is not wrapped")
	}
}
