package train

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/gomlx/compute"
	"github.com/gomlx/compute/distributed"
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"

	"natsbench/model"
)

// Row is one training step's metrics, handed to the caller (who stores them as Parquet).
type Row struct {
	Step     int64   // optimizer step just completed (1-based)
	Loss     float64 // mean next-token NLL of the step's batch (natural log)
	Aux      float64 // the maskers' auxiliary loss (λ sparsity term); 0 without NAtS
	Density  float64 // mask density (NATS-SPEC.md §1.6), NaN without NAtS
	LR       float64 // learning rate used
	GradNorm float64 // global gradient norm before clipping
	Tokens   int64   // tokens processed in the step
	Seconds  float64 // wall time of the step
}

// Trainer holds the parameters and AdamW state of one model on one backend.
type Trainer struct {
	Cfg     Config
	Model   model.Config
	Masker  model.Masker
	Backend compute.Backend
	Params  *model.Params
	Step    int64 // optimizer steps done
	Seed    uint64

	m, v    []*tensors.Tensor
	acc     []*tensors.Tensor
	fused   *Exec
	gradEx  *Exec
	applyEx *Exec

	// Data parallelism (dp.go): dp devices (1: off); reps holds devices 1..dp-1's copies of the state (params ‖ m
	// ‖ v), made from device 0's tensors repOf; simulate runs the shards one after another on one device (tests).
	dp       int
	simulate bool
	mesh     *distributed.DeviceMesh
	reduceEx *Exec
	reps     [][]*tensors.Tensor
	repOf    []*tensors.Tensor
}

// New creates a trainer with freshly initialised parameters (deterministic from seed).
// With cfg.DataParallel = N > 1 it trains on the backend's first N devices (dp.go); more than the backend has is
// an error.
func New(backend compute.Backend, mcfg model.Config, masker model.Masker, cfg Config, seed uint64) (*Trainer, error) {
	return newWith(backend, mcfg, masker, cfg, seed, false)
}

// newWith is New; simulate (tests) runs a data-parallel configuration's shards one after another on one device.
func newWith(backend compute.Backend, mcfg model.Config, masker model.Masker, cfg Config, seed uint64, simulate bool) (*Trainer, error) {
	if err := mcfg.Validate(); err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if n, have := cfg.Devices(), backend.NumDevices(); n > have && !simulate {
		return nil, fmt.Errorf("train.data_parallel = %d: backend %s has %d device(s) (the pure-Go backend has one; on CUDA all "+
			"GPUs must be visible: check CUDA_VISIBLE_DEVICES and do not use the runner's -devices, which gives each run one GPU)",
			n, backend.Name(), have)
	}
	specs := model.Specs(mcfg, masker)
	t := &Trainer{Cfg: cfg, Model: mcfg, Masker: masker, Backend: backend, Seed: seed,
		Params: model.NewParams(specs, seed), dp: cfg.Devices(), simulate: simulate && cfg.Devices() > 1}
	t.m = zerosLike(specs)
	t.v = zerosLike(specs)
	return t, nil
}

func zerosLike(specs []model.Spec) []*tensors.Tensor {
	out := make([]*tensors.Tensor, len(specs))
	for i, s := range specs {
		out[i] = tensors.FromFlatDataAndDimensions(make([]float32, s.Size()), s.Dims...)
	}
	return out
}

// lossGraph builds the micro-batch loss: mean CE / accum + aux, and returns (objective, ce, aux, density). With
// data parallelism, tokens and targets are the rows of shard `shard` (a scalar input), the noise is the
// shard's rows of the whole batch's, and the objective is CE / accum + dp·aux (dp.go).
func (t *Trainer) lossGraph(params []*Node, tokens, targets, seed, shard *Node) (obj, ce, aux, density *Node) {
	g := tokens.Graph()
	specs := t.Params.Specs
	nodes := model.NodesFrom(t.Model, specs, params)
	rng := RNGStateFromSeedForGraph(g, 0)
	rng = seed // the step's RNG state comes from the host: deterministic from (seed, step, micro-batch)
	uniform := func(dims []int) *Node {
		var u *Node
		if t.dp > 1 {
			rng, u = shardUniform(rng, dims, t.dp, shard)
			return u
		}
		rng, u = RandomUniform(rng, shapes.Make(dtypes.Float32, dims...))
		return u
	}
	out := model.Forward(t.Model, t.Masker, nodes, tokens, true, uniform)
	ce, _ = model.CrossEntropy(out.Logits, targets)
	auxObj := out.Aux
	if t.dp > 1 {
		auxObj = MulScalar(auxObj, float64(t.dp))
	}
	obj = Add(DivScalar(ce, float64(t.Cfg.GradAccum)), auxObj)
	density = out.Density
	if density == nil {
		density = Scalar(g, dtypes.Float32, math.NaN())
	}
	return obj, ce, out.Aux, density
}

