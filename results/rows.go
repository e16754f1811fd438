package results

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/parquet-go/parquet-go"
)

// MetricsFile is the name of a run's metrics file inside its folder.
const MetricsFile = "metrics.parquet"

// Row is one measurement in long format (STYLE.md B5): one Parquet row per (run, task, metric, step, x).
type Row struct {
	RunID  string    `parquet:"run_id,dict"` // content ID of the run
	Sweep  string    `parquet:"sweep,dict"`  // sweep name
	Key    string    `parquet:"key,dict"`    // canonical key, name[,path=value…],seed=N
	Name   string    `parquet:"name,dict"`   // [[run]] name
	Method string    `parquet:"method,dict"` // full | streamingllm | h2o | tova | nats
	Seed   int32     `parquet:"seed"`
	Task   string    `parquet:"task,dict"`   // train, pg19, longbench/<dataset>, latency
	Split  string    `parquet:"split,dict"`  // train, valid, test
	Metric string    `parquet:"metric,dict"` // a name registered in metrics.go
	Step   int64     `parquet:"step"`        // optimizer step when measured; -1 for a final evaluation
	X      float64   `parquet:"x"`           // second coordinate, meaning given by the registry; NaN if none
	Value  float64   `parquet:"value"`       // raw, unrounded
	N      int64     `parquet:"n"`           // tokens or examples averaged (weights for re-aggregation)
	Time   time.Time `parquet:"time,timestamp(millisecond)"`
}

// CheckRows reports the first row whose metric is not registered.
func CheckRows(rows []Row) error {
	seen := map[string]bool{}
	for _, r := range rows {
		if seen[r.Metric] {
			continue
		}
		if _, err := LookupMetric(r.Metric); err != nil {
			return fmt.Errorf("run %s, task %s: %w", r.Key, r.Task, err)
		}
		seen[r.Metric] = true
	}
	return nil
}

// WriteRows writes rows to a Parquet file atomically after checking every metric name.
func WriteRows(path string, rows []Row) error {
	if err := CheckRows(rows); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return WriteFileAtomic(path, func(w io.Writer) error {
		return parquet.Write(w, rows)
	})
}

// ReadRows reads and concatenates the rows of Parquet files; a missing or corrupt file is an error naming it.
func ReadRows(paths ...string) ([]Row, error) {
	var out []Row
	for _, p := range paths {
		rows, err := readParquet[Row](p)
		if err != nil {
			return nil, err
		}
		out = append(out, rows...)
	}
	return out, nil
}

// readParquet reads a whole Parquet file of T; the library must not take the process down on a corrupt file.
func readParquet[T any](path string) (rows []T, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read results: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read results: %w", err)
	}
	defer func() {
		if r := recover(); r != nil {
			rows, err = nil, fmt.Errorf("%s: corrupt Parquet file: %v", path, r)
		}
	}()
	rows, err = parquet.Read[T](f, st.Size())
	if err != nil {
		return nil, fmt.Errorf("%s: corrupt or unreadable Parquet file: %w", path, err)
	}
	return rows, nil
}
