// Package train trains the LM with AdamW (decoupled weight decay on matrices only), linear warm-up and cosine
// decay, global-norm gradient clipping and gradient accumulation, deterministically from a seed, and saves
// checkpoints that resume to the same step (NATS-SPEC.md §2.3).
package train

import (
	"fmt"
	"math"
)

// Config is a sweep's [train] table.
type Config struct {
	Steps       int     `toml:"steps"`        // optimizer steps
	BatchSize   int     `toml:"batch_size"`   // sequences per micro-batch
	GradAccum   int     `toml:"grad_accum"`   // micro-batches per step (default 1)
	SeqLen      int     `toml:"seq_len"`      // tokens per sequence
	LR          float64 `toml:"lr"`           // peak learning rate (6e-4)
	MinLR       float64 `toml:"min_lr"`       // final learning rate of the cosine (6e-5)
	WarmupSteps int     `toml:"warmup_steps"` // linear warm-up steps
	WeightDecay float64 `toml:"weight_decay"` // AdamW decay on parameters with rank ≥ 2 (0.1)
	GradClip    float64 `toml:"grad_clip"`    // global-norm clip; 0 disables (0.1 in the paper's code)
	Beta1       float64 `toml:"beta1"`        // 0.9
	Beta2       float64 `toml:"beta2"`        // 0.95
	CkptEvery   int     `toml:"ckpt_every"`   // steps between checkpoints (0: only at the end)
	LogEvery    int     `toml:"log_every"`    // steps between metric rows (default 1)
	EvalEvery   int     `toml:"eval_every"`   // steps between validation losses (0: only at the end)
	EvalBatches int     `toml:"eval_batches"` // validation batches per evaluation
	// DataParallel splits each micro-batch's batch_size sequences over this many devices of the backend (SPMD
	// over XLA/NCCL: gradients averaged across devices, parameters and optimizer state replicated); 0 or 1 = one
	// device. The result equals the one-device run of the same batch up to floating-point order.
	DataParallel int `toml:"data_parallel"`
}

// Devices returns the number of data-parallel devices (1 when data_parallel is 0 or 1).
func (c Config) Devices() int { return max(1, c.DataParallel) }

// DefaultConfig returns the paper code's optimisation defaults, scaled to a short run.
func DefaultConfig() Config {
	return Config{Steps: 2000, BatchSize: 16, GradAccum: 1, SeqLen: 1024, LR: 6e-4, MinLR: 6e-5, WarmupSteps: 200,
		WeightDecay: 0.1, GradClip: 0.1, Beta1: 0.9, Beta2: 0.95, CkptEvery: 500, LogEvery: 1, EvalEvery: 0, EvalBatches: 8}
}

// Validate checks the configuration, naming the field.
func (c Config) Validate() error {
	for _, f := range []struct {
		n string
		v int
	}{{"steps", c.Steps}, {"batch_size", c.BatchSize}, {"grad_accum", c.GradAccum}, {"seq_len", c.SeqLen}} {
		if f.v <= 0 {
			return fmt.Errorf("train.%s = %d: must be positive", f.n, f.v)
		}
	}
	if c.LR <= 0 || c.MinLR < 0 || c.MinLR > c.LR {
		return fmt.Errorf("train.lr = %g, train.min_lr = %g: need 0 ≤ min_lr ≤ lr, lr > 0", c.LR, c.MinLR)
	}
	if c.WarmupSteps < 0 || c.WeightDecay < 0 || c.GradClip < 0 || c.CkptEvery < 0 || c.EvalEvery < 0 || c.LogEvery < 0 {
		return fmt.Errorf("train: warmup_steps, weight_decay, grad_clip, ckpt_every, eval_every, log_every must be ≥ 0")
	}
	if c.DataParallel < 0 {
		return fmt.Errorf("train.data_parallel = %d: must be ≥ 0 (0 or 1: one device)", c.DataParallel)
	}
	if n := c.Devices(); c.BatchSize%n != 0 {
		return fmt.Errorf("train.data_parallel = %d does not divide train.batch_size = %d: each device takes batch_size/data_parallel sequences of every micro-batch", n, c.BatchSize)
	}
	if c.Beta1 < 0 || c.Beta1 >= 1 || c.Beta2 < 0 || c.Beta2 >= 1 {
		return fmt.Errorf("train.beta1 = %g, train.beta2 = %g: must be in [0, 1)", c.Beta1, c.Beta2)
	}
	return nil
}

// LRAt returns the learning rate of optimizer step `step` (0-based): linear warm-up (step+1)/(warmup+1)·lr, then
// cosine decay from lr to min_lr at the last step (nanoGPT's get_lr with lr_decay_iters = steps).
func (c Config) LRAt(step int) float64 {
	if step < c.WarmupSteps {
		return c.LR * float64(step+1) / float64(c.WarmupSteps+1)
	}
	if c.Steps <= c.WarmupSteps {
		return c.LR
	}
	ratio := float64(step-c.WarmupSteps) / float64(c.Steps-c.WarmupSteps)
	if ratio > 1 {
		ratio = 1
	}
	coeff := 0.5 * (1 + math.Cos(math.Pi*ratio))
	return c.MinLR + coeff*(c.LR-c.MinLR)
}
