package model

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/gomlx/compute"
	_ "github.com/gomlx/compute/gobackend" // the pure-Go backend, always linked in
)

// NewBackend opens a GoMLX backend from a spec:
//
//   - "" or "go": the pure-Go backend (the embedded default). It is opened as "go:parallelism=-1", because at the
//     default parallelism the backend can deadlock on 2 cores (nested parallel DotGeneral tasks wait for workers held
//     by their parents; GOMLX.md). Any "go:..." spec is passed through unchanged.
//   - "xla:cuda", "xla:<absolute path to a PJRT plugin>": XLA, only in binaries built with `-tags xla` (see
//     backend_xla.go). GOMLX_NO_AUTO_INSTALL=1 is always set, so GoMLX never downloads plugins. Options of the
//     XLA backend follow the plugin after commas and are kept when "cuda" is resolved to the plugin's path, e.g.
//     "xla:cuda,memory_fraction=0.95": the CUDA client's allocator stops at memory_fraction of the GPU's memory
//     (go-xla's default 0.75: about 105 GiB of an H200, where an 8B fine-tuning probe ran out; results/finetune_memory).
//
// An unknown backend is an error naming the spec.
func NewBackend(spec string) (compute.Backend, error) {
	_ = os.Setenv("GOMLX_NO_AUTO_INSTALL", "1")
	spec = BackendSpec(spec)
	name, _, _ := strings.Cut(spec, ":")
	switch {
	case spec == "" || spec == "go":
		spec = "go:parallelism=-1"
	case name == "go":
	case name == "xla":
		if !xlaLinked {
			return nil, fmt.Errorf("backend %q: this binary was built without XLA; rebuild with `-tags xla` (README, GPU section)", spec)
		}
		spec = resolveXLA(spec)
	default:
		return nil, fmt.Errorf("backend %q: unknown backend (want \"go\" or \"xla:cuda\")", spec)
	}
	var b compute.Backend
	var err error
	func() {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("%v", r)
			}
		}()
		stdout := os.Stdout
		// The Go backend prints its parallelism setting to stdout; keep stdout clean for tables.
		if devnull, e := os.Open(os.DevNull); e == nil {
			os.Stdout = devnull
			defer func() { os.Stdout = stdout; devnull.Close() }()
		}
		b, err = compute.NewWithConfig(spec)
	}()
	if err != nil {
		return nil, fmt.Errorf("backend %q: %w", spec, err)
	}
	return b, nil
}

// XLAFlags returns the XLA_FLAGS an XLA backend starts with: the caller's flags (cur) plus natsbench's defaults for
// the options they do not set.
//   - CUDA's data dir (/usr/local/cuda, where nvvm/libdevice and ptxas are) when cuda and cur is empty (GOMLX.md).
//   - XLA's command buffers (CUDA graphs) off: --xla_gpu_enable_command_buffer= . On the H200 a graph call whose
//     inputs include a buffer that an earlier call produced — every decoding step's staging, validity and state,
//     every training step's weights — cost 0.6–0.9 ms more than one whose inputs stayed the same (XLA updates its
//     recorded graphs when a buffer's address changes); with them off it cost nothing more, and the engine's
//     decoding step at batch 32 on the 8B-shaped attention took 3.27 ms instead of 4.43 (NAtS) and 4.31 instead
//     of 4.94–5.13 (full attention) (engine.TestGPUEngineVsGraph, docs/engine-measurements.md). The choice is the
//     batch-32 regime's: at batch 1 on the pg19 shape, whose steps are many small kernels, the graphs saved 0.3–0.7
//     ms a token instead (results/latency_cmdbuf).
//
// Setting an option in XLA_FLAGS keeps the caller's value (XLA's own list for command buffers:
// --xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,CUDNN).
func XLAFlags(cur string, cuda bool) string {
	flags := cur
	add := func(name, value string) {
		if strings.Contains(cur, "--"+name+"=") {
			return
		}
		if flags != "" {
			flags += " "
		}
		flags += "--" + name + "=" + value
	}
	if cuda && cur == "" {
		add("xla_gpu_cuda_data_dir", "/usr/local/cuda")
	}
	add("xla_gpu_enable_command_buffer", "")
	return flags
}

// cutBackendOptions splits a backend spec into the backend and plugin ("xla:cuda") and its options with their
// leading comma (",memory_fraction=0.95"), or "" when there are none.
func cutBackendOptions(spec string) (base, opts string) {
	if i := strings.IndexByte(spec, ','); i >= 0 {
		return spec[:i], spec[i:]
	}
	return spec, ""
}

// DefaultXLAMemoryFraction is go-xla's default share of a CUDA GPU's memory that its allocator may use.
const DefaultXLAMemoryFraction = 0.75

// XLAMemoryFraction returns the memory_fraction option of an XLA backend spec ("xla:cuda,memory_fraction=0.95"),
// or DefaultXLAMemoryFraction when the spec sets none or one outside (0, 1] (which go-xla passes on unchecked).
func XLAMemoryFraction(spec string) float64 {
	_, opts := cutBackendOptions(spec)
	for _, o := range strings.Split(opts, ",") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(o), "memory_fraction="); ok {
			if f, err := strconv.ParseFloat(v, 64); err == nil && f > 0 && f <= 1 {
				return f
			}
		}
	}
	return DefaultXLAMemoryFraction
}

// BackendSpec is the spec NewBackend opens for spec: spec itself, or $NATSBENCH_BACKEND when spec is "" (and "" for
// the pure-Go default when both are empty).
func BackendSpec(spec string) string {
	if spec == "" {
		return os.Getenv("NATSBENCH_BACKEND")
	}
	return spec
}