// adamw returns the updated parameter and moments.
func (t *Trainer) adamw(spec model.Spec, p, m, v, grad, lr, bc1, bc2 *Node) (np, nm, nv *Node) {
	b1, b2 := t.Cfg.Beta1, t.Cfg.Beta2
	nm = Add(MulScalar(m, b1), MulScalar(grad, 1-b1))
	nv = Add(MulScalar(v, b2), MulScalar(Square(grad), 1-b2))
	upd := Div(Div(nm, bc1), AddScalar(Sqrt(Div(nv, bc2)), 1e-8))
	np = p
	if spec.Decay && t.Cfg.WeightDecay > 0 {
		np = Sub(np, Mul(MulScalar(lr, t.Cfg.WeightDecay), np))
	}
	np = Sub(np, Mul(lr, upd))
	return
}

// apply clips the gradients by global norm and applies AdamW. Inputs: params, m, v, grads; lr, step scalars.
func (t *Trainer) apply(params, ms, vs, grads []*Node, lr, step *Node) (np, nm, nv []*Node, gnorm *Node) {
	g := lr.Graph()
	sq := ScalarZero(g, dtypes.Float32)
	for _, gr := range grads {
		sq = Add(sq, ReduceAllSum(Square(gr)))
	}
	gnorm = Sqrt(sq)
	scale := ScalarOne(g, dtypes.Float32)
	if t.Cfg.GradClip > 0 {
		scale = Min(scale, Div(Scalar(g, dtypes.Float32, t.Cfg.GradClip), AddScalar(gnorm, 1e-6)))
	}
	bc1 := OneMinus(Pow(Scalar(g, dtypes.Float32, t.Cfg.Beta1), step))
	bc2 := OneMinus(Pow(Scalar(g, dtypes.Float32, t.Cfg.Beta2), step))
	for i, s := range t.Params.Specs {
		p, m, v := t.adamw(s, params[i], ms[i], vs[i], Mul(grads[i], scale), lr, bc1, bc2)
		np, nm, nv = append(np, p), append(nm, m), append(nv, v)
	}
	return
}

func (t *Trainer) build() error {
	if t.dp > 1 {
		return t.buildDP()
	}
	n := len(t.Params.Specs)
	var err error
	if t.Cfg.GradAccum == 1 {
		// inputs: params(n) m(n) v(n) tokens targets rng lr step
		t.fused, err = NewExec(t.Backend, func(in []*Node) []*Node {
			params, ms, vs := in[:n], in[n:2*n], in[2*n:3*n]
			tokens, targets, rng, lr, step := in[3*n], in[3*n+1], in[3*n+2], in[3*n+3], in[3*n+4]
			obj, ce, aux, dens := t.lossGraph(params, tokens, targets, rng, nil)
			grads := Gradient(obj, params...)
			np, nm, nv, gnorm := t.apply(params, ms, vs, grads, lr, step)
			out := append(append(append([]*Node{}, np...), nm...), nv...)
			return append(out, ce, aux, dens, gnorm)
		})
		return err
	}
	// Accumulation: gradExec(params, acc, tokens, targets, rng) → acc', ce, aux, dens;
	// applyExec(params, m, v, acc, lr, step) → params', m', v', gnorm.
	t.gradEx, err = NewExec(t.Backend, func(in []*Node) []*Node {
		params, acc := in[:n], in[n:2*n]
		return t.accumulate(params, acc, in[2*n], in[2*n+1], in[2*n+2], nil)
	})
	if err != nil {
		return err
	}
	t.applyEx, err = NewExec(t.Backend, func(in []*Node) []*Node {
		params, ms, vs, acc := in[:n], in[n:2*n], in[2*n:3*n], in[3*n:4*n]
		lr, step := in[4*n], in[4*n+1]
		np, nm, nv, gnorm := t.apply(params, ms, vs, acc, lr, step)
		out := append(append(append([]*Node{}, np...), nm...), nv...)
		return append(out, gnorm)
	})
	return err
}

// rngFor returns the RNG state for (seed, step, micro-batch): resuming at a step reproduces its noise.
func (t *Trainer) rngFor(step int64, micro int) (*tensors.Tensor, error) {
	return RNGStateFromSeed(int64(mix(t.Seed, uint64(step)*1024+uint64(micro))))
}

