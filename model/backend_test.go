package model

import "testing"

func TestCutBackendOptions(t *testing.T) {
	for _, c := range []struct{ spec, base, opts string }{
		{"xla:cuda", "xla:cuda", ""},
		{"xla:cuda,memory_fraction=0.95", "xla:cuda", ",memory_fraction=0.95"},
		{"xla:/opt/p/xla_cuda_plugin.so,preallocate=false,memory_fraction=0.9", "xla:/opt/p/xla_cuda_plugin.so", ",preallocate=false,memory_fraction=0.9"},
		{"go", "go", ""},
	} {
		if b, o := cutBackendOptions(c.spec); b != c.base || o != c.opts {
			t.Errorf("cutBackendOptions(%q) = %q, %q; want %q, %q", c.spec, b, o, c.base, c.opts)
		}
	}
}

func TestXLAMemoryFraction(t *testing.T) {
	for spec, want := range map[string]float64{
		"xla:cuda":                      0.75,
		"xla:cuda,memory_fraction=0.95": 0.95,
		"xla:cuda,preallocate=false,memory_fraction=.9": 0.9,
		"xla:cuda,memory_fraction=2":                    0.75, // out of range: go-xla's default stands
	} {
		if got := XLAMemoryFraction(spec); got != want {
			t.Errorf("XLAMemoryFraction(%q) = %v, want %v", spec, got, want)
		}
	}
}

func TestXLAFlags(t *testing.T) {
	for _, c := range []struct {
		cur  string
		cuda bool
		want string
	}{
		{"", true, "--xla_gpu_cuda_data_dir=/usr/local/cuda --xla_gpu_enable_command_buffer="},
		{"", false, "--xla_gpu_enable_command_buffer="},
		{"--xla_dump_to=/tmp/d", true, "--xla_dump_to=/tmp/d --xla_gpu_enable_command_buffer="},
		{"--xla_gpu_enable_command_buffer=FUSION", true, "--xla_gpu_enable_command_buffer=FUSION"},
		{"--xla_gpu_enable_command_buffer=", false, "--xla_gpu_enable_command_buffer="},
	} {
		if got := XLAFlags(c.cur, c.cuda); got != c.want {
			t.Errorf("XLAFlags(%q, %v) = %q, want %q", c.cur, c.cuda, got, c.want)
		}
	}
}
