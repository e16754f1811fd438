package evaluate

import "github.com/gomlx/gomlx/core/tensors"

func tensorsFrom(d []float32, dims []int) *tensors.Tensor {
	return tensors.FromFlatDataAndDimensions(d, dims...)
}
