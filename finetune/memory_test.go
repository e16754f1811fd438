package finetune

import (
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
	// plus the bias 2·3·3·4 B = 72 B (compute dtype float32): 576 B. Without checkpointing kept = 2·672 + 144 = 1488 B,
	// total 1936 + 1488 + 672 + 576 = 4672 B; with it kept = 240 B plus what the carrier's VJP holds, q, k, v and the
	// output of both layers: 2·3·(2·2·2 + 2·1·2)·4 B = 288 B; total 1936 + 240 + 288 + 672 + 672 + 576 = 4384 B.
	o = MemoryOptions{Seq: 3, ParamBytes: 4, ComputeBytes: 4, Fused: true}
	if m := EstimateMemory(c, o); m.Layer != 672 || m.LayerGrad != 672 || m.AttnPeak != 576 || m.Kept != 1488 || m.Captured != 0 || m.Total != 4672 {
		t.Fatalf("fused, no checkpointing: %+v", m)
	}
	o.Checkpoint = true
	if m := EstimateMemory(c, o); m.Kept != 240 || m.Captured != 288 || m.AttnPeak != 576 || m.Total != 4384 {
		t.Fatalf("fused, checkpointing: %+v", m)
	}
	// The bias is in the compute dtype, the carrier's temporaries float32 whatever it is: bf16 gives 504 + 36 = 540 B.
	o.ComputeBytes = 2
	if m := EstimateMemory(c, o); m.AttnPeak != 540 {
		t.Fatalf("fused, bf16 compute: %+v", m)
	}
	// Blocks: with a bound of 2 rows' float32 tensor (2·2·3·4 B = 48 B) the carrier walks 3 queries in blocks of 2
	// (model.CarrierBlockRows), so its temporaries are 7·2·2·3·4 B = 336 B, plus the bf16 bias 36 B.
	defer model.SetCarrierBlockBytes(48)()
	if m := EstimateMemory(c, o); m.AttnPeak != 372 {
		t.Fatalf("fused, blocks of 2 rows: %+v", m)
	}
}

// TestFusedLlama3_8B: the fused path's numbers for Llama-3-8B within XLA's default share of an H200 (0.75 of its
// 140.4 GiB: 105 GiB), worked out by hand. At 16,384 tokens the carrier's backward walks the queries in blocks of
// 1,024 rows (one float32 [32, 1024, 16384] tensor is 2 GiB, the bound): 7 such tensors, 14 GiB, plus the bf16 bias
// 32·16384²·2 B = 16 GiB: 30 GiB. With bf16 weights and checkpointing the rest is linear in s: weights
// 16,110,854,144 B (8,030,261,248·2 + the scorers' 50,331,648), kept (32 + 3)·4096·2 = 286,720 B/token, q, k, v and
// the output held by the carrier's VJP 32·(2·4096 + 2·1024)·2 = 655,360 B/token (10 GiB at 16k), one layer and its
// gradients 2·73,728·2 = 294,912 B/token: total 68,589,985,792 B (63.9 GiB) at 16,384. The longest sequence in steps
// of 1,024 within 105 GiB, from the same terms (the block shrinks as s grows: 432 rows at 27,648): 27,648 tokens with
// bf16 weights and checkpointing (102.4 GiB; 28,672 needs 107.8), 20,480 with float32 weights plus their bf16 cast,
// 14,336 without checkpointing, 9,216 with neither. These rest on XLA running the blocks one after another; the
// unblocked 8k plan they are calibrated on is the only GPU measurement (results/finetune_memory).
func TestFusedLlama3_8B(t *testing.T) {
	c := Llama3_8B()
	const budget = 105 << 30
	o := MemoryOptions{Seq: 16384, ParamBytes: 2, ComputeBytes: 2, Checkpoint: true, Fused: true}
	if m := EstimateMemory(c, o); m.AttnPeak != 30<<30 || m.Captured != 10<<30 || m.Total != 68_589_985_792 {
		t.Fatalf("fused, 16k: %+v", m)
	}
	for _, tc := range []struct {
		pb   int
		ck   bool
		want int
	}{{2, true, 27648}, {4, true, 20480}, {2, false, 14336}, {4, false, 9216}} {
		o := MemoryOptions{ParamBytes: tc.pb, ComputeBytes: 2, Checkpoint: tc.ck, Fused: true}
		if got := MaxSeq(c, o, budget, 1024); got != tc.want {
			t.Errorf("weights %d B, checkpointing %v: max seq %d, want %d", tc.pb, tc.ck, got, tc.want)
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
