package experiments

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"

	"natsbench/pg19"
	"natsbench/results"
)

// Row is a result row (results.Row).
type Row = results.Row

// dataset gives a run its PG-19 token streams: a text folder is tokenised once into a cache folder under the
// output root (keyed by the source's absolute path), a prepared shard folder is read directly.
type dataset struct {
	dir, cache string
	log        io.Writer
	shards     map[string]*pg19.Shard
}

func prepareData(dc DataConfig, outRoot string, log io.Writer) (*dataset, error) {
	abs, err := filepath.Abs(dc.Dir)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256([]byte(abs))
	cache := filepath.Join(outRoot, "_data", filepath.Base(abs)+"-"+hex.EncodeToString(sum[:4]))
	return &dataset{dir: dc.Dir, cache: cache, log: log, shards: map[string]*pg19.Shard{}}, nil
}

func (d *dataset) shard(split string) (*pg19.Shard, error) {
	if s, ok := d.shards[split]; ok {
		return s, nil
	}
	s, err := pg19.Load(d.dir, split, d.cache, d.log)
	if err != nil {
		return nil, fmt.Errorf("data.dir = %q: %w", d.dir, err)
	}
	d.shards[split] = s
	return s, nil
}

// sampler returns a deterministic batch function of (seed, micro-step, batch size) over the split.
func (d *dataset) sampler(split string, seqLen int) (func(seed uint64, step int64, batch int) ([]int32, []int32), error) {
	s, err := d.shard(split)
	if err != nil {
		return nil, err
	}
	sm, err := pg19.NewSampler(s.Tokens, seqLen)
	if err != nil {
		return nil, fmt.Errorf("data.dir = %q, split %s: %w", d.dir, split, err)
	}
	return sm.Batch, nil
}

// windows returns the evaluation windows (context+1 tokens each) of a split (NATS-SPEC.md §2.5).
func (d *dataset) windows(split string, context, max int) ([][]int32, error) {
	s, err := d.shard(split)
	if err != nil {
		return nil, err
	}
	ws := pg19.Windows(len(s.Tokens), context, max)
	if len(ws) == 0 {
		return nil, fmt.Errorf("data.dir = %q: split %s has %d tokens, fewer than one window of eval.context_len+1 = %d",
			d.dir, split, len(s.Tokens), context+1)
	}
	out := make([][]int32, len(ws))
	for i, w := range ws {
		seq := make([]int32, w.Context+1)
		for k := range seq {
			seq[k] = int32(s.Tokens[w.Start+k])
		}
		out[i] = seq
	}
	return out, nil
}

func writeMetrics(path string, info runInfo, rows []Row) error {
	return results.WriteRows(path, rows)
}

// Training rows survive a crash: they are written next to each checkpoint and read back on resume.
const trainRowsFile = "train_rows.parquet"

func writeTrainRows(dir string, rows []Row) error {
	return results.WriteRows(filepath.Join(dir, trainRowsFile), rows)
}

func readTrainRows(dir string) ([]Row, error) {
	path := filepath.Join(dir, trainRowsFile)
	if _, err := os.Stat(path); os.IsNotExist(err) {
		return nil, nil
	}
	return results.ReadRows(path)
}

// truncateRows drops training rows past step (a resumed run redoes those steps).
func truncateRows(rows []Row, step int64) []Row {
	out := rows[:0]
	for _, r := range rows {
		if r.Step <= step {
			out = append(out, r)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Step < out[j].Step })
	return out
}
