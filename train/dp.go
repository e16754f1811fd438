package train

import (
	"fmt"
	"os"
	"slices"

	"github.com/gomlx/compute"
	"github.com/gomlx/compute/distributed"
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"

	"natsbench/model"
)

// Data-parallel training (train.data_parallel = N > 1): one run over N devices of the backend, as one SPMD program
// over a 1-D device mesh ("data", GoMLX's Exec.SPMD; XLA with NCCL on CUDA).
//
//   - Device d gets rows [d·b/N, (d+1)·b/N) of every micro-batch of b sequences (ShardRows) and computes the loss
//     and gradients of its shard. The objective of a shard is ce/grad_accum + N·aux: the cross-entropy is a mean
//     over the batch's tokens but the NAtS sparsity term is a sum over its rows, so the mean over devices of the
//     shards' gradients (meanGrads: an all-reduce sum divided by N) is the gradient of the whole batch.
//   - The Gumbel noise of a shard is the noise the one-device step draws for the same rows: every device draws
//     the whole batch's noise from the step's RNG state (the same draw as one device) and keeps its rows
//     (shardUniform). Drawing is cheap next to the step; the noise, like the result, is then independent of N.
//   - With grad_accum > 1 every device sums its micro-batches' gradients locally and the gradients are
//     all-reduced once per optimizer step, in the update program.
//   - Every device then clips and applies AdamW to the same averaged gradients, so parameters and moments stay
//     replicated: device 0's copy is Trainer.Params (and the moments); the other devices' copies are made from
//     it when the trainer first steps or after it changed (Restore), so checkpoints are device 0's state and have
//     one format for any number of devices.
//   - The row's loss and density are the devices' means and its aux the devices' sum, reduced here (they come
//     back per device); the gradient norm is computed on the averaged gradients (the same on every device).
//
// The pure-Go backend has one device and no collectives, so on CPU the same step is run as a simulation
// (Trainer.simulate, tests only): the per-shard program runs once per shard on device 0, a small program sums
// and divides the shards' gradients through the same meanGrads, and the one-device update follows. Only the
// all-reduce itself and GoMLX's per-device argument layout are left to the GPU test (dp_gpu_test.go).

// ShardRows splits a row-major [rows, seq] batch into n contiguous shards of rows/n rows each (sub-slices of
// flat, not copies). rows must divide by n.
func ShardRows(flat []int32, rows, n int) ([][]int32, error) {
	if n < 1 || rows%n != 0 || len(flat)%rows != 0 {
		return nil, fmt.Errorf("train: cannot split %d values of %d rows over %d devices", len(flat), rows, n)
	}
	per := len(flat) / n
	out := make([][]int32, n)
	for d := range out {
		out[d] = flat[d*per : (d+1)*per : (d+1)*per]
	}
	return out, nil
}

// shardUniform draws uniform noise for the whole batch (dims[0]·n rows: the draw a one-device step makes from the
// same RNG state, so the state advances the same way) and returns rows [shard·dims[0], (shard+1)·dims[0]).
// Axis 0 of dims is the batch axis (model.AttnSite.Uniform).
func shardUniform(rng *Node, dims []int, n int, shard *Node) (next, u *Node) {
	full := slices.Clone(dims)
	full[0] *= n
	next, all := RandomUniform(rng, shapes.Make(dtypes.Float32, full...))
	// [n, rows, …] and the shard's block by a gather (the pure-Go backend has no DynamicSlice).
	blocks := Reshape(all, append([]int{n}, dims...)...)
	return next, Gather(blocks, Reshape(ConvertDType(shard, dtypes.Int32), 1))
}

// meanGrads returns the mean over n devices of each device's gradients; sum adds a list of values across the
// devices (an all-reduce in the SPMD program, the sum of the shards' gradients in the simulation).
func meanGrads(grads []*Node, n int, sum func([]*Node) []*Node) []*Node {
	s := sum(grads)
	out := make([]*Node, len(s))
	for i, x := range s {
		out[i] = DivScalar(x, float64(n))
	}
	return out
}

