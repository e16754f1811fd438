package plots

import (
	"bytes"
	"flag"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"natsbench/results"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// fakeSweep returns deterministic rows and configs shaped like the pg19 and latency sweeps.
func fakeSweep() ([]results.Row, Configs) {
	rng := rand.New(rand.NewPCG(1, 1))
	var rows []results.Row
	cfgs := Configs{}
	add := func(name, method string, grid map[string]any, seed int, kv, ppl float64) string {
		key := name
		cfg := map[string]any{"method": map[string]any{"name": method}}
		for _, p := range []string{"method.budget", "method.lambda"} {
			if v, ok := grid[p]; ok {
				key += "," + p + "=" + formatValue(v)
				cfg["method"].(map[string]any)[strings.TrimPrefix(p, "method.")] = v
			}
		}
		key += ",seed=" + string(rune('0'+seed))
		id := strings.ReplaceAll(key, ",", "_")
		cfgs[id] = cfg
		row := func(task, metric string, step int64, x, v float64) {
			rows = append(rows, results.Row{RunID: id, Sweep: "pg19", Key: key, Name: name, Method: method, Seed: int32(seed),
				Task: task, Split: "test", Metric: metric, Step: step, X: x, Value: v, N: 1000})
		}
		row("pg19", "ppl", -1, 2048, ppl+rng.Float64())
		row("pg19", "kv_fraction", -1, 2048, kv+0.01*rng.Float64())
		for _, b := range []float64{256, 512} {
			row("pg19", "nll_bucket", -1, b, math.Log(ppl)+b/1000)
		}
		if method == "full" || method == "nats" {
			for step := int64(1); step <= 3; step++ {
				row("train", "loss", step, math.NaN(), 10/float64(step)+rng.Float64())
			}
		}
		return id
	}
	for seed := range 3 {
		add("full", "full", nil, seed, 1, 30)
		for i, l := range []float64{1e-7, 5e-7} {
			add("nats", "nats", map[string]any{"method.lambda": l}, seed, 0.3-0.1*float64(i), 31+float64(i))
		}
		for _, b := range []int64{128, 256} {
			add("h2o", "h2o", map[string]any{"method.budget": b}, seed, float64(b)/2048, 40-float64(b)/64)
		}
	}
	for _, m := range []string{"full", "nats"} {
		for _, pl := range []float64{2048, 4096} {
			for _, metric := range []string{"prefill_ms", "decode_ms_per_token", "peak_mem_bytes"} {
				rows = append(rows, results.Row{RunID: "lat-" + m, Sweep: "latency", Key: m + ",seed=0", Name: m, Method: m,
					Task: "latency", Split: "test", Metric: metric, Step: -1, X: pl, Value: pl / 100 * float64(len(m)), N: 10})
			}
		}
	}
	return rows, cfgs
}

var specs = []Spec{
	{ID: "pg19_ppl_vs_kv", X: "kv_fraction", Y: "ppl", Series: "name", Label: "method.lambda,method.budget", Task: "pg19", LogX: true, ErrorBars: "ci95"},
	{ID: "pg19_ppl_vs_kv_minmax", X: "kv_fraction", Y: "ppl", Series: "method", Label: "method.budget", Task: "pg19", ErrorBars: "minmax"},
	{ID: "nll_by_position", X: "x", Y: "nll_bucket", Series: "key", Task: "pg19"},
	{ID: "train_loss", Kind: "curve", Y: "loss", Series: "name", Task: "train", ErrorBars: "none"},
	{ID: "train_loss_per_run", Kind: "curve", Y: "loss", Series: "run", Task: "train", ErrorBars: "none"},
	{ID: "ppl_vs_budget", X: "method.budget", Y: "ppl", Task: "pg19"},
	{ID: "latency", X: "x", Panels: []string{"prefill_ms", "decode_ms_per_token", "peak_mem_bytes"}, Task: "latency", LogX: true, LogY: true},
}

// TestFigureDataGoldens pins the plotted numbers of each figure kind (refresh with -update).
func TestFigureDataGoldens(t *testing.T) {
	rows, cfgs := fakeSweep()
	for _, spec := range specs {
		t.Run(spec.ID, func(t *testing.T) {
			var buf bytes.Buffer
			for _, ps := range PanelSpecs(spec) {
				s, err := Data(ps, rows, cfgs)
				if err != nil {
					t.Fatal(err)
				}
				if len(s) == 0 {
					t.Fatal("no series")
				}
				buf.WriteString("# " + ps.Y + "\n")
				if err := WriteCSV(&buf, s); err != nil {
					t.Fatal(err)
				}
			}
			golden := filepath.Join("testdata", spec.ID+".golden.csv")
			if *update {
				os.WriteFile(golden, buf.Bytes(), 0o644)
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./plots -update)", err)
			}
			if buf.String() != string(want) {
				t.Errorf("data of %s changed (go test ./plots -update if intended):\ngot:\n%s\nwant:\n%s", spec.ID, buf.String(), want)
			}
		})
	}
}

