package main

import "testing"

func TestXLAFlagsInManifest(t *testing.T) {
	t.Setenv("XLA_FLAGS", "--xla_gpu_enable_command_buffer=")
	t.Setenv("NATSBENCH_BACKEND", "")
	if got := xlaFlags("xla:cuda,memory_fraction=0.95"); got != "--xla_gpu_enable_command_buffer=" {
		t.Errorf("xla backend: %q", got)
	}
	if got := xlaFlags("go"); got != "" {
		t.Errorf("go backend: %q, want none", got)
	}
	t.Setenv("NATSBENCH_BACKEND", "xla:cuda")
	if got := xlaFlags(""); got == "" {
		t.Errorf("backend from NATSBENCH_BACKEND: no flags")
	}
}
