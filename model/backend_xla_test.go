//go:build xla

package model

import "testing"

// TestResolveXLAKeepsOptions: "cuda" becomes the plugin's path and the options after it survive (go-xla reads them).
func TestResolveXLAKeepsOptions(t *testing.T) {
	t.Setenv("PJRT_PLUGIN", "/opt/p/xla_cuda_plugin.so")
	for spec, want := range map[string]string{
		"xla:cuda":                      "xla:/opt/p/xla_cuda_plugin.so",
		"xla:cuda,memory_fraction=0.95": "xla:/opt/p/xla_cuda_plugin.so,memory_fraction=0.95",
		"xla:cpu,shared_buffers":        "xla:cpu,shared_buffers",
	} {
		if got := resolveXLA(spec); got != want {
			t.Errorf("resolveXLA(%q) = %q, want %q", spec, got, want)
		}
	}
}
