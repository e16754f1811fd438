package model

import "github.com/gomlx/gomlx/core/graph"

// SetFusedMasked switches the structured-mask attention path for tests and returns the restore function.
func SetFusedMasked(on bool) (restore func()) {
	old := useFusedMasked
	useFusedMasked = func(Config) bool { return on }
	return func() { useFusedMasked = old }
}

// ContractF32 exposes contractF32 to the external tests.
var ContractF32 = contractF32

// SetCarrierInputsHook sets the hook that sees the att, q, k, v the carrier's gradient function uses, and returns
// the restore function.
func SetCarrierInputsHook(f func(attQKV []*graph.Node)) (restore func()) {
	old := carrierInputsHook
	carrierInputsHook = f
	return func() { carrierInputsHook = old }
}
