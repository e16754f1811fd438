package model

import (
	"github.com/gomlx/compute"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"
)

// Device memory is not Go memory: a tensor whose value lives only on the accelerator costs the Go heap a few
// bytes, so the garbage collector sees no reason to run and its device buffer stays allocated until it does.
// A training loop that replaces its parameters every step then grows on the device until it runs out of memory
// (measured on the H200: the paper model's training died after ~650 steps). Loops that replace state therefore
// donate the old buffers to the step (XLA reuses them for the outputs) and free per-step inputs and outputs
// explicitly, through Donate and Free.

// Donate returns x as an executable argument whose device buffer the execution may reuse: x is invalid afterwards
// and must be replaced by the step's output. A tensor with no device buffer yet is passed as is.
func Donate(backend compute.Backend, x *tensors.Tensor) any { return DonateOn(backend, x, 0) }

// DonateOn is Donate for an argument of device `device` (data-parallel steps pass one copy of the state per
// device; a tensor already held by another device is an error of the execution, not transferred).
func DonateOn(backend compute.Backend, x *tensors.Tensor, device int) any {
	if x == nil {
		return x
	}
	d, err := DonateTensorBuffer(x, backend, compute.DeviceNum(device))
	if err != nil {
		return x
	}
	return d
}

// Free releases the local and device storage of tensors no longer needed (nil entries are skipped).
func Free(ts ...*tensors.Tensor) {
	for _, t := range ts {
		if t != nil {
			_ = t.FinalizeAll()
		}
	}
}
