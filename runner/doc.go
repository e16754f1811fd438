// Command runner runs natsbench sweeps: it loads and expands a sweep file (package sweeps), validates every
// run before training any, skips runs already DONE, hands partial ones to experiments.Run (which resumes
// from their checkpoint), records each run's manifest (status failed with the error when a run fails, and
// the sweep goes on), and finally collects the results into tables and figures.
//
// Usage:
//
//	go run ./runner -sweep pg19.toml [-smoke] [-only GLOB] [-dry-run] [-force] [-out out] [-backend go|xla:cuda]
//	go run ./runner -sweep pg19.toml -devices 0,1 [-backend xla:cuda]     (one child runner per device)
//	go run ./runner -sweep pg19.toml -launcher slurm [-slurm-…] [-dry-run] (job arrays, see launch.go)
//	go run ./runner status -sweep pg19.toml [-out out]                    (folders + squeue/sacct)
//	go run ./runner report -sweep pg19.toml [-smoke] [-all] [-out out]
//	go run ./runner compare [-x kv_fraction] [-y ppl] [-task pg19] [-name NAME] SEL SEL...
//
// A bare sweep name resolves under sweeps/. Run folders are out/<sweep>/<run-id>/{config.toml,
// manifest.json, ckpt/, metrics.parquet, DONE}; report writes out/<sweep>/{runs.parquet, summary.md,
// figures/}. Ctrl-C cancels the running run (it resumes on the next launch). The exit status is 0 when
// every selected run is done, 1 when a run failed or the sweep was interrupted, 2 on bad input.
//
// The loop (runSweep) takes an Executor, so tests drive it with a fake that writes metrics and crashes.
package main
