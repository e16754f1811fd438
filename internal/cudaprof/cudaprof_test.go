package cudaprof

import (
	"strings"
	"testing"
)

// TestCalls: Start and Stop either reach the driver (a machine with CUDA) or say which call failed and why.
func TestCalls(t *testing.T) {
	for name, f := range map[string]func() error{"cuProfilerStart": Start, "cuProfilerStop": Stop} {
		if err := f(); err != nil && !strings.Contains(err.Error(), name) {
			t.Errorf("%s: error %q does not name the call", name, err)
		}
	}
}