// allReduceSum sums values across the devices of the SPMD program's mesh.
func allReduceSum(x []*Node) []*Node {
	return x[0].Graph().Distributed().AllReduce(x, compute.ReduceOpSum)
}

// buildDP builds the data-parallel programs. SPMD, grad_accum = 1: fused(params, m, v, tokens, targets, rng,
// shard, lr, step) → params', m', v', ce, aux, density, gnorm (one all-reduce). SPMD, grad_accum > 1:
// gradEx(params, acc, tokens, targets, rng, shard) → acc', ce, aux, density (local) and applyEx(params, m, v,
// acc, lr, step) → params', m', v', gnorm (all-reduce, then the update). Simulation: gradEx as above, reduceEx
// (acc of every shard) → mean, and the one-device applyEx.
func (t *Trainer) buildDP() error {
	n := len(t.Params.Specs)
	newExec := func(fn func([]*Node) []*Node) (*Exec, error) {
		e, err := NewExec(t.Backend, fn)
		if err != nil || t.simulate {
			return e, err
		}
		return e.SPMD(t.mesh), nil
	}
	if !t.simulate {
		mesh, err := distributed.NewDeviceMesh([]int{t.dp}, []string{"data"})
		if err != nil {
			return err
		}
		t.mesh = mesh
	}
	var err error
	if t.Cfg.GradAccum == 1 && !t.simulate {
		t.fused, err = newExec(func(in []*Node) []*Node {
			params, ms, vs := in[:n], in[n:2*n], in[2*n:3*n]
			tokens, targets, rng, shard, lr, step := in[3*n], in[3*n+1], in[3*n+2], in[3*n+3], in[3*n+4], in[3*n+5]
			obj, ce, aux, dens := t.lossGraph(params, tokens, targets, rng, shard)
			grads := meanGrads(Gradient(obj, params...), t.dp, allReduceSum)
			np, nm, nv, gnorm := t.apply(params, ms, vs, grads, lr, step)
			out := append(append(append([]*Node{}, np...), nm...), nv...)
			return append(out, ce, aux, dens, gnorm)
		})
		return err
	}
	t.gradEx, err = newExec(func(in []*Node) []*Node {
		return t.accumulate(in[:n], in[n:2*n], in[2*n], in[2*n+1], in[2*n+2], in[2*n+3])
	})
	if err != nil {
		return err
	}
	if t.simulate {
		t.reduceEx, err = NewExec(t.Backend, func(in []*Node) []*Node {
			return meanGrads(in[:n], t.dp, func(first []*Node) []*Node {
				out := slices.Clone(first)
				for d := 1; d < t.dp; d++ {
					for i := range out {
						out[i] = Add(out[i], in[d*n+i])
					}
				}
				return out
			})
		})
		if err != nil {
			return err
		}
	}
	t.applyEx, err = newExec(func(in []*Node) []*Node {
		params, ms, vs, acc := in[:n], in[n:2*n], in[2*n:3*n], in[3*n:4*n]
		lr, step := in[4*n], in[4*n+1]
		if !t.simulate {
			acc = meanGrads(acc, t.dp, allReduceSum)
		}
		np, nm, nv, gnorm := t.apply(params, ms, vs, acc, lr, step)
		out := append(append(append([]*Node{}, np...), nm...), nv...)
		return append(out, gnorm)
	})
	return err
}

// runShards executes ex on every device. SPMD: one call whose arguments are the devices' lists one after the
// other (device 0's, then device 1's, …: graph.Exec's layout for SPMD) and whose outputs come back in the same
// order. Simulation: one call per shard, on device 0.
func (t *Trainer) runShards(ex *Exec, args func(d int) []any) ([][]*tensors.Tensor, error) {
	outs := make([][]*tensors.Tensor, t.dp)
	if t.simulate {
		for d := range outs {
			o, err := ex.Exec(args(d)...)
			if err != nil {
				return nil, err
			}
			outs[d] = o
		}
		return outs, nil
	}
	var all []any
	for d := 0; d < t.dp; d++ {
		all = append(all, args(d)...)
	}
	out, err := ex.Exec(all...)
	if err != nil {
		return nil, err
	}
	if len(out)%t.dp != 0 {
		return nil, fmt.Errorf("train: %d outputs from %d devices", len(out), t.dp)
	}
	k := len(out) / t.dp
	for d := range outs {
		outs[d] = out[d*k : (d+1)*k : (d+1)*k]
	}
	return outs, nil
}

