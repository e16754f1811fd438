//go:build !linux || !cgo

package cudaprof

import "errors"

// Start asks an attached profiler to start collecting; without cgo it only returns an error.
func Start() error { return errors.New("cudaprof: cuProfilerStart: needs linux and cgo") }

// Stop asks an attached profiler to stop collecting; without cgo it only returns an error.
func Stop() error { return errors.New("cudaprof: cuProfilerStop: needs linux and cgo") }
