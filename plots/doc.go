// Package plots draws natsbench's figures and tables from result rows with gonum/plot.
//
// Each figure is computed in two steps so the numbers can be golden-tested apart from the pixels:
// Data turns rows into plotted series (one point per group of runs that differ only by seed, with the
// mean and error bars across seeds), and Render draws series to PNG, SVG and PDF. The figures of the
// NAtS paper: perplexity against the fraction of the KV cache kept (Figure 3: x = kv_fraction, y = ppl,
// one series per method, NAtS points labelled by λ), latency and peak memory against the prompt length
// (Figure 4: panels side by side via plot.Align and draw.Tiles), and training curves (loss against step).
// SummaryTable and LongBenchTable write markdown tables.
//
// Error bars: "ci95" is mean ± 1.96·s/√n with s the sample standard deviation over seeds (a normal
// approximation, zero-width with one seed); "minmax" spans the smallest and largest seed.
//
// Imports: natsbench/results, gonum/plot and the standard library; never GoMLX or sweeps (the runner
// converts a sweep's figure entries to Spec).
package plots
