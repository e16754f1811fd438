package results

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/parquet-go/parquet-go"
)

// RunsFile is the runs table of a sweep, out/<sweep>/runs.parquet.
const RunsFile = "runs.parquet"

// RunRecord is one row of runs.parquet: a run's manifest flattened.
type RunRecord struct {
	RunID        string    `parquet:"run_id,dict"`
	Sweep        string    `parquet:"sweep,dict"`
	Key          string    `parquet:"key,dict"`
	Name         string    `parquet:"name,dict"`
	Kind         string    `parquet:"kind,dict"`
	Seed         int64     `parquet:"seed"`
	FromID       string    `parquet:"from_id,dict"`
	FromKey      string    `parquet:"from_key,dict"`
	Status       string    `parquet:"status,dict"`
	Error        string    `parquet:"error"`
	Smoke        bool      `parquet:"smoke"`
	Commit       string    `parquet:"commit,dict"`
	Dirty        bool      `parquet:"dirty"`
	GoMLXVersion string    `parquet:"gomlx_version,dict"`
	Backend      string    `parquet:"backend,dict"`
	Device       string    `parquet:"device,dict"`
	DType        string    `parquet:"dtype,dict"`
	Start        time.Time `parquet:"start,timestamp(millisecond)"`
	End          time.Time `parquet:"end,timestamp(millisecond)"`
	GridJSON     string    `parquet:"grid_json"`   // the run's grid values as JSON (path → value)
	ConfigJSON   string    `parquet:"config_json"` // resolved configuration as JSON
}

// Record flattens a manifest into a runs-table row.
func Record(m Manifest) RunRecord {
	grid, _ := json.Marshal(m.Grid)
	cfg, _ := json.Marshal(m.Config)
	return RunRecord{RunID: m.RunID, Sweep: m.Sweep, Key: m.Key, Name: m.Name, Kind: m.Kind, Seed: m.Seed, FromID: m.FromID,
		FromKey: m.FromKey, Status: m.Status, Error: m.Error, Smoke: m.Smoke, Commit: m.Commit, Dirty: m.Dirty,
		GoMLXVersion: m.GoMLXVersion, Backend: m.Backend, Device: m.Device, DType: m.DType, Start: m.Start, End: m.End,
		GridJSON: string(grid), ConfigJSON: string(cfg)}
}

// WriteRuns writes a runs table atomically.
func WriteRuns(path string, runs []Manifest) error {
	recs := make([]RunRecord, len(runs))
	for i, m := range runs {
		recs[i] = Record(m)
	}
	return WriteFileAtomic(path, func(w io.Writer) error { return parquet.Write(w, recs) })
}

// ReadRuns reads a runs table.
func ReadRuns(path string) ([]RunRecord, error) { return readParquet[RunRecord](path) }

// Collection is what a sweep's output folder holds.
type Collection struct {
	Dir     string     // out/<sweep>
	Rows    []Row      // every run's metrics.parquet, unioned
	Runs    []Manifest // every run's manifest, sorted by key
	Missing []string   // run folders with a manifest but no metrics.parquet (running, failed, partial)
}

// CollectDir reads out/<sweep>/*/manifest.json and metrics.parquet. A corrupt manifest or Parquet file is an
// error naming the file; a folder without results is only listed in Missing.
func CollectDir(outDir, sweep string) (*Collection, error) {
	dir := filepath.Join(outDir, sweep)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("collect %s: %w", sweep, err)
	}
	c := &Collection{Dir: dir}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		rd := filepath.Join(dir, e.Name())
		m, err := ReadManifest(rd)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		c.Runs = append(c.Runs, m)
		mp := filepath.Join(rd, MetricsFile)
		if _, err := os.Stat(mp); err != nil {
			c.Missing = append(c.Missing, m.Key)
			continue
		}
		rows, err := ReadRows(mp)
		if err != nil {
			return nil, err
		}
		c.Rows = append(c.Rows, rows...)
	}
	sort.Slice(c.Runs, func(i, j int) bool { return c.Runs[i].Key < c.Runs[j].Key })
	sort.Strings(c.Missing)
	return c, nil
}

// Configs maps run ID → resolved configuration, for figures that label or group by config paths.
func (c *Collection) Configs() map[string]map[string]any {
	out := make(map[string]map[string]any, len(c.Runs))
	for _, m := range c.Runs {
		out[m.RunID] = m.Config
	}
	return out
}