func mix(a, b uint64) uint64 {
	z := a*0x9e3779b97f4a7c15 + b + 0x632be59bd9b4e019
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return (z ^ (z >> 31)) & (1<<62 - 1)
}

func (t *Trainer) donate(ts []*tensors.Tensor) []any {
	out := make([]any, len(ts))
	for i, x := range ts {
		out[i] = model.Donate(t.Backend, x)
	}
	return out
}

func asArgs(ts []*tensors.Tensor) []any {
	out := make([]any, len(ts))
	for i, x := range ts {
		out[i] = x
	}
	return out
}

// TrainStep runs one optimizer step on micro-batches: tokens and targets are [grad_accum][batch·seq] int32
// (row-major [batch, seq]). A non-finite loss is an error naming the step.
func (t *Trainer) TrainStep(tokens, targets [][]int32) (Row, error) {
	if t.fused == nil && t.gradEx == nil {
		if err := t.build(); err != nil {
			return Row{}, err
		}
	}
	if len(tokens) != t.Cfg.GradAccum || len(targets) != t.Cfg.GradAccum {
		return Row{}, fmt.Errorf("train: got %d micro-batches, want grad_accum = %d", len(tokens), t.Cfg.GradAccum)
	}
	start := time.Now()
	b, s := t.Cfg.BatchSize, t.Cfg.SeqLen
	n := len(t.Params.Specs)
	lr := float32(t.Cfg.LRAt(int(t.Step)))
	stepT := float32(t.Step + 1)
	row := Row{Step: t.Step + 1, LR: float64(lr), Tokens: int64(b * s * t.Cfg.GradAccum)}
	var ceSum, auxSum, densSum float64
	if t.dp > 1 {
		if err := t.trainStepDP(tokens, targets, lr, stepT, &row); err != nil {
			return row, err
		}
		ceSum, auxSum, densSum = row.Loss, row.Aux, row.Density
	} else if t.fused != nil {
		rng, err := t.rngFor(t.Step, 0)
		if err != nil {
			return row, err
		}
		tok, tgt := tensors.FromFlatDataAndDimensions(tokens[0], b, s), tensors.FromFlatDataAndDimensions(targets[0], b, s)
		args := append(append(append(t.donate(t.Params.Values), t.donate(t.m)...), t.donate(t.v)...), tok, tgt, rng, lr, stepT)
		out, err := t.fused.Exec(args...)
		model.Free(tok, tgt, rng)
		if err != nil {
			return row, fmt.Errorf("train step %d: %w", t.Step+1, err)
		}
		copy(t.Params.Values, out[:n])
		copy(t.m, out[n:2*n])
		copy(t.v, out[2*n:3*n])
		ceSum, auxSum, densSum = scalar(out[3*n]), scalar(out[3*n+1]), scalar(out[3*n+2])
		row.GradNorm = scalar(out[3*n+3])
		model.Free(out[3*n:]...)
	} else {
		if t.acc == nil {
			t.acc = zerosLike(t.Params.Specs)
		}
		acc := zerosLike(t.Params.Specs)
		for k := 0; k < t.Cfg.GradAccum; k++ {
			rng, err := t.rngFor(t.Step, k)
			if err != nil {
				return row, err
			}
			tok, tgt := tensors.FromFlatDataAndDimensions(tokens[k], b, s), tensors.FromFlatDataAndDimensions(targets[k], b, s)
			// The parameters are read again by the next micro-batch and the update: not donated.
			args := append(append(asArgs(t.Params.Values), t.donate(acc)...), tok, tgt, rng)
			out, err := t.gradEx.Exec(args...)
			model.Free(tok, tgt, rng)
			if err != nil {
				return row, fmt.Errorf("train step %d (micro-batch %d): %w", t.Step+1, k, err)
			}
			acc = out[:n]
			ceSum += scalar(out[n]) / float64(t.Cfg.GradAccum)
			auxSum += scalar(out[n+1])
			densSum += scalar(out[n+2]) / float64(t.Cfg.GradAccum)
			model.Free(out[n:]...)
		}
		args := append(append(append(append(t.donate(t.Params.Values), t.donate(t.m)...), t.donate(t.v)...), t.donate(acc)...), lr, stepT)
		out, err := t.applyEx.Exec(args...)
		if err != nil {
			return row, fmt.Errorf("train step %d (update): %w", t.Step+1, err)
		}
		copy(t.Params.Values, out[:n])
		copy(t.m, out[n:2*n])
		copy(t.v, out[2*n:3*n])
		row.GradNorm = scalar(out[3*n])
		model.Free(out[3*n:]...)
	}
	row.Loss, row.Aux, row.Density = ceSum, auxSum, densSum
	row.Seconds = time.Since(start).Seconds()
	if math.IsNaN(row.Loss) || math.IsInf(row.Loss, 0) || math.IsNaN(row.GradNorm) {
		return row, fmt.Errorf("train step %d: loss is %v (grad norm %v): training diverged; lower train.lr or check the data", row.Step, row.Loss, row.GradNorm)
	}
	t.Step++
	return row, nil
}

