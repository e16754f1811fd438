// Package results stores and reads natsbench's numbers (STYLE.md B5).
//
// Every run writes its metrics as long-format rows, one Parquet row per (run, task, metric, step, x), to
// out/<sweep>/<run-id>/metrics.parquet; the runner writes the run's manifest.json and, last, its DONE
// marker. Collecting a sweep unions the runs' metrics.parquet files and builds runs.parquet (one row per
// run, from the manifests). Writes are atomic: a temporary file in the same folder, fsync, rename.
//
// Metric names are registered once in metrics.go with their unit, direction and the meaning of the x
// column; writing an unregistered metric is an error with a "did you mean" hint.
//
// Imports: the standard library and github.com/parquet-go/parquet-go only; never GoMLX.
package results
