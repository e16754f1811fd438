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
