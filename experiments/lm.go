package experiments

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"natsbench/internal/progress"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/gomlx/compute"

	"natsbench/evaluate"
	"natsbench/model"
	"natsbench/train"
)

// finalCkpt is the parameters-only checkpoint a finished training run leaves for `from` runs.
const finalCkpt = "final.ckpt"

// runLM trains (unless the run evaluates another run's model) and evaluates on PG-19 by streaming decoding.
func runLM(ctx context.Context, rc RunConfig, info runInfo, dir, fromDir string, env Env) error {
	backend, err := model.NewBackend(env.Backend)
	if err != nil {
		return err
	}
	data, err := prepareData(rc.Data, info.outRoot, env.Log)
	if err != nil {
		return err
	}
	masker, evictor, err := rc.Method.Build()
	if err != nil {
		return err
	}
	var mcfg model.Config
	var params *model.Params
	var rows []Row
	if fromDir == "" {
		var trows []Row
		mcfg = rc.Model
		params, trows, err = trainLM(ctx, backend, rc, info, dir, data, masker, env)
		if err != nil {
			return err
		}
		rows = append(rows, trows...)
	} else {
		mcfg, params, err = loadFinal(fromDir, masker)
		if err != nil {
			return err
		}
	}
	erows, err := evalLM(ctx, backend, rc, info, mcfg, params, data, evaluate.Method{Name: rc.Method.Name, Masker: masker, Evictor: evictor}, env)
	if err != nil {
		return err
	}
	rows = append(rows, erows...)
	return writeMetrics(filepath.Join(dir, "metrics.parquet"), info, rows)
}

// trainLM trains the model of a run, resuming from dir/ckpt, and saves dir/ckpt/final.ckpt.
func trainLM(ctx context.Context, backend compute.Backend, rc RunConfig, info runInfo, dir string, data *dataset, masker model.Masker, env Env) (*model.Params, []Row, error) {
	ckdir := filepath.Join(dir, "ckpt")
	if p, err := loadFinalParams(ckdir, rc.Model, masker); err == nil {
		rows, _ := readTrainRows(dir)
		return p, rows, nil
	}
	tr, err := train.New(backend, rc.Model, masker, rc.Train, info.seed)
	if err != nil {
		return nil, nil, err
	}
	var rows []Row
	if err := tr.Restore(ckdir); err == nil {
		rows, err = readTrainRows(dir)
		if err != nil {
			return nil, nil, err
		}
		rows = truncateRows(rows, tr.Step)
		fmt.Fprintf(env.Log, "  resuming %s from step %d\n", info.key, tr.Step)
	} else if !errors.Is(err, train.ErrNoCheckpoint) {
		return nil, nil, fmt.Errorf("resume %s: %w", ckdir, err)
	}
	sampler, err := data.sampler("train", rc.Train.SeqLen)
	if err != nil {
		return nil, nil, err
	}
	start := time.Now()
	startStep := tr.Step
	cfg := rc.Train
	live := progress.New(env.Log)
	for tr.Step < int64(cfg.Steps) {
		if err := ctx.Err(); err != nil {
			return nil, nil, err
		}
		ins, tgs := make([][]int32, cfg.GradAccum), make([][]int32, cfg.GradAccum)
		for k := 0; k < cfg.GradAccum; k++ {
			ins[k], tgs[k] = sampler(info.seed, tr.Step*int64(cfg.GradAccum)+int64(k), cfg.BatchSize)
		}
		row, err := tr.TrainStep(ins, tgs)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", info.key, err)
		}
		if cfg.LogEvery <= 1 || row.Step%int64(cfg.LogEvery) == 0 || row.Step == int64(cfg.Steps) {
			rows = append(rows, trainRows(info, row)...)
		}
		el := time.Since(start).Seconds()
		done := float64(tr.Step - startStep)
		tps := done * float64(row.Tokens) / el
		etaS := el / done * float64(int64(cfg.Steps)-tr.Step)
		dens := ""
		if !math.IsNaN(row.Density) {
			dens = fmt.Sprintf(" density %.3f", row.Density)
		}
		live.Update("  train %-34s step %d/%d loss %.4f lr %.2e%s %.0f tok/s ETA %s   ", short(info.key),
			row.Step, cfg.Steps, row.Loss, row.LR, dens, tps, (time.Duration(etaS) * time.Second).Round(time.Second))
		if (cfg.CkptEvery > 0 && row.Step%int64(cfg.CkptEvery) == 0) || row.Step == int64(cfg.Steps) {
			if err := tr.Save(ckdir, 2); err != nil {
				return nil, nil, err
			}
			if err := writeTrainRows(dir, rows); err != nil {
				return nil, nil, err
			}
		}
	}
	live.End()
	if err := saveFinal(ckdir, rc.Model, tr.Params); err != nil {
		return nil, nil, err
	}
	return tr.Params, rows, nil
}

func short(key string) string {
	if len(key) > 34 {
		return key[:31] + "..."
	}
	return key
}

