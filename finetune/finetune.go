// Package finetune trains NAtS scorers on a frozen pretrained Llama-family model by self-distillation
// (NATS-SPEC.md §3): every pretrained weight is frozen; one bias-free scorer per layer over the KV heads is the
// only trainable module; the teacher is the same model with full attention, the student the model with the NAtS
// mask (straight-through Gumbel sampling); the loss is the MSE of the final hidden states (after the final
// RMSNorm) on answer tokens, plus the λ sparsity term; AdamW with the warm-up/flat/decay schedule of §3.4.
//
// Choices: AdamW weight decay is 0.01, PyTorch's default, which is what the official script ends up using (it
// never passes its configured 0.1); no gradient clipping (the official trainer ignores grad_clip); the scorer
// starts from PyTorch's default Linear initialisation in distribution (uniform ±1/√d has variance 1/(3d): we draw
// normal with that variance).
//
// Memory (memory.go, cmd/memest): the frozen weights are held on the device in Config.WeightsDType (default: the
// compute dtype, cast once in New, so no cast copy exists), and Config.Checkpoint recomputes each student layer in
// the backward pass instead of keeping its activations (same numbers; checkpoint_test.go, held_test.go). Probe runs
// one real step of a random-weight model of a given architecture and reports the device memory it used.
package finetune

import (
	"fmt"
	"math"
	"time"

	"github.com/gomlx/compute"
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"

	"natsbench/llama"
	"natsbench/model"
	"natsbench/nats"
)

// Config holds the trainer's settings (the finetune kind fills it from its [finetune] table).
type Config struct {
	Steps       int     `toml:"steps"`        // optimizer steps (T); the paper's runs: 7000
	LR          float64 `toml:"lr"`           // peak learning rate (2e-3)
	Beta1       float64 `toml:"beta1"`        // 0.9
	Beta2       float64 `toml:"beta2"`        // 0.95
	WeightDecay float64 `toml:"weight_decay"` // 0.01 (PyTorch's default, see the package doc)
	// Checkpoint turns on per-layer gradient checkpointing of the student's forward pass (llama.Options.Checkpoint):
	// the backward pass recomputes each layer from its kept input instead of keeping every layer's activations.
	// Same loss and gradients; about one more student forward pass per step. Default false.
	Checkpoint bool `toml:"checkpoint"`
	// WeightsDType is the dtype the frozen base weights are held in on the device (llama.HoldWeights, cast once in
	// New): "float32" or "bfloat16"; "" means the base model's compute dtype (llama.Config.DType), so that no cast
	// copy exists. Holding bfloat16 weights for float32 compute is refused (the graph would cast them back: a float32
	// copy of rounded weights).
	WeightsDType string `toml:"weights_dtype"`
}

// DefaultConfig returns the official fine-tuning settings (NATS-SPEC.md §3.4).
func DefaultConfig() Config {
	return Config{Steps: 7000, LR: 2e-3, Beta1: 0.9, Beta2: 0.95, WeightDecay: 0.01}
}

// LRMult is the official LambdaLR multiplier: linear warm-up over the first 20 % from 0.1×, flat, linear decay
// over the last 20 % to 0.1×: min(1, max((step+1)/(T/5), 0.1), max((T−step)/(T/5), 0.1)).
func (c Config) LRMult(step int) float64 {
	t := float64(c.Steps) / 5
	return math.Min(1, math.Min(math.Max(float64(step+1)/t, 0.1), math.Max((float64(c.Steps)-float64(step))/t, 0.1)))
}

// Row is one fine-tuning step's metrics.
type Row struct {
	Step    int64
	Loss    float64 // distillation MSE on answer tokens
	Aux     float64 // λ sparsity term
	Density float64 // NAtS mask density (NATS-SPEC.md §1.6)
	LR      float64
	Seconds float64
}

// Trainer holds a frozen base model and its trainable NAtS scorers.
type Trainer struct {
	Cfg     Config
	Base    *llama.Model
	Masker  *nats.Masker
	Scorers *model.Params // "layer_XX/scorer" `[hidden, kv_heads·3]`
	Step    int64
	Seed    uint64

	backend compute.Backend
	attn    llama.AttentionPath // teacher's and student's attention; zero: fused in bf16, materialised in float32
	weights []*tensors.Tensor   // the frozen base weights as the graphs receive them (Cfg.WeightsDType; Specs order)
	m, v    []*tensors.Tensor
	exec    *Exec
	predict map[string]*Exec // Predict's graphs by policy
}

// maskerConfig is the view of the Llama config the NAtS masker needs.
func maskerConfig(c llama.Config) model.Config {
	return model.Config{VocabSize: c.VocabSize, DModel: c.HiddenSize, NLayers: c.NumLayers, NHeads: c.NumHeads,
		NKVHeads: c.NumKVHeads, FFNMult: 1, MaxSeqLen: c.MaxPositions}
}

