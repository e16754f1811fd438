package model

import (
	"strings"
	"testing"
)

func TestValidateNamesTheField(t *testing.T) {
	cases := []struct {
		name  string
		edit  func(*Config)
		field string
	}{
		{"heads do not divide d_model", func(c *Config) { c.NHeads = 7 }, "model.n_heads"},
		{"kv heads do not divide heads", func(c *Config) { c.NKVHeads = 3 }, "model.n_kv_heads"},
		{"zero layers", func(c *Config) { c.NLayers = 0 }, "model.n_layers"},
		{"bad dtype", func(c *Config) { c.DType = "float16" }, "model.dtype"},
		{"bad rope scaling", func(c *Config) { c.RopeScaling = "yarn" }, "model.rope_scaling"},
		{"odd head dim", func(c *Config) { c.DModel, c.NHeads = 24, 8 }, "head dimension"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := DefaultConfig()
			c.edit(&cfg)
			err := cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), c.field) {
				t.Fatalf("Validate() = %v, want an error naming %q", err, c.field)
			}
		})
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("default config invalid: %v", err)
	}
}

func TestUnknownBackendRefused(t *testing.T) {
	for _, spec := range []string{"tpu", "cuda", "xla:cuda"} {
		_, err := NewBackend(spec)
		if err == nil || !strings.Contains(err.Error(), spec) {
			t.Errorf("NewBackend(%q) = %v, want an error naming it", spec, err)
		}
	}
}

func TestRopeLlama3MatchesReferenceValues(t *testing.T) {
	// Values of HF's _compute_llama3_parameters for head_dim 32, θ=500000 (factor 8, low 1, high 4, orig 8192),
	// computed by hand from the formula: frequency 0 is 1 (wavelength 2π < 2048: kept); the last frequencies have
	// wavelengths above 8192 and are divided by 8.
	inv := RopeInvFreq(32, 500000, "llama3")
	plain := RopeInvFreq(32, 500000, "none")
	if inv[0] != 1 || plain[0] != 1 {
		t.Fatalf("inv[0] = %v / %v, want 1", inv[0], plain[0])
	}
	last := len(inv) - 1
	if got, want := inv[last], plain[last]/8; got != want {
		t.Fatalf("low frequency %v, want %v (divided by 8)", got, want)
	}
	for i := range inv {
		if inv[i] > plain[i] || inv[i] < plain[i]/8 {
			t.Fatalf("inv[%d] = %v outside [%v, %v]", i, inv[i], plain[i]/8, plain[i])
		}
	}
}
