package finetune

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/gomlx/gomlx/core/tensors"

	"natsbench/llama"
	"natsbench/nats"
)

// Fingerprint identifies a base model: a SHA-256 of its architecture (the parsed config) — adapters refuse to
// load onto another architecture. The compute dtype (Config.DType) is not part of it: it is hashed as "float32", so
// scorers trained in bfloat16 load onto the model loaded in float32, and fingerprints written before bf16 training
// existed (always float32) are unchanged.
func Fingerprint(c llama.Config) string {
	c.DType = "float32"
	b, _ := json.Marshal(c)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// SaveAdapter writes the scorers alone as safetensors (float32) with the base model's identity and the NAtS
// settings in the metadata, atomically.
func (t *Trainer) SaveAdapter(path string) error {
	names := t.Scorers.Names()
	shapes := make([][]int, len(names))
	data := make([][]float32, len(names))
	for i, s := range t.Scorers.Specs {
		shapes[i] = s.Dims
		data[i] = t.Scorers.Flat(i)
	}
	nc, _ := json.Marshal(t.Masker.Config())
	bc, _ := json.Marshal(t.Base.Config)
	meta := map[string]string{"format": "natsbench-nats-adapter/1", "base_model": t.Base.Source,
		"base_fingerprint": Fingerprint(t.Base.Config), "base_config": string(bc), "nats": string(nc), "step": fmt.Sprint(t.Step)}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := llama.WriteSafetensors(tmp, names, shapes, data, "F32", meta); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// LoadAdapter reads an adapter written by SaveAdapter onto a trainer of the same base model: the NAtS settings
// come from the file; a base model of another architecture or a missing scorer is an error naming the file (and,
// for adapters that record the base config, the fields that differ: layers, KV heads, …).
func LoadAdapter(path string, base *llama.Model) (*nats.Masker, *Trainer, error) {
	f, err := llama.OpenSafetensors(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	if f.Metadata["format"] != "natsbench-nats-adapter/1" {
		return nil, nil, fmt.Errorf("%s: not a natsbench NAtS adapter (format %q)", path, f.Metadata["format"])
	}
	if got, want := f.Metadata["base_fingerprint"], Fingerprint(base.Config); got != want {
		return nil, nil, fmt.Errorf("%s: adapter trained on base model %q (fingerprint %s), not on %q (%s)%s",
			path, f.Metadata["base_model"], got, base.Source, want, configDiff(f.Metadata["base_config"], base.Config))
	}
	var nc nats.Config
	if err := json.Unmarshal([]byte(f.Metadata["nats"]), &nc); err != nil {
		return nil, nil, fmt.Errorf("%s: nats settings: %w", path, err)
	}
	m, err := nats.New(nc)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	t := &Trainer{Cfg: DefaultConfig(), Base: base, Masker: m, weights: base.Params.Values}
	t.Scorers = emptyScorers(base.Config, m)
	for i, s := range t.Scorers.Specs {
		data, dims, err := f.ReadFloat32(s.Name)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", path, err)
		}
		if fmt.Sprint(dims) != fmt.Sprint(s.Dims) {
			return nil, nil, fmt.Errorf("%s: scorer %q has dims %v, the base model wants %v", path, s.Name, dims, s.Dims)
		}
		t.Scorers.Values[i] = tensors.FromFlatDataAndDimensions(data, dims...)
	}
	return m, t, nil
}

// configDiff lists the fields of the recorded base config (JSON) that differ from c, as ": Field adapter ≠ model,
// …", or "" when nothing was recorded.
func configDiff(recorded string, c llama.Config) string {
	var a, b map[string]any
	if recorded == "" || json.Unmarshal([]byte(recorded), &a) != nil {
		return ""
	}
	cb, _ := json.Marshal(c)
	json.Unmarshal(cb, &b)
	var diffs []string
	for _, k := range slices.Sorted(maps.Keys(b)) {
		if k == "DType" {
			continue // not part of the fingerprint
		}
		if av, bv := fmt.Sprint(a[k]), fmt.Sprint(b[k]); av != bv {
			diffs = append(diffs, fmt.Sprintf("%s %s (adapter) ≠ %s (model)", k, av, bv))
		}
	}
	if len(diffs) == 0 {
		return ""
	}
	return ": " + strings.Join(diffs, ", ")
}