// ScorerSpecs returns the adapter's parameters: one scorer per layer.
func ScorerSpecs(c llama.Config, m *nats.Masker) []model.Spec {
	mc := maskerConfig(c)
	var specs []model.Spec
	for l := 0; l < c.NumLayers; l++ {
		for _, s := range m.Specs(mc, l) {
			s.Name = fmt.Sprintf("layer_%02d/%s", l, s.Name)
			s.Std = 1 / math.Sqrt(3*float64(c.HiddenSize))
			specs = append(specs, s)
		}
	}
	return specs
}

// ResolveWeightsDType returns the dtype the base weights are held in: weights ("float32", "bfloat16", or "" for
// the compute dtype) for a model computing in compute (llama.Config.DType: "float32", "bfloat16", or "" for
// float32). bfloat16 weights under float32 compute are an error naming finetune.weights_dtype.
func ResolveWeightsDType(weights, compute string) (string, error) {
	if compute == "" {
		compute = "float32"
	}
	switch weights {
	case "":
		return compute, nil
	case "float32":
		return weights, nil
	case "bfloat16":
		if compute != "bfloat16" {
			return "", fmt.Errorf("finetune.weights_dtype = %q with compute dtype %q: the graph would cast the rounded weights back to float32 (a float32 copy); hold float32 weights or compute in bfloat16", weights, compute)
		}
		return weights, nil
	}
	return "", fmt.Errorf("finetune.weights_dtype = %q: want \"float32\" or \"bfloat16\" (or empty: the compute dtype)", weights)
}

// New returns a trainer with freshly initialised scorers (deterministic from seed). The base weights are held in
// cfg.WeightsDType from here on (llama.HoldWeights: cast once, on the host).
func New(backend compute.Backend, base *llama.Model, masker *nats.Masker, cfg Config, seed uint64) (*Trainer, error) {
	if cfg.Steps <= 0 || cfg.LR <= 0 {
		return nil, fmt.Errorf("finetune.steps = %d, finetune.lr = %g: must be positive", cfg.Steps, cfg.LR)
	}
	wdt, err := ResolveWeightsDType(cfg.WeightsDType, base.Config.DType)
	if err != nil {
		return nil, err
	}
	weights, err := llama.HoldWeights(base, wdt)
	if err != nil {
		return nil, err
	}
	cfg.WeightsDType = wdt
	specs := ScorerSpecs(base.Config, masker)
	t := &Trainer{Cfg: cfg, Base: base, Masker: masker, Scorers: model.NewParams(specs, seed), Seed: seed, backend: backend,
		weights: weights}
	for _, s := range specs {
		t.m = append(t.m, tensors.FromFlatDataAndDimensions(make([]float32, s.Size()), s.Dims...))
		t.v = append(t.v, tensors.FromFlatDataAndDimensions(make([]float32, s.Size()), s.Dims...))
	}
	return t, nil
}

// objective builds the step's loss: the distillation MSE of the student's final hidden states against the
// teacher's on the labelled tokens (labels `[1, S]` float32), the λ sparsity term aux and the mean mask density, from
// the frozen weights w, the scorers sc (one per layer), tokens `[1, S]` and the RNG state (Gumbel noise). Teacher
// and student run with attention path t.attn: in bf16 the fused kernel (no [s, s] tensor kept between the passes;
// the student's carrier gradient comes from model.FusedMaskedAttention's VJP), in float32 the materialised mask.
// With t.Cfg.Checkpoint the student's layers are recomputed in the backward pass (the teacher has no backward).
func (t *Trainer) objective(w llama.Weights, sc []*Node, tokens, labels, rng *Node) (loss, aux, dens *Node) {
	c := t.Base.Config
	teacher := StopGradient(llama.Forward(c, w, tokens, llama.Options{SkipLogits: true, Attention: t.attn}).Hidden)
	mc := maskerConfig(c)
	aux = ScalarZero(tokens.Graph(), dtypes.Float32)
	dens = ScalarZero(tokens.Graph(), dtypes.Float32)
	uniform := func(dims []int) *Node {
		var u *Node
		rng, u = RandomUniform(rng, shapes.Make(dtypes.Float32, dims...))
		return u
	}
	student := llama.Forward(c, w, tokens, llama.Options{SkipLogits: true, Attention: t.attn, Checkpoint: t.Cfg.Checkpoint,
		MaskOut: func(l int, normed *Node) model.MaskOut {
			scorer := ConvertDType(sc[l], normed.DType())
			out := t.Masker.Mask(&model.AttnSite{Cfg: mc, Layer: l, Normed: normed, Training: true, Uniform: uniform,
				Param: func(string) *Node { return scorer }})
			if out.Aux != nil {
				aux = Add(aux, out.Aux)
			}
			dens = Add(dens, out.Density)
			return out
		}}).Hidden
	diff := Sub(ConvertDType(student, dtypes.Float32), ConvertDType(teacher, dtypes.Float32))
	perTok := ReduceMean(Square(diff), -1) // [1, S]
	nLab := Max(ReduceAllSum(labels), ScalarOne(tokens.Graph(), dtypes.Float32))
	loss = Div(ReduceAllSum(Mul(perTok, labels)), nLab)
	return loss, aux, DivScalar(dens, float64(c.NumLayers))
}

