package finetune

import (
	"math"
	"strings"
	"testing"

	"natsbench/model"
)

// TestProbeTiny: Probe runs real training steps of a random tiny Llama generated on the device, in float32 (the CPU
// configuration) and in the GPU configuration (bf16 compute, bf16-held weights, checkpointing: the fused path), with
// finite losses and the estimate of the same options; bf16 weights under float32 compute are refused.
func TestProbeTiny(t *testing.T) {
	backend, err := model.NewBackend("go")
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range []ProbeOptions{
		{Seq: 48, DType: "float32", Checkpoint: true, Steps: 2, Seed: 1},
		{Seq: 32, DType: "bfloat16", Checkpoint: true, Steps: 1, Seed: 2},
		{Seq: 32, DType: "bfloat16", WeightsDType: "float32", Steps: 1, Seed: 3},
	} {
		r, err := Probe(backend, TinyLlama(), o)
		if err != nil {
			t.Fatalf("%+v: %v", o, err)
		}
		want := o.WeightsDType
		if want == "" {
			want = o.DType
		}
		if len(r.Rows) != o.Steps || len(r.StepSeconds) != o.Steps || r.WeightsDType != want {
			t.Fatalf("%+v: %d rows, %d timings, weights %s", o, len(r.Rows), len(r.StepSeconds), r.WeightsDType)
		}
		for _, row := range r.Rows {
			if math.IsNaN(row.Loss) || math.IsInf(row.Loss, 0) || row.Loss <= 0 {
				t.Errorf("%+v: loss %v", o, row.Loss)
			}
		}
		e := EstimateMemory(TinyLlama(), MemoryOptions{Seq: o.Seq, ParamBytes: dtypeBytes(want), ComputeBytes: dtypeBytes(o.DType),
			Checkpoint: o.Checkpoint, Fused: o.DType == "bfloat16"})
		if r.Estimate != e || (o.DType == "bfloat16") != (e.AttnPeak > 0) {
			t.Errorf("%+v: estimate %+v, want %+v", o, r.Estimate, e)
		}
		t.Logf("%s compute, %s weights, checkpointing %v, seq %d: steps %.2v s, loss %.4g; estimate %v", o.DType, want,
			o.Checkpoint, o.Seq, r.StepSeconds, r.Rows[0].Loss, r.Estimate)
	}
	if _, err := Probe(backend, TinyLlama(), ProbeOptions{Seq: 16, DType: "float32", WeightsDType: "bfloat16"}); err == nil ||
		!strings.Contains(err.Error(), "finetune.weights_dtype") {
		t.Errorf("bf16 weights under float32 compute: %v", err)
	}
}
