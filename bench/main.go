// Command bench measures training-step throughput (tokens/s) of the natsbench LM with and without NAtS for
// the tiny, paper (d256, 8 layers, seq 1024) and GPT-2-small (d768, 12 layers, seq 1024, batch 8) shapes, and
// writes the table as Parquet (results/bench/train_step.parquet) and markdown. On the GPU it is run beside
// bench/torch_bench.py, which times the same models in PyTorch in the same device call.
//
//	go run ./bench -backend go -configs tiny
//	go build -tags xla -o natsbench-bench ./bench && ./natsbench-bench -backend xla:cuda -configs paper,gpt2s
//
// -data-parallel 1,2 measures each case on 1 and on 2 devices (train.data_parallel); the global batch is the
// shape's, or the shape's × devices with -scale-batch (the same batch per device). Tokens/s count the global batch.
package main

import (
	"encoding/csv"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gomlx/compute"
	"github.com/parquet-go/parquet-go"

	"natsbench/model"
	"natsbench/nats"
	"natsbench/train"
)

// Result is one benchmark row.
type Result struct {
	Impl         string  `parquet:"impl,dict"`
	Config       string  `parquet:"config,dict"`
	Method       string  `parquet:"method,dict"`
	DType        string  `parquet:"dtype,dict"`
	Backend      string  `parquet:"backend,dict"`
	Batch        int32   `parquet:"batch"`
	SeqLen       int32   `parquet:"seq_len"`
	Params       int64   `parquet:"params"`
	MsPerStep    float64 `parquet:"ms_per_step"`
	TokensPerSec float64 `parquet:"tokens_per_second"`
	CompileSec   float64 `parquet:"compile_seconds"`
	Steps        int32   `parquet:"steps"`
	Devices      int32   `parquet:"devices"` // data-parallel devices of the step (the batch is the global batch)
}

type shape struct {
	name  string
	model model.Config
	batch int
	seq   int
}

func shapes(bf16 bool) map[string]shape {
	dt := "float32"
	if bf16 {
		dt = "bfloat16"
	}
	paper := model.DefaultConfig()
	paper.DType = dt
	g2 := model.DefaultConfig()
	g2.DModel, g2.NLayers, g2.NHeads, g2.DType = 768, 12, 12, dt
	tiny := model.Config{VocabSize: 50304, DModel: 64, NLayers: 2, NHeads: 4, FFNMult: 4, MaxSeqLen: 256, RopeTheta: 500000, RopeScaling: "llama3", DType: "float32", TieEmbeddings: true}
	smoke := tiny
	smoke.DModel, smoke.NHeads = 32, 2
	return map[string]shape{
		"smoke": {"smoke", smoke, 4, 64},
		"tiny":  {"tiny", tiny, 4, 128},
		"paper": {"paper", paper, 16, 1024},
		"gpt2s": {"gpt2s", g2, 8, 1024},
	}
}

