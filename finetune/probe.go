package finetune

import (
	"fmt"
	"io"
	"time"

	"github.com/gomlx/compute"

	"natsbench/llama"
	"natsbench/model"
	"natsbench/nats"
)

// ProbeOptions sets up Probe: one scorer-only training configuration at one sequence length.
type ProbeOptions struct {
	Seq          int          // tokens of the training sequence
	DType        string       // compute dtype: "bfloat16" (the GPU configuration) or "float32"
	WeightsDType string       // dtype the frozen weights are held in; "" = DType (Config.WeightsDType)
	Checkpoint   bool         // per-layer gradient checkpointing of the student (Config.Checkpoint)
	Steps        int          // training steps run (the first one compiles the step); default 1
	Seed         uint64       // random weights, scorers, tokens and Gumbel noise
	NAtS         *nats.Config // the masker; nil: nats.DefaultConfig() with λ 1e-3
	Log          io.Writer    // when set, a line as each phase begins and ends (a cut probe shows where it was)
}

// ProbeResult is what one Probe measured.
type ProbeResult struct {
	Config       llama.Config
	WeightsDType string    // resolved
	Estimate     Memory    // EstimateMemory for the probed options (the attention path AttentionAuto takes)
	SetupSeconds float64   // random weights generated on the device
	StepSeconds  []float64 // per step; the first includes compiling the step
	Rows         []Row     // the steps' metrics
}

// Probe builds a model of architecture c with RANDOM weights generated on the backend's device in the held dtype
// (llama.NewRandomOnDevice: no checkpoint and no host copy needed, so any architecture, e.g. Llama3_8B, can be
// probed), and runs o.Steps real scorer-only fine-tuning steps (Trainer.TrainStep: teacher and student forward,
// backward through the student, AdamW on the scorers) on one sequence of o.Seq pseudo-random tokens, the last quarter
// labelled. It returns the estimate next to the steps' timings; the caller reads the device's memory (cmd/memest).
// A step that fails (out of device memory, typically) is an error naming the configuration.
func Probe(backend compute.Backend, c llama.Config, o ProbeOptions) (ProbeResult, error) {
	c.DType = o.DType
	if o.Steps < 1 {
		o.Steps = 1
	}
	if o.Seq < 2 {
		return ProbeResult{}, fmt.Errorf("probe: seq %d: need at least 2 tokens", o.Seq)
	}
	if c.MaxPositions < o.Seq {
		c.MaxPositions = o.Seq // positions only bound RoPE tables; the probe measures memory, not quality
	}
	wdt, err := ResolveWeightsDType(o.WeightsDType, c.DType)
	if err != nil {
		return ProbeResult{}, err
	}
	res := ProbeResult{Config: c, WeightsDType: wdt, Estimate: EstimateMemory(c, MemoryOptions{Seq: o.Seq,
		ParamBytes: dtypeBytes(wdt), ComputeBytes: dtypeBytes(c.DType), Checkpoint: o.Checkpoint, Fused: autoFused(c.DType)})}
	nc := nats.DefaultConfig()
	nc.Lambda = 1e-3
	if o.NAtS != nil {
		nc = *o.NAtS
	}
	masker, err := nats.New(nc)
	if err != nil {
		return res, fmt.Errorf("probe: %w", err)
	}
	logf := func(format string, args ...any) {
		if o.Log != nil {
			fmt.Fprintf(o.Log, format+"\n", args...)
		}
	}
	start := time.Now()
	logf("  generating random weights on the device (%d layers) …", c.NumLayers)
	base, err := llama.NewRandomOnDevice(backend, c, wdt, o.Seed)
	if err != nil {
		return res, fmt.Errorf("probe: %w", err)
	}
	res.SetupSeconds = time.Since(start).Seconds()
	logf("  random weights ready in %.1f s", res.SetupSeconds)
	cfg := DefaultConfig()
	cfg.Steps, cfg.Checkpoint, cfg.WeightsDType = o.Steps, o.Checkpoint, wdt
	tr, err := New(backend, base, masker, cfg, o.Seed)
	if err != nil {
		return res, fmt.Errorf("probe: %w", err)
	}
	toks, labels := make([]int32, o.Seq), make([]float32, o.Seq)
	for i := range toks {
		toks[i] = int32((uint64(i)*2654435761 + o.Seed) % uint64(c.VocabSize))
		if i >= o.Seq*3/4 {
			labels[i] = 1
		}
	}
	for s := 0; s < o.Steps; s++ {
		t0 := time.Now()
		note := ""
		if s == 0 {
			note = " (compiles the step first)"
		}
		logf("  step %d/%d%s …", s+1, o.Steps, note)
		row, err := tr.TrainStep(toks, labels)
		if err != nil {
			return res, fmt.Errorf("probe (seq %d, compute %s, weights %s, checkpointing %v): %w", o.Seq, c.DType, wdt, o.Checkpoint, err)
		}
		res.StepSeconds = append(res.StepSeconds, time.Since(t0).Seconds())
		logf("  step %d done in %.2f s", s+1, res.StepSeconds[s])
		res.Rows = append(res.Rows, row)
	}
	return res, nil
}

// dtypeBytes is the size of an element of a dtype name ("bfloat16": 2, else 4).
func dtypeBytes(dtype string) int {
	if dtype == "bfloat16" {
		return 2
	}
	return 4
}

// autoFused reports whether llama.AttentionAuto takes the fused path for compute dtype (as llama.Options decides it
// for a NAtS structured mask): in bf16, unless the environment turns the fused (masked) path off.
func autoFused(dtype string) bool {
	return dtype == "bfloat16" && model.FusedAttentionAllowed(true)
}

// TinyLlama is a small Llama architecture (grouped-query, 2 layers, hidden 64) for probes on the CPU.
func TinyLlama() llama.Config {
	return llama.Config{Architecture: "LlamaForCausalLM", HiddenSize: 64, IntermediateSize: 128, NumLayers: 2,
		NumHeads: 4, NumKVHeads: 2, HeadDim: 16, RMSNormEps: 1e-5, RopeTheta: 10000, MaxPositions: 512, VocabSize: 256,
		BOS: 1, EOS: []int{2}, DType: "float32"}
}