// graph builds one step. in: base weights (nb), scorers (ns), m (ns), v (ns), tokens [1,S], labels [1,S] f32,
// rng, lr, step.
func (t *Trainer) graph(in []*Node) []*Node {
	c := t.Base.Config
	nb, ns := len(t.Base.Params.Specs), len(t.Scorers.Specs)
	base, sc, ms, vs := in[:nb], in[nb:nb+ns], in[nb+ns:nb+2*ns], in[nb+2*ns:nb+3*ns]
	tokens, labels, rng, lr, step := in[nb+3*ns], in[nb+3*ns+1], in[nb+3*ns+2], in[nb+3*ns+3], in[nb+3*ns+4]
	for i := range base {
		base[i] = StopGradient(base[i]) // frozen
	}
	w := llama.WeightsFrom(c, t.Base.Params.Specs, base)
	loss, aux, dens := t.objective(w, sc, tokens, labels, rng)
	grads := Gradient(Add(loss, aux), sc...)
	b1, b2 := t.Cfg.Beta1, t.Cfg.Beta2
	bc1 := OneMinus(Pow(Scalar(tokens.Graph(), dtypes.Float32, b1), step))
	bc2 := OneMinus(Pow(Scalar(tokens.Graph(), dtypes.Float32, b2), step))
	var np, nm, nv []*Node
	for i := range sc {
		m := Add(MulScalar(ms[i], b1), MulScalar(grads[i], 1-b1))
		v := Add(MulScalar(vs[i], b2), MulScalar(Square(grads[i]), 1-b2))
		p := Sub(sc[i], Mul(MulScalar(lr, t.Cfg.WeightDecay), sc[i]))
		p = Sub(p, Mul(lr, Div(Div(m, bc1), AddScalar(Sqrt(Div(v, bc2)), 1e-8))))
		np, nm, nv = append(np, p), append(nm, m), append(nv, v)
	}
	out := append(append(append([]*Node{}, np...), nm...), nv...)
	return append(out, loss, aux, dens)
}

// TrainStep runs one step on one sequence: tokens `[seq]` and labels `[seq]` (1 on answer tokens whose final
// hidden state is distilled). A non-finite loss is an error naming the step.
func (t *Trainer) TrainStep(tokens []int32, labels []float32) (Row, error) {
	if len(tokens) != len(labels) {
		return Row{}, fmt.Errorf("finetune: %d tokens but %d labels", len(tokens), len(labels))
	}
	if t.exec == nil {
		var err error
		if t.exec, err = NewExec(t.backend, t.graph); err != nil {
			return Row{}, err
		}
	}
	start := time.Now()
	ns := len(t.Scorers.Specs)
	lr := float32(t.Cfg.LR * t.Cfg.LRMult(int(t.Step)))
	rng, err := RNGStateFromSeed(int64((t.Seed*1_000_003 + uint64(t.Step)) & (1<<62 - 1)))
	if err != nil {
		return Row{}, err
	}
	args := make([]any, 0, len(t.weights)+3*ns+5)
	for _, v := range t.weights {
		args = append(args, v)
	}
	for _, group := range [][]*tensors.Tensor{t.Scorers.Values, t.m, t.v} {
		for _, v := range group {
			args = append(args, v)
		}
	}
	s := len(tokens)
	args = append(args, tensors.FromFlatDataAndDimensions(tokens, 1, s), tensors.FromFlatDataAndDimensions(labels, 1, s),
		rng, lr, float32(t.Step+1))
	out, err := t.exec.Exec(args...)
	if IsOutOfMemory(err) {
		return Row{}, outOfMemoryError(t.Step+1, s, err)
	}
	if err != nil {
		return Row{}, fmt.Errorf("finetune step %d: %w", t.Step+1, err)
	}
	copy(t.Scorers.Values, out[:ns])
	copy(t.m, out[ns:2*ns])
	copy(t.v, out[2*ns:3*ns])
	row := Row{Step: t.Step + 1, Loss: scalar(out[3*ns]), Aux: scalar(out[3*ns+1]), Density: scalar(out[3*ns+2]),
		LR: float64(lr), Seconds: time.Since(start).Seconds()}
	if math.IsNaN(row.Loss) || math.IsInf(row.Loss, 0) {
		return row, fmt.Errorf("finetune step %d: distillation loss is %v", row.Step, row.Loss)
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

func emptyScorers(c llama.Config, m *nats.Masker) *model.Params {
	return model.NewParams(ScorerSpecs(c, m), 0)
}
