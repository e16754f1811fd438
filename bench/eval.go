package main

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"

	"github.com/parquet-go/parquet-go"

	"natsbench/evaluate"
	"natsbench/kvcache"
	"natsbench/model"
	"natsbench/nats"
	"natsbench/policy"
)

// EvalResult is one streaming-evaluation throughput row.
type EvalResult struct {
	Config       string  `parquet:"config,dict"`
	Method       string  `parquet:"method,dict"`
	Backend      string  `parquet:"backend,dict"`
	DType        string  `parquet:"dtype,dict"`
	Context      int32   `parquet:"context"`
	Batch        int32   `parquet:"batch"`
	TokensPerSec float64 `parquet:"tokens_per_second"`
	Seconds      float64 `parquet:"seconds"`
	KVFraction   float64 `parquet:"kv_fraction"`
}

// benchEval decodes batch windows of random tokens (untrained weights: the throughput does not depend on them,
// the KV fraction does) with each method's real cache and reports decoded tokens per second.
func benchEval(backendSpec, configs, methods string, ctx, batch int, bf16 bool, out string) error {
	backend, err := model.NewBackend(backendSpec)
	if err != nil {
		return err
	}
	var rows []EvalResult
	for _, cn := range strings.Split(configs, ",") {
		s, ok := shapes(bf16)[cn]
		if !ok {
			return fmt.Errorf("-configs: unknown shape %q", cn)
		}
		cfg := s.model
		if cfg.MaxSeqLen < ctx {
			cfg.MaxSeqLen = ctx
		}
		r := rand.New(rand.NewPCG(2, 2))
		ws := make([][]int32, batch)
		for i := range ws {
			ws[i] = make([]int32, ctx+1)
			for j := range ws[i] {
				ws[i][j] = int32(r.IntN(50257))
			}
		}
		for _, mn := range strings.Split(methods, ",") {
			var m evaluate.Method
			m.Name = mn
			switch mn {
			case "full":
			case "nats":
				nm, _ := nats.New(nats.DefaultConfig())
				m.Masker, m.Evictor = nm, policy.NAtS{Window: 16, Chunk: 1}
			case "h2o":
				m.Evictor = policy.H2O{Budget: ctx / 4, Recent: ctx / 8}
			case "streamingllm":
				m.Masker, m.Evictor = model.SinkWindow{Sinks: 4, Budget: ctx / 4}, policy.StreamingLLM{Sinks: 4, Budget: ctx / 4}
			default:
				return fmt.Errorf("-methods: unknown method %q", mn)
			}
			var _ kvcache.Evictor = m.Evictor
			p := model.NewParams(model.Specs(cfg, m.Masker), 1)
			// Warm-up (compile) on one short window, then the timed run.
			if _, err := evaluate.Streaming(backend, cfg, p, m, [][]int32{ws[0][:9]}, evaluate.Options{Batch: batch}); err != nil {
				return err
			}
			res, err := evaluate.Streaming(backend, cfg, p, m, ws, evaluate.Options{Batch: batch})
			if err != nil {
				return err
			}
			row := EvalResult{Config: cn, Method: mn, Backend: backend.Name(), DType: cfg.DType, Context: int32(ctx), Batch: int32(batch),
				TokensPerSec: float64(res.Tokens) / res.Seconds, Seconds: res.Seconds, KVFraction: res.KVFraction}
			rows = append(rows, row)
			fmt.Printf("eval %-6s %-12s ctx %d batch %d: %8.0f tok/s (kv fraction %.3f)\n", cn, mn, ctx, batch, row.TokensPerSec, row.KVFraction)
		}
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	path := filepath.Join(out, "eval_throughput.parquet")
	if err := parquet.WriteFile(path+".tmp", rows); err != nil {
		return err
	}
	return os.Rename(path+".tmp", path)
}