// state returns device d's parameters, first moments and second moments, one after the other (3·n tensors).
// In the simulation every shard reads device 0's.
func (t *Trainer) state(d int) []*tensors.Tensor {
	if d == 0 || t.simulate {
		return append(append(append([]*tensors.Tensor{}, t.Params.Values...), t.m...), t.v...)
	}
	return t.reps[d-1]
}

func (t *Trainer) setState(d int, s []*tensors.Tensor) {
	n := len(t.Params.Specs)
	if d == 0 {
		copy(t.Params.Values, s[:n])
		copy(t.m, s[n:2*n])
		copy(t.v, s[2*n:3*n])
		return
	}
	t.reps[d-1] = slices.Clone(s[:3*n])
}

// ensureReplicas copies device 0's state to the other devices when they have no copy of the current one (the
// first step, or after Restore or anything else replaced the parameters or moments).
func (t *Trainer) ensureReplicas() error {
	if t.dp == 1 || t.simulate {
		return nil
	}
	cur := t.state(0)
	if t.reps != nil && slices.Equal(cur, t.repOf) {
		return nil
	}
	for _, r := range t.reps {
		model.Free(r...)
	}
	t.reps = make([][]*tensors.Tensor, t.dp-1)
	for d := 1; d < t.dp; d++ {
		rep := make([]*tensors.Tensor, len(cur))
		for i, x := range cur {
			c, err := x.OnDeviceClone(t.Backend, compute.DeviceNum(d))
			if err != nil {
				return fmt.Errorf("train: copying the state to device %d: %w", d, err)
			}
			rep[i] = c
		}
		t.reps[d-1] = rep
	}
	t.repOf = cur
	return nil
}

// dpDonate reports whether data-parallel steps donate their state buffers (NATSBENCH_DP_DONATE=0 turns it off:
// the old state is then freed after each step instead, at the cost of holding two copies during the step).
func dpDonate() bool { return os.Getenv("NATSBENCH_DP_DONATE") != "0" }

