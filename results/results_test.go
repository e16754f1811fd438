package results

import (
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func sampleRows() []Row {
	t0 := time.Date(2025, 1, 2, 3, 4, 5, 6_000_000, time.UTC)
	return []Row{
		{RunID: "abc123def456", Sweep: "pg19", Key: "nats,method.lambda=5e-07,seed=0", Name: "nats", Method: "nats", Seed: 0,
			Task: "train", Split: "train", Metric: "loss", Step: 10, X: math.NaN(), Value: 3.25, N: 4096, Time: t0},
		{RunID: "abc123def456", Sweep: "pg19", Key: "nats,method.lambda=5e-07,seed=0", Name: "nats", Method: "nats", Seed: 0,
			Task: "pg19", Split: "test", Metric: "ppl", Step: -1, X: 2048, Value: 31.4159, N: 1 << 20, Time: t0},
	}
}

func TestRowsRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), MetricsFile)
	want := sampleRows()
	if err := WriteRows(path, want); err != nil {
		t.Fatal(err)
	}
	got, err := ReadRows(path, path)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2*len(want) {
		t.Fatalf("read %d rows, want %d", len(got), 2*len(want))
	}
	for i, g := range got {
		w := want[i%len(want)]
		if !math.IsNaN(w.X) && g.X != w.X || math.IsNaN(w.X) != math.IsNaN(g.X) {
			t.Errorf("row %d: x = %v, want %v", i, g.X, w.X)
		}
		g.X, w.X = 0, 0
		if !g.Time.Equal(w.Time.Truncate(time.Millisecond)) {
			t.Errorf("row %d: time %v, want %v", i, g.Time, w.Time)
		}
		g.Time, w.Time = time.Time{}, time.Time{}
		if g != w {
			t.Errorf("row %d:\n got %+v\nwant %+v", i, g, w)
		}
	}
}

func TestUnknownMetric(t *testing.T) {
	rows := sampleRows()
	rows[1].Metric = "perplexity_x"
	err := WriteRows(filepath.Join(t.TempDir(), "m.parquet"), rows)
	if err == nil || !strings.Contains(err.Error(), `unknown metric "perplexity_x"`) || !strings.Contains(err.Error(), "m.parquet") {
		t.Fatalf("error: %v", err)
	}
	_, err = LookupMetric("kv_fration")
	if err == nil || !strings.Contains(err.Error(), `did you mean "kv_fraction"?`) {
		t.Fatalf("error: %v", err)
	}
	for _, m := range Metrics() {
		if m.Name == "" || strings.ToLower(m.Name) != m.Name || strings.Contains(m.Name, " ") {
			t.Errorf("bad metric name %q", m.Name)
		}
	}
}

func TestCorruptParquet(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.parquet")
	if err := WriteRows(good, sampleRows()); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(good)
	for name, data := range map[string][]byte{
		"garbage.parquet":   []byte("this is not parquet"),
		"truncated.parquet": b[:len(b)/2],
		"empty.parquet":     nil,
	} {
		p := filepath.Join(dir, name)
		os.WriteFile(p, data, 0o644)
		_, err := ReadRows(good, p)
		if err == nil || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: error %v does not name the file", name, err)
		}
	}
	if _, err := ReadRows(filepath.Join(dir, "missing.parquet")); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

// TestAtomicWrite: a failing write leaves the old file intact and no temporary file behind.
func TestAtomicWrite(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "x.parquet")
	if err := WriteRows(path, sampleRows()); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(path)
	err := WriteFileAtomic(path, func(w io.Writer) error {
		w.Write([]byte("partial"))
		return errors.New("disk on fire")
	})
	if err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Fatalf("error: %v", err)
	}
	after, _ := os.ReadFile(path)
	if string(before) != string(after) {
		t.Fatal("a failed write changed the file")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("temporary files left behind: %v", entries)
	}
	// While a write is under way the target is not visible.
	fresh := filepath.Join(dir, "fresh.parquet")
	WriteFileAtomic(fresh, func(w io.Writer) error {
		if _, err := os.Stat(fresh); !errors.Is(err, os.ErrNotExist) {
			t.Error("target visible before the write finished")
		}
		_, err := w.Write([]byte("x"))
		return err
	})
	if b, _ := os.ReadFile(fresh); string(b) != "x" {
		t.Fatalf("content %q", b)
	}
}

func TestManifestDoneCollect(t *testing.T) {
	out := t.TempDir()
	rd := filepath.Join(out, "pg19", "abc123def456")
	if got := FolderStatus(rd); got != FolderTodo {
		t.Errorf("status %s", got)
	}
	os.MkdirAll(rd, 0o755)
	m := Manifest{RunID: "abc123def456", Sweep: "pg19", Key: "nats,method.lambda=5e-07,seed=0", Name: "nats", Kind: "lm",
		Status: StatusRunning, Start: time.Now().UTC(), Config: map[string]any{"method": map[string]any{"lambda": 5e-7}},
		Grid: map[string]any{"method.lambda": 5e-7}}
	if err := WriteManifest(rd, m); err != nil {
		t.Fatal(err)
	}
	if got := FolderStatus(rd); got != FolderPartial {
		t.Errorf("status %s", got)
	}
	back, err := ReadManifest(rd)
	if err != nil || back.Key != m.Key || back.Status != StatusRunning {
		t.Fatalf("manifest: %v %+v", err, back)
	}
	c, err := CollectDir(out, "pg19")
	if err != nil || len(c.Runs) != 1 || len(c.Missing) != 1 || len(c.Rows) != 0 {
		t.Fatalf("collect partial: %v %+v", err, c)
	}
	WriteRows(filepath.Join(rd, MetricsFile), sampleRows())
	m.Status = StatusDone
	WriteManifest(rd, m)
	if err := MarkDone(rd); err != nil {
		t.Fatal(err)
	}
	if got := FolderStatus(rd); got != FolderDone {
		t.Errorf("status %s", got)
	}
	c, err = CollectDir(out, "pg19")
	if err != nil || len(c.Rows) != 2 || len(c.Missing) != 0 {
		t.Fatalf("collect: %v %+v", err, c)
	}
	if err := WriteRuns(filepath.Join(c.Dir, RunsFile), c.Runs); err != nil {
		t.Fatal(err)
	}
	recs, err := ReadRuns(filepath.Join(c.Dir, RunsFile))
	if err != nil || len(recs) != 1 || recs[0].Status != StatusDone || !strings.Contains(recs[0].ConfigJSON, "lambda") {
		t.Fatalf("runs table: %v %+v", err, recs)
	}
	// A corrupt metrics file in one run is an error naming it.
	os.WriteFile(filepath.Join(rd, MetricsFile), []byte("PAR1 broken"), 0o644)
	if _, err := CollectDir(out, "pg19"); err == nil || !strings.Contains(err.Error(), filepath.Join(rd, MetricsFile)) {
		t.Fatalf("corrupt: %v", err)
	}
	if _, err := CollectDir(out, "nope"); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("missing sweep: %v", err)
	}
}
