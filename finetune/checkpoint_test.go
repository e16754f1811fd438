package finetune

import (
	"testing"

	"natsbench/llama"
	"natsbench/nats"
)

// TestCheckpointMatches: per-layer gradient checkpointing of the student (Config.Checkpoint) gives the same
// distillation loss, λ term and scorer gradients as keeping every activation, on the materialised path (the
// differentiable mask) and on the fused path (forced: model.FusedMaskedAttention, whose carrier gradient comes from
// a custom VJP through IdentityWithCustomGradient), for grouped-query Llama with NAtS chunks and for Mistral with a
// sliding window. Float32 on the pure-Go backend, same Gumbel noise. The recomputed layers repeat the forward
// pass's operations on the same inputs (the noise is drawn outside the checkpointed blocks, from the RNG state),
// so the bound, 1e-6 of each scorer gradient's largest entry, is float32 reordering at most (measured: 0,
// bit-identical). llama's TestCheckpointGradients checks that the recomputation feeds the gradients; breaking it
// (StopGradient at the checkpoints, or a residual dropped in checkpointed layers) fails both tests.
func TestCheckpointMatches(t *testing.T) {
	toks, lab := smallSample()
	for _, tc := range []struct {
		name string
		c    llama.Config
		nc   nats.Config
	}{
		{"llama-chunk2", smallLlama(), nats.Config{Lambda: 1e-3, Window: 4, Chunk: 2, Merge: "max"}},
		{"mistral-window", smallMistral(), nats.Config{Lambda: 1e-3, Window: 2, Chunk: 1}},
	} {
		tr := fusedTestTrainer(t, tc.c, tc.nc)
		for _, p := range []struct {
			name string
			path llama.AttentionPath
		}{{"materialized", llama.AttentionMaterialized}, {"fused", llama.AttentionFused}} {
			t.Run(tc.name+"/"+p.name, func(t *testing.T) {
				tr.Cfg.Checkpoint = false
				l0, a0, g0 := studentStep(t, tr, p.path, toks, lab)
				tr.Cfg.Checkpoint = true
				l1, a1, g1 := studentStep(t, tr, p.path, toks, lab)
				tr.Cfg.Checkpoint = false
				if l0 < 1e-6 {
					t.Fatalf("distillation loss %g: the mask does not change the student", l0)
				}
				if l0 != l1 || a0 != a1 {
					t.Errorf("loss %v, λ term %v with checkpointing; %v, %v without", l1, a1, l0, a0)
				}
				worst, scales := relGradDiff(g0, g1)
				for i, scale := range scales {
					if scale < 1e-7 {
						t.Fatalf("%s: no gradient", tr.Scorers.Specs[i].Name)
					}
				}
				t.Logf("loss %.6g; largest max|Δgrad|/max|grad| over the scorers %.2g", l0, worst)
				if worst > 1e-6 {
					t.Errorf("scorer gradients differ by %.3g of their scale with checkpointing", worst)
				}
			})
		}
	}
}

// TestCheckpointTrainStep: whole training steps (AdamW included) with checkpointing give the same losses and
// scorers as without, on the bundled HF-tiny model.
func TestCheckpointTrainStep(t *testing.T) {
	plain, ckpt := newTrainer(t, 10), newTrainer(t, 10)
	ckpt.Cfg.Checkpoint = true
	toks, lab := sample()
	for step := 0; step < 2; step++ {
		r0, err := plain.TrainStep(toks, lab)
		if err != nil {
			t.Fatal(err)
		}
		r1, err := ckpt.TrainStep(toks, lab)
		if err != nil {
			t.Fatal(err)
		}
		if r0.Loss != r1.Loss || r0.Aux != r1.Aux || r0.Density != r1.Density {
			t.Fatalf("step %d: %+v with checkpointing, %+v without", step+1, r1, r0)
		}
	}
	for i := range plain.Scorers.Specs {
		a, b := plain.Scorers.Flat(i), ckpt.Scorers.Flat(i)
		for k := range a {
			if a[k] != b[k] {
				t.Fatalf("%s[%d]: %v with checkpointing, %v without", plain.Scorers.Specs[i].Name, k, b[k], a[k])
			}
		}
	}
}