func main() {
	backendF := flag.String("backend", "", "GoMLX backend (go, xla:cuda)")
	configs := flag.String("configs", "tiny", "comma-separated shapes: smoke, tiny, paper, gpt2s")
	methods := flag.String("methods", "full,nats", "comma-separated: full, nats, nats-materialized (NAtS with the materialised mask path), nats-perterm, nats-stacked, nats-bf16dm, nats-twopass (NAtS with a named formulation of the carrier's backward pass: NATSBENCH_CARRIER, model.CarrierVariants); timing diagnostics: full-bias (full attention through the biased kernel, zero bias), nats-nocarrier (NAtS without the carrier's gradient)")
	steps := flag.Int("steps", 10, "timed steps per case")
	warm := flag.Int("warmup", 2, "untimed steps (the first compiles)")
	bf16 := flag.Bool("bf16", false, "bfloat16 compute (GPU)")
	out := flag.String("out", "results/bench", "output folder")
	torchCSV := flag.String("torch-csv", "", "convert bench/torch_bench.py's CSV to Parquet in -out and exit")
	vocabOver := flag.Int("vocab", 0, "override the vocabulary size (diagnostics)")
	layersOver := flag.Int("layers", 0, "override the number of layers (diagnostics)")
	batchOver := flag.Int("batch", 0, "override the batch size (a shape that does not fit the machine's memory, e.g. paper on a 24 GB CPU machine)")
	evalMode := flag.Bool("eval", false, "measure streaming-evaluation throughput (decode tokens/s) instead of training")
	evalCtx := flag.Int("eval-context", 256, "context length of the -eval windows")
	evalBatch := flag.Int("eval-batch", 8, "windows decoded together in -eval")
	dpList := flag.String("data-parallel", "1", "comma-separated device counts to measure each case on (train.data_parallel)")
	scaleBatch := flag.Bool("scale-batch", false, "with -data-parallel: global batch = the shape's batch × devices")
	flag.Parse()
	// bench sets these per method (and clears them after it); a value from the caller would silently apply to the
	// first method only.
	for _, v := range []string{"NATSBENCH_MASKED_ATTENTION", "NATSBENCH_DIAG", "NATSBENCH_CARRIER"} {
		if os.Getenv(v) != "" {
			fail(fmt.Errorf("%s is set in the environment: bench sets it per method (-methods); unset it", v))
		}
	}
	if *evalMode {
		if err := benchEval(*backendF, *configs, *methods, *evalCtx, *evalBatch, *bf16, *out); err != nil {
			fail(err)
		}
		return
	}
	if *torchCSV != "" {
		if err := convertTorch(*torchCSV, *out); err != nil {
			fail(err)
		}
		return
	}
	backend, err := model.NewBackend(*backendF)
	if err != nil {
		fail(err)
	}
	sh := shapes(*bf16)
	var dps []int
	for _, f := range strings.Split(*dpList, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			fail(fmt.Errorf("-data-parallel: %q is not a device count", f))
		}
		if n > backend.NumDevices() {
			fail(fmt.Errorf("-data-parallel %d: backend %s has %d device(s)", n, backend.Name(), backend.NumDevices()))
		}
		dps = append(dps, n)
	}
	var rows []Result
	for _, cn := range strings.Split(*configs, ",") {
		s, ok := sh[cn]
		if !ok {
			fail(fmt.Errorf("-configs: unknown shape %q", cn))
		}
		if *vocabOver > 0 {
			s.model.VocabSize = *vocabOver
			s.name += fmt.Sprintf("-v%d", *vocabOver)
		}
		if *layersOver > 0 {
			s.model.NLayers = *layersOver
			s.name += fmt.Sprintf("-l%d", *layersOver)
		}
		if *batchOver > 0 {
			s.batch = *batchOver
			s.name += fmt.Sprintf("-b%d", *batchOver)
		}
		for _, mn := range strings.Split(*methods, ",") {
			var m model.Masker
			switch mn {
			case "full":
			case "full-bias": // diagnostics: full attention through the biased kernel NAtS uses (an all-zero bias)
				os.Setenv("NATSBENCH_DIAG", "fullbias")
			case "nats", "nats-materialized", "nats-nocarrier", "nats-perterm", "nats-stacked", "nats-bf16dm", "nats-twopass":
				switch mn {
				case "nats-materialized":
					os.Setenv("NATSBENCH_MASKED_ATTENTION", "materialized")
				case "nats-nocarrier": // diagnostics: the NAtS forward and mask, no carrier gradient
					os.Setenv("NATSBENCH_DIAG", "nocarrier")
				case "nats-perterm", "nats-stacked", "nats-bf16dm", "nats-twopass": // the carrier's backward pass, reformulated (model/carrier.go)
					os.Setenv("NATSBENCH_CARRIER", strings.TrimPrefix(mn, "nats-"))
				}
				nc := nats.DefaultConfig()
				nm, err := nats.New(nc)
				if err != nil {
					fail(err)
				}
				m = nm
			default:
				fail(fmt.Errorf("-methods: unknown method %q", mn))
			}
			for _, dp := range dps {
				res, err := benchStep(backend, s, m, mn, dp, *scaleBatch, *warm, *steps)
				if err != nil {
					fail(err)
				}
				rows = append(rows, res)
				fmt.Printf("%-6s %-17s %-8s %d dev batch %3d %9.1f ms/step %10.0f tok/s (warm-up %.1fs)\n", res.Config, res.Method,
					res.DType, res.Devices, res.Batch, res.MsPerStep, res.TokensPerSec, res.CompileSec)
			}
			os.Unsetenv("NATSBENCH_MASKED_ATTENTION")
			os.Unsetenv("NATSBENCH_DIAG")
			os.Unsetenv("NATSBENCH_CARRIER")
		}
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		fail(err)
	}
	path := filepath.Join(*out, "train_step_gomlx.parquet")
	tmp := path + ".tmp"
	if err := parquet.WriteFile(tmp, rows); err != nil {
		fail(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		fail(err)
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].Config < rows[j].Config })
	fmt.Println("wrote", path)
}

