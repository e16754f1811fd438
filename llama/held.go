package llama

import (
	"fmt"
	"sync"

	"github.com/gomlx/compute"
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/dtypes/bfloat16"
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"
)

// Weights on the device.
//
// Model.Params holds float32 on the host. A graph fed those tensors keeps them on the device after the first call
// (GoMLX caches a tensor's device buffer) and, with Config.DType "bfloat16", casts every weight in the graph: at run
// time the device holds the float32 weights plus a bf16 copy (the cast is recomputed each call). HoldWeights
// instead casts once, on the host, so the device only ever holds the weights in the compute dtype; WeightsFrom
// then uses them as they are.

// WeightsDTypes are the dtypes weights can be held in on the device.
var WeightsDTypes = []string{"float32", "bfloat16"}

// weightsDType returns the GoMLX dtype of a held-weights dtype name.
func weightsDType(name string) (dtypes.DType, error) {
	switch name {
	case "float32":
		return dtypes.Float32, nil
	case "bfloat16":
		return dtypes.BFloat16, nil
	}
	return dtypes.InvalidDType, fmt.Errorf("weights dtype %q: want \"float32\" or \"bfloat16\"", name)
}

// HoldWeights returns m's parameters (Specs order) as the tensors to feed a graph, held in dtype ("float32" or
// "bfloat16"). A parameter already in dtype is returned as it is (shared, e.g. Params.Values for "float32");
// float32 parameters held in bfloat16 are rounded on the host, in parallel, to the nearest bf16 (ties to even:
// the rounding of XLA's convert and of the pure-Go backend's ConvertDType, so the held weights are bit for bit
// what WeightsFrom's in-graph cast computes). The new tensors are uploaded on their first use and stay on the
// device; m.Params is not changed (host memory then holds both: 6 bytes per parameter).
func HoldWeights(m *Model, dtype string) ([]*tensors.Tensor, error) {
	dt, err := weightsDType(dtype)
	if err != nil {
		return nil, err
	}
	for i, v := range m.Params.Values { // every dtype checked before any conversion starts
		if v.DType() != dt && (v.DType() != dtypes.Float32 || dt != dtypes.BFloat16) {
			return nil, fmt.Errorf("hold weights: %s is %s, cannot hold it in %s", m.Params.Specs[i].Name, v.DType(), dtype)
		}
	}
	out := make([]*tensors.Tensor, len(m.Params.Values))
	errs := make([]error, len(out))
	var wg sync.WaitGroup
	for i, v := range m.Params.Values {
		if v.DType() == dt {
			out[i] = v
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := tensors.ConstFlatData(v, func(src []float32) {
				dst := make([]bfloat16.BFloat16, len(src))
				for k, x := range src {
					dst[k] = bfloat16.FromFloat32(x)
				}
				out[i] = tensors.FromFlatDataAndDimensions(dst, v.Shape().Dimensions...)
			})
			if err != nil {
				errs[i] = fmt.Errorf("hold weights: %s: %w", m.Params.Specs[i].Name, err)
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// NewRandomOnDevice returns a model of architecture c whose parameters are generated on the backend's device,
// already in dtype ("float32" or "bfloat16"), with no host copy: normal(0, 0.02) for matrices (Specs' Std, in
// float32 then rounded), ones for gains, from seed (each parameter its own stream; not NewRandom's numbers). It is
// meant for memory and speed probes of large architectures without their checkpoint: feed Params.Values to graphs
// (HoldWeights passes them through); host reads (Model.Weight, Save, ToHalfLayout, Params.Flat) need float32
// values and copy them back from the device. Parameters of the same shape share one compiled generator.
func NewRandomOnDevice(backend compute.Backend, c Config, dtype string, seed uint64) (*Model, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	dt, err := weightsDType(dtype)
	if err != nil {
		return nil, err
	}
	specs := Specs(c)
	p := emptyParams(specs)
	gens := map[string]*Exec{}
	for i, s := range specs {
		key := fmt.Sprint(s.Dims, s.Ones, s.Std)
		gen := gens[key]
		if gen == nil {
			s := s
			gen, err = NewExec(backend, func(rng *Node) *Node {
				if s.Ones || s.Std == 0 {
					v := Ones(rng.Graph(), shapes.Make(dt, s.Dims...))
					if !s.Ones {
						v = ZerosLike(v)
					}
					return v
				}
				_, v := RandomNormal(rng, shapes.Make(dtypes.Float32, s.Dims...))
				return ConvertDType(MulScalar(v, s.Std), dt)
			})
			if err != nil {
				return nil, fmt.Errorf("random %s weights: %w", dtype, err)
			}
			gens[key] = gen
		}
		rng, err := RNGStateFromSeed(int64((seed*1_000_003 + uint64(i)) & (1<<62 - 1)))
		if err != nil {
			return nil, err
		}
		out, err := gen.Exec(rng)
		if err != nil {
			return nil, fmt.Errorf("random %s weights: %s %v: %w", dtype, s.Name, s.Dims, err)
		}
		p.Values[i] = out[0]
	}
	return &Model{Config: c, Params: p, Source: "random on device (" + dtype + ")"}, nil
}
