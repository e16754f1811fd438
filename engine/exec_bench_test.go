package engine

import (
	"fmt"
	"testing"

	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"
)

// BenchmarkExecArgs times GoMLX's own work per graph call against the number of device-resident arguments (a decode
// step passes ~125: weights, per-layer K/V and staging, masks), with a graph that reads only the first, on the
// backend of the tests ($NATSBENCH_BACKEND, default pure Go). Measured 2026-11-29 on the pure-Go backend, 2 cores:
// 6–12 µs with 1 argument, 10–14 with 16, 35 with 128 — so the ~0.6 ms per call of a decode step on the H200
// (results/latency_diag) is not GoMLX's argument handling.
//
//	go test -run '^$' -bench ExecArgs ./engine
func BenchmarkExecArgs(b *testing.B) {
	backend := testBackend(b)
	dev, err := NewExec(backend, func(x *Node) *Node { return Add(x, ZerosLike(x)) })
	if err != nil {
		b.Fatal(err)
	}
	for _, n := range []int{1, 16, 128} {
		b.Run(fmt.Sprintf("args=%d", n), func(b *testing.B) {
			exec, err := NewExec(backend, func(in []*Node) *Node { return ReduceAllSum(in[0]) })
			if err != nil {
				b.Fatal(err)
			}
			args := make([]any, n)
			for i := range args {
				args[i] = dev.MustExec1(tensors.FromFlatDataAndDimensions([]float32{1, 2, 3, 4}, 4)) // on the device
			}
			exec.MustExec(args...)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				out := exec.MustExec(args...)
				_ = tensors.MustCopyFlatData[float32](out[0])
				out[0].FinalizeAll()
			}
		})
	}
}
