package finetune

import (
	"testing"

	"natsbench/llama"
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
	// Fused path: no s² term kept, so one layer is the linear 672 B (and its gradients too); the backward peak is S
	// and dP 2·2·3·3·4 B = 144 B, ∂L/∂M bf16 1·3·3·2 B = 18 B and the bias 2·3·3·4 B = 72 B (compute dtype float32):
	// 234 B. Without checkpointing kept = 2·672 + 144 = 1488 B, total 1936 + 1488 + 672 + 234 = 4330 B; with it
	// kept = 240 B plus what the carrier's VJP holds, q, k, v and the output of both layers: 2·3·(2·2·2 + 2·1·2)·4 B
	// = 288 B; total 1936 + 240 + 288 + 672 + 672 + 234 = 4042 B.
	o = MemoryOptions{Seq: 3, ParamBytes: 4, ComputeBytes: 4, Fused: true}
	if m := EstimateMemory(c, o); m.Layer != 672 || m.LayerGrad != 672 || m.AttnPeak != 234 || m.Kept != 1488 || m.Captured != 0 || m.Total != 4330 {
		t.Fatalf("fused, no checkpointing: %+v", m)
	}
	o.Checkpoint = true
	if m := EstimateMemory(c, o); m.Kept != 240 || m.Captured != 288 || m.AttnPeak != 234 || m.Total != 4042 {
		t.Fatalf("fused, checkpointing: %+v", m)
	}
	// The bias is in the compute dtype, ∂L/∂M bf16 whatever it is: bf16 compute gives 144 + 18 + 36 = 198 B.
	o.ComputeBytes = 2
	if m := EstimateMemory(c, o); m.AttnPeak != 198 {
		t.Fatalf("fused, bf16 compute: %+v", m)
	}
}

// TestFusedLlama3_8B: the fused path's numbers for Llama-3-8B on the H200 (139 GiB), worked out by hand. The backward
// peak at 16,384 tokens is S and dP 2·32·16384²·4 B = 64 GiB, ∂L/∂M 8·16384²·2 B = 4 GiB, the bf16 bias
// 32·16384²·2 B = 16 GiB: 84 GiB, i.e. 336 B per seq² in general. With bf16 weights and checkpointing the rest is
// linear in s: weights 16,110,854,144 B (8,030,261,248·2 + the scorers' 50,331,648), kept (32 + 3)·4096·2 = 286,720
// B/token, q, k, v and the output held by the carrier's VJP 32·(2·4096 + 2·1024)·2 = 655,360 B/token (10 GiB at
// 16k), one layer and its gradients 2·73,728·2 = 294,912 B/token: total 126,572,044,288 B (117.9 GiB) at 16,384;
// 129.9 GiB at 17,408 and 142.5 GiB at 18,432, so the longest in steps of 1024 is 17,408. With float32 weights plus
// the bf16 cast (48,231,899,136 B) 16,384 no longer fits (147.8 GiB); 15,360 does. Without checkpointing (bf16
// weights; every layer keeps its 147,456 B/token) 13,312 fits (131.1 GiB), 14,336 does not (144.6 GiB); with float32
// weights and the cast, 11,264.
func TestFusedLlama3_8B(t *testing.T) {
	c := Llama3_8B()
	const budget = 139 << 30
	o := MemoryOptions{Seq: 16384, ParamBytes: 2, ComputeBytes: 2, Checkpoint: true, Fused: true}
	if m := EstimateMemory(c, o); m.AttnPeak != 84<<30 || m.Captured != 10<<30 || m.Total != 126_572_044_288 {
		t.Fatalf("fused, 16k: %+v", m)
	}
	for _, tc := range []struct {
		pb   int
		ck   bool
		want int
	}{{2, true, 17408}, {4, true, 15360}, {2, false, 13312}, {4, false, 11264}} {
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