// evalLM runs the PG-19 streaming evaluation and returns its rows.
func evalLM(ctx context.Context, backend compute.Backend, rc RunConfig, info runInfo, mcfg model.Config, params *model.Params, data *dataset, m evaluate.Method, env Env) ([]Row, error) {
	windows, err := data.windows(rc.Eval.Split, rc.Eval.ContextLen, rc.Eval.MaxWindows)
	if err != nil {
		return nil, err
	}
	if rc.Eval.ContextLen > mcfg.MaxSeqLen {
		return nil, fmt.Errorf("eval.context_len = %d exceeds the model's max_seq_len = %d", rc.Eval.ContextLen, mcfg.MaxSeqLen)
	}
	res, err := evaluate.Streaming(backend, mcfg, params, m, windows, evaluate.Options{Batch: rc.Eval.BatchSize,
		Buckets: rc.Eval.PositionBuckets, Progress: env.Log, Label: short(info.key)})
	if err != nil {
		return nil, fmt.Errorf("%s: evaluation: %w", info.key, err)
	}
	task, split := "pg19", rc.Eval.Split
	x := float64(rc.Eval.ContextLen)
	rows := []Row{
		info.row(task, split, "ppl", x, res.PPL, res.Tokens),
		info.row(task, split, "nll", x, res.NLL, res.Tokens),
		info.row(task, split, "kv_fraction", x, res.KVFraction, res.Tokens),
		info.row(task, split, "kv_tokens", x, res.KVTokens, res.Tokens),
		info.row(task, split, "kv_fraction_final", x, res.KVFinal, int64(len(windows))),
		info.row(task, split, "eval_seconds", x, res.Seconds, res.Tokens),
	}
	for _, b := range res.Buckets {
		rows = append(rows, info.row(task, split, "nll_bucket", float64(b.Hi), b.NLL, b.N))
	}
	fmt.Fprintf(env.Log, "  %s: ppl %.3f  kv fraction %.3f (%.1f tokens)\n", info.key, res.PPL, res.KVFraction, res.KVTokens)
	if rc.Eval.Fast && (m.Evictor == nil || m.Masker != nil) {
		par, err := evaluate.Parallel(backend, mcfg, params, m, windows, rc.Eval.BatchSize)
		if err != nil {
			return nil, err
		}
		rows = append(rows, info.row(task, split, "ppl_parallel", x, par.PPL, par.Tokens))
	}
	return rows, nil
}

// Checkpoint for `from` runs: parameters with the model config in the meta.
func saveFinal(ckdir string, mcfg model.Config, p *model.Params) error {
	js, _ := json.Marshal(mcfg)
	return model.SaveTensors(filepath.Join(ckdir, finalCkpt), 0, map[string]string{"model": string(js)}, p.Names(), p.Values)
}

func loadFinalParams(ckdir string, mcfg model.Config, masker model.Masker) (*model.Params, error) {
	_, _, names, vals, err := model.LoadTensors(filepath.Join(ckdir, finalCkpt))
	if err != nil {
		return nil, err
	}
	p := model.NewParams(model.Specs(mcfg, masker), 0)
	return p, p.Assign(names, vals, filepath.Join(ckdir, finalCkpt))
}

// loadFinal loads the model of another run (for evaluation-only baselines): the model config comes from the
// checkpoint, so the evaluating run cannot disagree with it.
func loadFinal(fromDir string, masker model.Masker) (model.Config, *model.Params, error) {
	path := filepath.Join(fromDir, "ckpt", finalCkpt)
	_, meta, names, vals, err := model.LoadTensors(path)
	if err != nil {
		if os.IsNotExist(err) {
			return model.Config{}, nil, fmt.Errorf("from: %s has no trained model (run it first)", path)
		}
		return model.Config{}, nil, err
	}
	var mcfg model.Config
	if err := json.Unmarshal([]byte(meta["model"]), &mcfg); err != nil {
		return mcfg, nil, fmt.Errorf("%s: model config in meta: %w", path, err)
	}
	// The source was trained without this run's masker parameters when the methods differ (e.g. h2o on full):
	// load only the LM parameters, plus the masker's when present.
	p := model.NewParams(model.Specs(mcfg, masker), 0)
	have := map[string]bool{}
	for _, n := range names {
		have[n] = true
	}
	for _, s := range p.Specs {
		if !have[s.Name] {
			return mcfg, nil, fmt.Errorf("from: %s lacks parameter %q: the source run used another method (%s)", path, s.Name,
				strings.SplitN(s.Name, "/", 3)[len(strings.SplitN(s.Name, "/", 3))-1])
		}
	}
	var keepN []string
	var keepV = vals[:0:0]
	for i, n := range names {
		if p.Index(n) >= 0 {
			keepN, keepV = append(keepN, n), append(keepV, vals[i])
		}
	}
	return mcfg, p, p.Assign(keepN, keepV, path)
}

var _ = io.Discard
