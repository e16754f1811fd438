package model

import (
	"fmt"
	"os"
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
//     backend_xla.go). GOMLX_NO_AUTO_INSTALL=1 is always set, so GoMLX never downloads plugins.
//
// An unknown backend is an error naming the spec.
func NewBackend(spec string) (compute.Backend, error) {
	_ = os.Setenv("GOMLX_NO_AUTO_INSTALL", "1")
	if spec == "" {
		spec = os.Getenv("NATSBENCH_BACKEND")
	}
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
