// Package archtest holds a test that enforces natsbench's package dependency rules (STYLE.md B1) with
// `go list -deps`: the leaves (sweeps, results, plots, pg19, longbench) never reach GoMLX, only the runner
// imports experiments, model never imports nats or policy, and sweeps/results/plots import no natsbench
// package but the ones the layout allows. It has no code of its own.
package archtest
