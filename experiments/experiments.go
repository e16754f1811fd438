// Package experiments runs one resolved sweep run (kinds lm, longbench, latency): it decodes the run's
// typed configuration strictly, builds the model and method from the one method table (Build), trains or
// evaluates, and writes result rows. Nothing imports experiments but the runner.
package experiments

import (
	"context"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"time"

	"natsbench/sweeps"
	"natsbench/train"
)

// Env is what the runner decides for every run of a sweep.
type Env struct {
	Backend string    // GoMLX backend spec ("go", "xla:cuda", ...); "" means the embedded default (pure Go)
	Smoke   bool      // the sweep's smoke overrides were applied
	Log     io.Writer // progress lines (one live line per run)
	Commit  string    // code commit recorded in the manifest
	Device  int       // GPU index for xla backends; -1 when not set
}

// Kinds lists the run kinds this build can run.
var Kinds = []string{"lm", "longbench", "latency", "finetune"}

// Decode resolves a run's typed configuration: the defaults, overlaid with the run's tables, decoded strictly.
func Decode(r sweeps.Run) (RunConfig, error) {
	rc := DefaultRunConfig()
	if err := r.Decode(&rc); err != nil {
		return rc, err
	}
	return rc, nil
}

// Validate decodes a run's configuration strictly and checks it, before anything is trained: unknown keys,
// unknown methods, bad sizes and missing data folders are errors naming the sweep file, run and field.
func Validate(r sweeps.Run) error {
	rc, err := Decode(r)
	if err != nil {
		return err
	}
	wrap := func(err error) error { return fmt.Errorf("%s: run %s: %w", r.SweepFile, r.Key, err) }
	switch r.Kind {
	case "lm":
	case "latency":
		if err := rc.Latency.validate(); err != nil {
			return wrap(err)
		}
	case "finetune":
		if err := rc.Finetune.validate(rc.Method); err != nil {
			return wrap(err)
		}
		if _, _, err := rc.Method.Build(); err != nil {
			return wrap(err)
		}
		return nil // the base model and its tokenizer are the finetune table's, not [model] or [data]
	case "longbench":
		if r.FromKey == "" {
			return wrap(fmt.Errorf("kind longbench evaluates a trained model: set `from` (e.g. from = \"pg19:full\")"))
		}
		if longbenchLlama(rc) { // the model is finetune.model, not [model] or [data]
			if err := validateLongBenchLlama(rc); err != nil {
				return wrap(err)
			}
			return nil
		}
		if rc.LongBench.MatchBudget {
			return wrap(fmt.Errorf("longbench.match_budget needs a Llama-family model (finetune.model): natsbench's own LM takes its weights from `from`"))
		}
		if rc.LongBench.PostProcess == "llama-3" {
			return wrap(fmt.Errorf("longbench.postprocess = %q needs a Llama-family model (finetune.model): natsbench's own LM is never post-processed", rc.LongBench.PostProcess))
		}
		if err := rc.LongBench.validate(rc.Method); err != nil {
			return wrap(err)
		}
	default:
		return wrap(fmt.Errorf("kind = %q: unknown or not yet supported run kind (this build runs: %v)", r.Kind, Kinds))
	}
	if err := rc.Model.Validate(); err != nil {
		return wrap(err)
	}
	if _, _, err := rc.Method.Build(); err != nil {
		return wrap(err)
	}
	if r.FromKey == "" && r.Kind == "lm" {
		if err := rc.Train.Validate(); err != nil {
			return wrap(err)
		}
		if rc.Train.SeqLen > rc.Model.MaxSeqLen {
			return wrap(fmt.Errorf("train.seq_len = %d exceeds model.max_seq_len = %d", rc.Train.SeqLen, rc.Model.MaxSeqLen))
		}
	}
	if err := rc.Eval.validate(); err != nil {
		return wrap(err)
	}
	if r.Kind != "longbench" { // longbench reads longbench.data, not the PG-19 folder
		if err := dirExists(rc.Data.Dir); err != nil {
			return wrap(err)
		}
	}
	if rc.Data.Tokenizer != "gpt2" {
		return wrap(fmt.Errorf("data.tokenizer = %q: only \"gpt2\" is supported for PG-19", rc.Data.Tokenizer))
	}
	return nil
}

// runInfo is the identity of the run being executed, stamped on its rows.
type runInfo struct {
	id, sweep, key, name, method string
	seed                         uint64
	outRoot                      string
}

// Run executes one run inside dir. dir exists and may hold a partial run (ckpt/), which Run resumes.
// fromDir is the output folder of the run named by `from` ("" when none). Run writes dir/metrics.parquet
// atomically; the caller writes the manifest and the DONE marker.
func Run(ctx context.Context, r sweeps.Run, dir, fromDir string, env Env) error {
	if env.Log == nil {
		env.Log = io.Discard
	}
	if err := Validate(r); err != nil {
		return err
	}
	rc, _ := Decode(r)
	info := runInfo{id: r.ID, sweep: r.Sweep, key: r.Key, name: r.Name, method: rc.Method.Name, seed: uint64(r.Seed),
		outRoot: filepath.Dir(filepath.Dir(dir))}
	switch r.Kind {
	case "lm":
		return runLM(ctx, rc, info, dir, fromDir, env)
	case "latency":
		return runLatency(ctx, rc, info, dir, fromDir, env)
	case "longbench":
		if longbenchLlama(rc) {
			return runLongBenchLlama(ctx, rc, info, dir, fromDir, env)
		}
		return runLongBench(ctx, rc, info, dir, fromDir, env)
	case "finetune":
		return runFinetune(ctx, rc, info, dir, env)
	}
	return fmt.Errorf("kind %q not supported", r.Kind)
}

func (i runInfo) row(task, split, metric string, x, value float64, n int64) Row {
	return Row{RunID: i.id, Sweep: i.sweep, Key: i.key, Name: i.name, Method: i.method, Seed: int32(i.seed),
		Task: task, Split: split, Metric: metric, Step: -1, X: x, Value: value, N: n, Time: time.Now()}
}

func trainRows(info runInfo, r train.Row) []Row {
	mk := func(metric string, v float64) Row {
		row := info.row("train", "train", metric, math.NaN(), v, r.Tokens)
		row.Step = r.Step
		return row
	}
	out := []Row{mk("loss", r.Loss), mk("lr", r.LR), mk("grad_norm", r.GradNorm), mk("tokens_per_second", float64(r.Tokens)/r.Seconds)}
	if !math.IsNaN(r.Density) {
		out = append(out, mk("mask_density", r.Density), mk("sparsity_loss", r.Aux))
	}
	return out
}