// benchStep times the training step of one case on dp devices: warm untimed steps (the first compiles), then
// `steps` timed steps on one batch.
func benchStep(backend compute.Backend, s shape, m model.Masker, method string, dp int, scaleBatch bool, warm, steps int) (Result, error) {
	batchN := s.batch
	if scaleBatch {
		batchN *= dp
	}
	tc := train.DefaultConfig()
	tc.BatchSize, tc.SeqLen, tc.Steps, tc.WarmupSteps, tc.DataParallel = batchN, s.seq, 1<<30, 10, dp
	tr, err := train.New(backend, s.model, m, tc, 1)
	if err != nil {
		return Result{}, err
	}
	r := rand.New(rand.NewPCG(1, 1))
	batch := func() ([][]int32, [][]int32) {
		in, tg := make([]int32, batchN*s.seq), make([]int32, batchN*s.seq)
		for i := range in {
			in[i], tg[i] = int32(r.IntN(min(50257, s.model.VocabSize))), int32(r.IntN(min(50257, s.model.VocabSize)))
		}
		return [][]int32{in}, [][]int32{tg}
	}
	t0 := time.Now()
	for i := 0; i < warm; i++ {
		in, tg := batch()
		if _, err := tr.TrainStep(in, tg); err != nil {
			return Result{}, err
		}
	}
	compile := time.Since(t0).Seconds()
	in, tg := batch()
	t1 := time.Now()
	for i := 0; i < steps; i++ {
		if _, err := tr.TrainStep(in, tg); err != nil {
			return Result{}, err
		}
	}
	el := time.Since(t1).Seconds()
	return Result{Impl: "natsbench-gomlx", Config: s.name, Method: method, DType: s.model.DType, Backend: backend.Name(),
		Batch: int32(batchN), SeqLen: int32(s.seq), Params: int64(tr.Params.Count()), MsPerStep: 1000 * el / float64(steps),
		TokensPerSec: float64(steps*batchN*s.seq) / el, CompileSec: compile, Steps: int32(steps), Devices: int32(dp)}, nil
}

// convertTorch turns the PyTorch benchmark's CSV into Parquet rows of the same schema.
func convertTorch(path, out string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if len(recs) < 2 {
		return fmt.Errorf("%s: no rows", path)
	}
	col := map[string]int{}
	for i, h := range recs[0] {
		col[h] = i
	}
	get := func(r []string, k string) string {
		i, ok := col[k]
		if !ok {
			fail(fmt.Errorf("%s: column %q missing", path, k))
		}
		return r[i]
	}
	num := func(r []string, k string) float64 {
		v, err := strconv.ParseFloat(get(r, k), 64)
		if err != nil {
			fail(fmt.Errorf("%s: column %q: %w", path, k, err))
		}
		return v
	}
	var rows []Result
	for _, r := range recs[1:] {
		rows = append(rows, Result{Impl: get(r, "impl"), Config: get(r, "config"), Method: get(r, "method"), DType: get(r, "dtype"),
			Backend: get(r, "backend"), Batch: int32(num(r, "batch")), SeqLen: int32(num(r, "seq_len")), Params: int64(num(r, "params")),
			MsPerStep: num(r, "ms_per_step"), TokensPerSec: num(r, "tokens_per_second"), CompileSec: num(r, "compile_seconds"), Steps: int32(num(r, "steps")), Devices: 1})
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	dst := filepath.Join(out, "train_step_torch.parquet")
	if err := parquet.WriteFile(dst+".tmp", rows); err != nil {
		return err
	}
	return os.Rename(dst+".tmp", dst)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "bench:", err)
	os.Exit(1)
}
