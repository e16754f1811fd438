// Package nats implements the Neural Attention Search layer (NATS-SPEC.md §1): a bias-free scorer per attention
// layer that picks, per token (or chunk of C tokens) and per KV head, one of three roles — Global, Local,
// Window (sliding window) — with straight-through Gumbel-softmax in training and argmax at inference; the hard
// attention mask those roles imply; a zero-valued gradient carrier through which autodiff yields the per-role
// gradients of §1.5; and the λ sparsity term. It plugs into the model through model.Masker and
// model.DecodeRoler; the cache eviction that the roles imply at inference lives in policy.NAtS.
//
// Choices where the official code has quirks (NATS-SPEC.md §1.5), stated once here:
//   - The carrier is the chunk kernel's exact mask gradient (multiplicative-mask attention, masked normaliser),
//     used for C = 1 too; the token kernel's unmasked normaliser and its extra "conv" term are not reproduced.
//   - The "collected" term uses the mathematically affected rows: for token level (n_j, n2_j], for chunks
//     [(n_c+1)·C, (n2_c+1)·C); the official token kernel shifts the token-level range by one row.
//   - The Global what-if region is i ≥ (n_c+1)·C (for C = 1: i > n_j).
//   - Chunk gradients are divided by C (the chunk kernel's per-chunk average).
//   - The sparsity term is λ·Σ_{b, query heads, units}(G·y^G·(N−c) + L·y^L·(e_c−c))/N, summed over query heads
//     (effective n_rep·λ per KV head), not divided by batch size or accumulation steps, as in the official code.
package nats

import (
	"fmt"

	"natsbench/model"
)

// Role indices, in the one-hot order of the official code.
const (
	Global = 0
	Local  = 1
	Window = 2
)

// Config is a sweep's [method] table for NAtS (keys as in TOML).
type Config struct {
	Lambda      float64  // λ, the sparsity coefficient (reference default 5e-7)
	Window      int      // W, the sliding-window length in tokens (default 16)
	Chunk       int      // C, tokens per decision (1 = token-level NAtS)
	Merge       string   // chunk pooling: "mean" (default) or "max"
	Roles       []string // enabled roles, subset of {"global","local","window"}; empty = all three
	GlobalBonus float64  // added to the Global logit before argmax at inference (0.1 in the from-scratch model)
}

// DefaultConfig returns the from-scratch reference settings: λ=5e-7, W=16, C=1, mean pooling, all roles,
// +0.1 on the Global logit at inference.
func DefaultConfig() Config {
	return Config{Lambda: 5e-7, Window: 16, Chunk: 1, Merge: "mean", GlobalBonus: 0.1}
}

// Validate checks the configuration and names the offending field.
func (c Config) Validate() error {
	if c.Lambda < 0 {
		return fmt.Errorf("method.lambda = %g: must be ≥ 0", c.Lambda)
	}
	if c.Chunk < 1 {
		return fmt.Errorf("method.chunk_size = %d: must be ≥ 1", c.Chunk)
	}
	if c.Window < 1 {
		return fmt.Errorf("method.window = %d: must be ≥ 1", c.Window)
	}
	if c.Window%c.Chunk != 0 {
		return fmt.Errorf("method.window = %d is not a multiple of method.chunk_size = %d", c.Window, c.Chunk)
	}
	switch c.Merge {
	case "", "mean", "max":
	default:
		return fmt.Errorf("method.chunk_merge = %q: want \"mean\" or \"max\"", c.Merge)
	}
	if _, err := c.enabled(); err != nil {
		return err
	}
	return nil
}

func (c Config) enabled() ([3]bool, error) {
	if len(c.Roles) == 0 {
		return [3]bool{true, true, true}, nil
	}
	var e [3]bool
	for _, r := range c.Roles {
		switch r {
		case "global":
			e[Global] = true
		case "local":
			e[Local] = true
		case "window":
			e[Window] = true
		default:
			return e, fmt.Errorf("method.roles: unknown role %q (want global, local, window)", r)
		}
	}
	if !e[0] && !e[1] && !e[2] {
		return e, fmt.Errorf("method.roles: no role enabled")
	}
	return e, nil
}

// Masker is the NAtS model.Masker and model.DecodeRoler.
type Masker struct {
	cfg     Config
	enabled [3]bool
}

// New returns the NAtS masker for a validated configuration.
func New(cfg Config) (*Masker, error) {
	if cfg.Merge == "" {
		cfg.Merge = "mean"
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	e, _ := cfg.enabled()
	return &Masker{cfg: cfg, enabled: e}, nil
}

// Config returns the masker's configuration.
func (m *Masker) Config() Config { return m.cfg }

// Specs declares the scorer: `[d_model, kv_heads·3]`, no bias, GPT init (normal 0.02), weight decay on.
func (m *Masker) Specs(cfg model.Config, layer int) []model.Spec {
	return []model.Spec{{Name: "scorer", Dims: []int{cfg.DModel, cfg.KVHeads() * 3}, Std: 0.02, Decay: true}}
}