func TestDataProperties(t *testing.T) {
	rows, cfgs := fakeSweep()
	s, err := Data(specs[0], rows, cfgs)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]Series{}
	for _, x := range s {
		byName[x.Name] = x
	}
	if len(byName["nats"].Points) != 2 || byName["nats"].Points[0].Label != "5e-07" || byName["nats"].Points[0].N != 3 {
		t.Errorf("nats series: %+v", byName["nats"])
	}
	for _, x := range s {
		for _, p := range x.Points {
			if !(p.Lo <= p.Y && p.Y <= p.Hi) {
				t.Errorf("%s: error bar %v..%v excludes %v", x.Name, p.Lo, p.Hi, p.Y)
			}
		}
	}
	// names keeps only the runs named (here the NAtS series alone).
	only, err := Data(Spec{ID: "names", X: "kv_fraction", Y: "ppl", Task: "pg19", Names: []string{"nats"}}, rows, cfgs)
	if err != nil {
		t.Fatal(err)
	}
	if len(only) != 1 || only[0].Name != "nats" || len(only[0].Points) != len(byName["nats"].Points) {
		t.Errorf("names = [nats]: got %d series %+v", len(only), only)
	}
	if _, err := Data(Spec{ID: "bad", X: "kv_fraction", Y: "ppx"}, rows, cfgs); err == nil || !strings.Contains(err.Error(), `did you mean`) {
		t.Errorf("unknown metric: %v", err)
	}
}

// TestRender is the render smoke test: the files exist, are non-empty, and the PNG has its signature.
func TestRender(t *testing.T) {
	rows, cfgs := fakeSweep()
	dir := t.TempDir()
	for _, spec := range []Spec{specs[0], specs[6]} {
		paths, err := Figure(spec, rows, cfgs, dir, "png", "svg")
		if err != nil {
			t.Fatal(err)
		}
		if len(paths) != 3 {
			t.Fatalf("paths %v", paths)
		}
		for _, p := range paths {
			b, err := os.ReadFile(p)
			if err != nil || len(b) < 100 {
				t.Fatalf("%s: %v, %d bytes", p, err, len(b))
			}
			if strings.HasSuffix(p, ".png") && !bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")) {
				t.Errorf("%s is not a PNG", p)
			}
			if strings.HasSuffix(p, ".svg") && !bytes.Contains(b[:200], []byte("<svg")) {
				t.Errorf("%s is not an SVG", p)
			}
		}
	}
	// No data still renders (an empty plot), and log axes with non-positive values do not panic.
	if _, err := Render(Spec{ID: "empty", X: "x", Y: "ppl", LogX: true, LogY: true}, [][]Series{{{Name: "a", Points: []Point{{X: 0, Y: -1}}}}}, dir, "png"); err != nil {
		t.Fatal(err)
	}
}

func TestTables(t *testing.T) {
	rows, _ := fakeSweep()
	md := SummaryTable(rows, []string{"ppl", "kv_fraction"})
	for _, want := range []string{"| sweep | run | seeds | ppl | kv_fraction |", "| pg19 | nats,method.lambda=5e-07 | 3 |", "| latency | full | 1 | – | – |"} {
		if !strings.Contains(md, want) {
			t.Errorf("summary lacks %q:\n%s", want, md)
		}
	}
	lbRows := []results.Row{
		{RunID: "a", Sweep: "lb", Key: "full,seed=0", Task: "longbench/qasper", Metric: "qa_f1", Value: 20, N: 1},
		{RunID: "a", Sweep: "lb", Key: "full,seed=0", Task: "longbench/gov_report", Metric: "rouge_l", Value: 30, N: 1},
		{RunID: "b", Sweep: "lb", Key: "full,seed=1", Task: "longbench/qasper", Metric: "qa_f1", Value: 22, N: 1},
		{RunID: "b", Sweep: "lb", Key: "full,seed=1", Task: "longbench/gov_report", Metric: "rouge_l", Value: 30, N: 1},
	}
	// Latency rows (one per prompt length): the summary shows the longest prompt's value, not a mean over lengths;
	// other rows with several x (position buckets) are pooled.
	latRows := []results.Row{
		{RunID: "l", Sweep: "lat", Key: "nats,seed=0", Task: "latency", Metric: "cache_slots", Step: -1, X: 1024, Value: 256, N: 1},
		{RunID: "l", Sweep: "lat", Key: "nats,seed=0", Task: "latency", Metric: "cache_slots", Step: -1, X: 8192, Value: 1024, N: 1},
		{RunID: "l", Sweep: "lat", Key: "nats,seed=0", Task: "latency", Metric: "cache_slots", Step: -1, X: 4096, Value: 512, N: 1},
		{RunID: "l", Sweep: "lat", Key: "nats,seed=0", Task: "eval", Metric: "nll_bucket", Step: -1, X: 32, Value: 2, N: 1},
		{RunID: "l", Sweep: "lat", Key: "nats,seed=0", Task: "eval", Metric: "nll_bucket", Step: -1, X: 64, Value: 4, N: 1},
	}
	if md := SummaryTable(latRows, []string{"cache_slots", "nll_bucket"}); !strings.Contains(md, "| lat | nats | 1 | 1024 | 3 |") {
		t.Errorf("latency summary:\n%s", md)
	}
	lb := LongBenchTable(lbRows)
	if !strings.Contains(lb, "| sweep | run | seeds | gov_report | qasper | avg |") || !strings.Contains(lb, "| lb | full | 2 | 30 ± 0 | 21 ± 1.414 | 25.5 |") {
		t.Errorf("longbench table:\n%s", lb)
	}
}