// trainStepDP runs one data-parallel optimizer step (TrainStep with data_parallel > 1).
func (t *Trainer) trainStepDP(tokens, targets [][]int32, lr, stepT float32, row *Row) error {
	if err := t.ensureReplicas(); err != nil {
		return err
	}
	n := len(t.Params.Specs)
	b, s := t.Cfg.BatchSize/t.dp, t.Cfg.SeqLen
	accum := float64(t.Cfg.GradAccum)
	donate := dpDonate() || t.simulate
	var stale []*tensors.Tensor // state given to a step without donation: freed after it
	give := func(d int, ts []*tensors.Tensor) []any {
		out := make([]any, len(ts))
		for i, x := range ts {
			if donate {
				out[i] = model.DonateOn(t.Backend, x, t.device(d))
			} else {
				out[i] = x
				stale = append(stale, x)
			}
		}
		return out
	}
	var ceSum, auxSum, densSum float64
	addScalars := func(outs [][]*tensors.Tensor, at int) {
		for _, o := range outs {
			ceSum += scalar(o[at]) / float64(t.dp) / accum
			auxSum += scalar(o[at+1])
			densSum += scalar(o[at+2]) / float64(t.dp) / accum
			model.Free(o[at : at+3]...)
		}
	}
	// inputs returns each device's tokens, targets and RNG state for micro-batch k (freed by the caller).
	inputs := func(k int) (tok, tgt, rng []*tensors.Tensor, err error) {
		shTok, err := ShardRows(tokens[k], t.Cfg.BatchSize, t.dp)
		if err != nil {
			return nil, nil, nil, err
		}
		shTgt, err := ShardRows(targets[k], t.Cfg.BatchSize, t.dp)
		if err != nil {
			return nil, nil, nil, err
		}
		for d := 0; d < t.dp; d++ {
			r, err := t.rngFor(t.Step, k) // one tensor per device: a tensor lives on one device
			if err != nil {
				return nil, nil, nil, err
			}
			tok = append(tok, tensors.FromFlatDataAndDimensions(shTok[d], b, s))
			tgt = append(tgt, tensors.FromFlatDataAndDimensions(shTgt[d], b, s))
			rng = append(rng, r)
		}
		return
	}
	if t.fused != nil {
		tok, tgt, rng, err := inputs(0)
		if err != nil {
			return err
		}
		outs, err := t.runShards(t.fused, func(d int) []any {
			return append(give(d, t.state(d)), tok[d], tgt[d], rng[d], int32(d), lr, stepT)
		})
		model.Free(append(append(tok, tgt...), rng...)...)
		if err != nil {
			return fmt.Errorf("train step %d (%d devices): %w", t.Step+1, t.dp, err)
		}
		model.Free(stale...)
		for d, o := range outs {
			t.setState(d, o[:3*n])
		}
		addScalars(outs, 3*n)
		row.GradNorm = scalar(outs[0][3*n+3])
		for _, o := range outs {
			model.Free(o[3*n+3])
		}
	} else {
		accs := make([][]*tensors.Tensor, t.dp)
		for d := range accs {
			accs[d] = zerosLike(t.Params.Specs)
		}
		for k := 0; k < t.Cfg.GradAccum; k++ {
			tok, tgt, rng, err := inputs(k)
			if err != nil {
				return err
			}
			// The parameters are read again by the next micro-batch and the update: not donated.
			outs, err := t.runShards(t.gradEx, func(d int) []any {
				return append(append(asArgs(t.state(d)[:n]), give(d, accs[d])...), tok[d], tgt[d], rng[d], int32(d))
			})
			model.Free(append(append(tok, tgt...), rng...)...)
			if err != nil {
				return fmt.Errorf("train step %d (micro-batch %d, %d devices): %w", t.Step+1, k, t.dp, err)
			}
			model.Free(stale...)
			stale = nil
			for d, o := range outs {
				accs[d] = o[:n]
			}
			addScalars(outs, n)
		}
		if t.simulate {
			var in []any
			for d := range accs {
				in = append(in, give(0, accs[d])...)
			}
			mean, err := t.reduceEx.Exec(in...)
			if err != nil {
				return fmt.Errorf("train step %d (gradient mean): %w", t.Step+1, err)
			}
			out, err := t.applyEx.Exec(append(append(give(0, t.state(0)), give(0, mean)...), lr, stepT)...)
			if err != nil {
				return fmt.Errorf("train step %d (update): %w", t.Step+1, err)
			}
			t.setState(0, out[:3*n])
			row.GradNorm = scalar(out[3*n])
			model.Free(out[3*n])
		} else {
			outs, err := t.runShards(t.applyEx, func(d int) []any {
				return append(append(give(d, t.state(d)), give(d, accs[d])...), lr, stepT)
			})
			if err != nil {
				return fmt.Errorf("train step %d (update, %d devices): %w", t.Step+1, t.dp, err)
			}
			model.Free(stale...)
			for d, o := range outs {
				t.setState(d, o[:3*n])
			}
			row.GradNorm = scalar(outs[0][3*n])
			for _, o := range outs {
				model.Free(o[3*n])
			}
		}
	}
	if !t.simulate {
		t.repOf = t.state(0)
	}
	row.Loss, row.Aux, row.Density = ceSum, auxSum, densSum
	return nil
}

// device returns the device number that shard d runs on (0 for every shard in the simulation).
func (t *Trainer) device(d int) int {
	if t.simulate {
		return 0
	}
	return d
}
