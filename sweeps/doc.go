// Package sweeps reads sweep files (sweeps/*.toml) and expands them into runs.
//
// A sweep file has the top-level keys schema (= 1), name (= the file stem), kind, seeds, smoke, figure,
// base, grid and run (STYLE.md B4). Each [[run]] is deep-merged over [base]; its grid (the top-level
// [grid] plus the run's own) is expanded as a product, then crossed with the seeds (the run's own `seeds` when
// given, else the sweep's). Runs may share a name: they form one series (say a λ grid at seed 0 plus one λ at
// more seeds), as long as their keys differ. Every run gets a
// canonical key, `name[,path=value…],seed=N` with the grid paths sorted, and a content ID: the first 12 hex
// characters of the SHA-256 of the canonical JSON of {kind, resolved config, seed, ID of the `from` run}.
//
// A run with `from` reuses the checkpoint (and the [model] table) of another run at the same seed: a run
// of the same sweep named by its key without the seed ("full", "nats,method.lambda=5e-07"), or a run of
// another sweep file in the same folder ("pg19:full"). Expand orders runs so that sources come first and
// reports sources that point nowhere or loop.
//
// The smoke table maps dotted config paths to values that replace the resolved configuration of every run
// when the sweep runs with -smoke (a shrunken CPU check). A smoke path that names a grid path (of the
// top-level grid or of any run) replaces that grid's values in the runs that sweep it and leaves the
// other runs alone; the key "seeds" replaces every seed list. A run that -smoke collapses onto the
// configuration of another is run once.
//
// sweeps does not know the schema of the config tables (data, model, method, train, eval, latency, …): the
// experiments package decodes them strictly through Run.Decode, whose errors name the sweep file, the line,
// the run key and the dotted key.
//
// Imports: the standard library and github.com/BurntSushi/toml only; never GoMLX (internal/archtest).
package sweeps
