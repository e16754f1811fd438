package finetune

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/gomlx/gomlx/core/tensors"

	"natsbench/model"
)

// ErrNoCheckpoint is returned by Restore when path does not exist (a fresh run).
var ErrNoCheckpoint = errors.New("finetune: no checkpoint")

// Save writes the trainer state needed to resume exactly — the scorers, AdamW's first and second moments and
// the step — to path atomically (model.SaveTensors: temp file, fsync, rename). The base model is not saved: it
// is frozen and reloaded from its folder; its fingerprint and the fine-tuning config are in the metadata so a
// checkpoint is never resumed onto another base model or schedule.
func (t *Trainer) Save(path string) error {
	cfg, _ := json.Marshal(t.Cfg)
	nc, _ := json.Marshal(t.Masker.Config())
	meta := map[string]string{"format": "natsbench-finetune-ckpt/1", "base_fingerprint": Fingerprint(t.Base.Config),
		"finetune": string(cfg), "nats": string(nc), "seed": fmt.Sprint(t.Seed)}
	names := t.Scorers.Names()
	var all []string
	var vals []*tensors.Tensor
	for g, group := range [][]*tensors.Tensor{t.Scorers.Values, t.m, t.v} {
		for i, v := range group {
			all = append(all, [...]string{"param/", "adam_m/", "adam_v/"}[g]+names[i])
			vals = append(vals, v)
		}
	}
	return model.SaveTensors(path, t.Step, meta, all, vals)
}

// Restore loads a checkpoint written by Save into t (same base model, fine-tuning config, NAtS settings and seed;
// anything else is an error naming the file). A missing file returns ErrNoCheckpoint.
func (t *Trainer) Restore(path string) error {
	step, meta, names, vals, err := model.LoadTensors(path)
	if err != nil {
		if os.IsNotExist(err) {
			return ErrNoCheckpoint
		}
		return fmt.Errorf("restore %s: %w", path, err)
	}
	cfg, _ := json.Marshal(t.Cfg)
	nc, _ := json.Marshal(t.Masker.Config())
	for _, c := range []struct{ key, want string }{{"format", "natsbench-finetune-ckpt/1"},
		{"base_fingerprint", Fingerprint(t.Base.Config)}, {"finetune", string(cfg)}, {"nats", string(nc)},
		{"seed", fmt.Sprint(t.Seed)}} {
		if meta[c.key] != c.want {
			return fmt.Errorf("restore %s: metadata %q is %q, this run has %q", path, c.key, meta[c.key], c.want)
		}
	}
	byName := map[string]*tensors.Tensor{}
	for i, n := range names {
		byName[n] = vals[i]
	}
	specs := t.Scorers.Specs
	for g, group := range [][]*tensors.Tensor{t.Scorers.Values, t.m, t.v} {
		for i := range group {
			n := [...]string{"param/", "adam_m/", "adam_v/"}[g] + specs[i].Name
			v, ok := byName[n]
			if !ok {
				return fmt.Errorf("restore %s: tensor %q missing", path, n)
			}
			if fmt.Sprint(v.Shape().Dimensions) != fmt.Sprint(specs[i].Dims) {
				return fmt.Errorf("restore %s: tensor %q has dims %v, want %v", path, n, v.Shape().Dimensions, specs[i].Dims)
			}
			group[i] = v
		}
	}
	t.Step = step
	return nil
}
