package finetune

import (
	"errors"
	"fmt"
	"os"
	"strconv"

	"github.com/gomlx/gomlx/core/tensors"

	"natsbench/model"
)

// SaveState writes the trainer's resumable state (scorers, AdamW moments, step, base fingerprint) to path,
// atomically, with model.SaveTensors' checksums.
func (t *Trainer) SaveState(path string) error {
	n := len(t.Scorers.Specs)
	names := make([]string, 0, 3*n)
	values := make([]*tensors.Tensor, 0, 3*n)
	for i, s := range t.Scorers.Specs {
		names = append(names, s.Name)
		values = append(values, t.Scorers.Values[i])
	}
	for i, s := range t.Scorers.Specs {
		names = append(names, "adam_m/"+s.Name, "adam_v/"+s.Name)
		values = append(values, t.m[i], t.v[i])
	}
	meta := map[string]string{"format": "natsbench-finetune-state/1", "base_fingerprint": Fingerprint(t.Base.Config),
		"seed": strconv.FormatUint(t.Seed, 10)}
	return model.SaveTensors(path, t.Step, meta, names, values)
}

// ErrNoState is returned by RestoreState when there is no state file.
var ErrNoState = errors.New("no fine-tuning state")

// RestoreState loads a state written by SaveState; a state of another base model is an error naming the file.
func (t *Trainer) RestoreState(path string) error {
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return ErrNoState
	}
	step, meta, names, values, err := model.LoadTensors(path)
	if err != nil {
		return err
	}
	if meta["format"] != "natsbench-finetune-state/1" || meta["base_fingerprint"] != Fingerprint(t.Base.Config) {
		return fmt.Errorf("%s: not a fine-tuning state of this base model (format %q, fingerprint %q)", path, meta["format"], meta["base_fingerprint"])
	}
	byName := map[string]*tensors.Tensor{}
	for i, n := range names {
		byName[n] = values[i]
	}
	for i, s := range t.Scorers.Specs {
		p, m, v := byName[s.Name], byName["adam_m/"+s.Name], byName["adam_v/"+s.Name]
		if p == nil || m == nil || v == nil {
			return fmt.Errorf("%s: missing %s or its moments", path, s.Name)
		}
		t.Scorers.Values[i], t.m[i], t.v[i] = p, m, v
	}
	t.Step = step
	return nil
}
