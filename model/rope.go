package model

import "math"

// RopeInvFreq returns the RoPE inverse frequencies for head dimension hd, with Llama-3 scaling when scaling is
// "llama3" (factor 8, low_freq_factor 1, high_freq_factor 4, original_max_position 8192; HF
// `_compute_llama3_parameters`), computed in float64.
func RopeInvFreq(hd int, theta float64, scaling string) []float64 {
	half := hd / 2
	inv := make([]float64, half)
	for i := range inv {
		inv[i] = 1 / math.Pow(theta, float64(2*i)/float64(hd))
	}
	if scaling != "llama3" {
		return inv
	}
	const factor, low, high, orig = 8.0, 1.0, 4.0, 8192.0
	lowWave, highWave := orig/low, orig/high
	for i, f := range inv {
		wave := 2 * math.Pi / f
		switch {
		case wave < highWave:
		case wave > lowWave:
			inv[i] = f / factor
		default:
			smooth := (orig/wave - low) / (high - low)
			inv[i] = (1-smooth)*f/factor + smooth*f
		}
	}
	return inv
}

// RopeTables returns cos and sin tables of shape [n, hd/2] (row-major) for positions 0..n-1.
func RopeTables(n, hd int, theta float64, scaling string) (cos, sin []float32) {
	inv := RopeInvFreq(hd, theta, scaling)
	half := hd / 2
	cos = make([]float32, n*half)
	sin = make([]float32, n*half)
	for p := 0; p < n; p++ {
		for i, f := range inv {
			a := float64(p) * f
			cos[p*half+i] = float32(math.Cos(a))
			sin[p*half+i] = float32(math.Sin(a))
		}
	}
	return cos, sin
}
