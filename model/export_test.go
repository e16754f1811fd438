package model

// SetFusedMasked switches the structured-mask attention path for tests and returns the restore function.
func SetFusedMasked(on bool) (restore func()) {
	old := useFusedMasked
	useFusedMasked = func(Config) bool { return on }
	return func() { useFusedMasked = old }
}

// ContractF32 exposes contractF32 to the external tests.
var ContractF32 = contractF32