func scalar(x *tensors.Tensor) float64 {
	switch v := x.Value().(type) {
	case float32:
		return float64(v)
	case float64:
		return v
	}
	return math.NaN()
}

// Checkpoint files: ckpt/step-<N>.ckpt holds parameters ("p/<name>") and AdamW moments ("m/…", "v/…").

// Save writes a checkpoint of the current step into dir atomically and keeps the newest `keep` files.
func (t *Trainer) Save(dir string, keep int) error {
	names := make([]string, 0, 3*len(t.Params.Specs))
	vals := make([]*tensors.Tensor, 0, cap(names))
	for i, s := range t.Params.Specs {
		names = append(names, "p/"+s.Name, "m/"+s.Name, "v/"+s.Name)
		vals = append(vals, t.Params.Values[i], t.m[i], t.v[i])
	}
	path := filepath.Join(dir, fmt.Sprintf("step-%09d.ckpt", t.Step))
	if err := model.SaveTensors(path, t.Step, map[string]string{"seed": fmt.Sprint(t.Seed)}, names, vals); err != nil {
		return err
	}
	files, _ := filepath.Glob(filepath.Join(dir, "step-*.ckpt"))
	sort.Strings(files)
	for len(files) > keep && keep > 0 {
		os.Remove(files[0])
		files = files[1:]
	}
	return nil
}

// ErrNoCheckpoint is returned by Restore when dir holds no checkpoint.
var ErrNoCheckpoint = errors.New("no checkpoint")

// LatestCheckpoint returns the newest checkpoint file in dir.
func LatestCheckpoint(dir string) (string, error) {
	files, _ := filepath.Glob(filepath.Join(dir, "step-*.ckpt"))
	if len(files) == 0 {
		return "", fmt.Errorf("%s: %w", dir, ErrNoCheckpoint)
	}
	sort.Strings(files)
	return files[len(files)-1], nil
}

// Restore loads the newest checkpoint of dir (parameters, moments and step).
func (t *Trainer) Restore(dir string) error {
	path, err := LatestCheckpoint(dir)
	if err != nil {
		return err
	}
	step, _, names, vals, err := model.LoadTensors(path)
	if err != nil {
		return err
	}
	var pn, mn, vn []string
	var pv, mv, vv []*tensors.Tensor
	for i, n := range names {
		switch {
		case strings.HasPrefix(n, "p/"):
			pn, pv = append(pn, n[2:]), append(pv, vals[i])
		case strings.HasPrefix(n, "m/"):
			mn, mv = append(mn, n[2:]), append(mv, vals[i])
		case strings.HasPrefix(n, "v/"):
			vn, vv = append(vn, n[2:]), append(vv, vals[i])
		}
	}
	if err := t.Params.Assign(pn, pv, path); err != nil {
		return err
	}
	mp := &model.Params{Specs: t.Params.Specs, Values: t.m}
	if err := assignInto(mp, mn, mv, path); err != nil {
		return err
	}
	vp := &model.Params{Specs: t.Params.Specs, Values: t.v}
	if err := assignInto(vp, vn, vv, path); err != nil {
		return err
	}
	t.Step = step
	return nil
}

func assignInto(p *model.Params, names []string, vals []*tensors.Tensor, src string) error {
	idx := map[string]*tensors.Tensor{}
	for i, n := range names {
		idx[n] = vals[i]
	}
	for i, s := range p.Specs {
		v, ok := idx[s.Name]
		if !ok {
			return fmt.Errorf("%s: optimizer state for %q missing", src, s.Name)
		}
		p.Values[i] = v
	}
	return nil
}

// accumulate is the gradient-accumulation graph: acc + ∂obj/∂params for one micro-batch (of shard `shard` in a
// data-parallel step; nil otherwise), then ce, aux and the density.
func (t *Trainer) accumulate(params, acc []*Node, tokens, targets, rng, shard *Node) []*Node {
	obj, ce, aux, dens := t.lossGraph(params, tokens, targets, rng, shard)
	grads := Gradient(obj, params...)
	out := make([]*Node, 0, len(params)+3)
	for i := range grads {
		out = append(out, Add(acc[i], grads[i]))
	}
	return append(out, ce, aux, dens)
}
