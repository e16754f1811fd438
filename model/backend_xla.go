//go:build xla

package model

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	_ "github.com/gomlx/go-xla/compute/xla" // XLA/PJRT backend (cgo, dlopen of the plugin)
)

const xlaLinked = true

// resolveXLA turns "xla:cuda" into the absolute path of a CUDA PJRT plugin when one can be found: $PJRT_PLUGIN,
// or the plugin shipped with the jax-cuda13-pjrt Python package (GOMLX.md). XLA_FLAGS gets natsbench's defaults
// (XLAFlags).
func resolveXLA(spec string) string {
	_, err := os.Stat("/usr/local/cuda/nvvm")
	_ = os.Setenv("XLA_FLAGS", XLAFlags(os.Getenv("XLA_FLAGS"), err == nil))
	if os.Getenv("GOPJRT_CUDA_CHECKS") == "" {
		_ = os.Setenv("GOPJRT_CUDA_CHECKS", "0")
	}
	spec, opts := cutBackendOptions(spec)
	_, plugin, _ := strings.Cut(spec, ":")
	if plugin != "cuda" {
		return spec + opts
	}
	if p := os.Getenv("PJRT_PLUGIN"); p != "" {
		return "xla:" + p + opts
	}
	for _, py := range []string{"/opt/torch/.venv/bin/python3", "python3"} {
		out, err := exec.Command(py, "-c",
			"import jax_plugins.xla_cuda13 as m, os; print(os.path.join(os.path.dirname(m.__file__), 'xla_cuda_plugin.so'))").Output()
		if err == nil {
			p := strings.TrimSpace(string(out))
			if _, err := os.Stat(p); err == nil && filepath.IsAbs(p) {
				return "xla:" + p + opts
			}
		}
	}
	return spec + opts
}
