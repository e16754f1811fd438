package results

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// File names inside a run folder out/<sweep>/<run-id>/.
const (
	ManifestFile = "manifest.json"
	DoneFile     = "DONE"
	ConfigFile   = "config.toml"
	CkptDir      = "ckpt"
)

// Run statuses recorded in manifests.
const (
	StatusRunning     = "running"     // started and not finished (or the process died)
	StatusDone        = "done"        // finished; DONE is written right after
	StatusFailed      = "failed"      // returned an error (Manifest.Error)
	StatusInterrupted = "interrupted" // cancelled (Ctrl-C); resumes on the next launch
)

// Manifest is a run's manifest.json: its identity, provenance and status.
type Manifest struct {
	RunID     string `json:"run_id"`
	Sweep     string `json:"sweep"`
	SweepFile string `json:"sweep_file"`
	Key       string `json:"key"`
	Name      string `json:"name"`
	Kind      string `json:"kind"`
	Seed      int64  `json:"seed"`
	From      string `json:"from,omitempty"`
	FromKey   string `json:"from_key,omitempty"`
	FromID    string `json:"from_id,omitempty"`
	FromSweep string `json:"from_sweep,omitempty"`
	Smoke     bool   `json:"smoke"`

	Status   string    `json:"status"`
	Error    string    `json:"error,omitempty"`
	Attempts int       `json:"attempts"` // launches of this run, including the current one
	Start    time.Time `json:"start"`    // start of the latest attempt
	End      time.Time `json:"end"`      // end of the latest attempt (zero while running)

	Commit       string `json:"commit"`
	Dirty        bool   `json:"dirty"`
	GoMLXVersion string `json:"gomlx_version"`
	GoVersion    string `json:"go_version"`
	Backend      string `json:"backend"`
	XLAFlags     string `json:"xla_flags,omitempty"` // XLA_FLAGS as the run ended (XLA backends; natsbench adds defaults, model.XLAFlags)
	Device       string `json:"device"`
	DType        string `json:"dtype"`
	Host         string `json:"host"`

	Grid   map[string]any `json:"grid,omitempty"` // the run's grid values, dotted path → value
	Config map[string]any `json:"config"`         // resolved configuration
}

// WriteManifest writes dir/manifest.json atomically.
func WriteManifest(dir string, m Manifest) error {
	js, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("manifest of %s: %w", m.Key, err)
	}
	js = append(js, '\n')
	return WriteFileAtomic(filepath.Join(dir, ManifestFile), func(w io.Writer) error {
		_, err := w.Write(js)
		return err
	})
}

// ReadManifest reads dir/manifest.json; the error wraps os.ErrNotExist when there is none.
func ReadManifest(dir string) (Manifest, error) {
	var m Manifest
	path := filepath.Join(dir, ManifestFile)
	b, err := os.ReadFile(path)
	if err != nil {
		return m, fmt.Errorf("read manifest: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil {
		return m, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

// MarkDone writes dir/DONE; call it last, after metrics and manifest are on disk.
func MarkDone(dir string) error {
	return WriteFileAtomic(filepath.Join(dir, DoneFile), func(w io.Writer) error {
		_, err := fmt.Fprintln(w, time.Now().UTC().Format(time.RFC3339))
		return err
	})
}

// IsDone reports whether dir holds a DONE marker.
func IsDone(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, DoneFile))
	return err == nil
}

// Status of a run folder, as the runner's -dry-run prints it.
const (
	FolderTodo    = "todo"    // no folder
	FolderPartial = "partial" // a folder without DONE (a checkpoint, a failure or an interruption)
	FolderDone    = "done"    // DONE written
)

// FolderStatus classifies a run folder: done, partial or todo.
func FolderStatus(dir string) string {
	if IsDone(dir) {
		return FolderDone
	}
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return FolderTodo
	}
	entries, err := os.ReadDir(dir)
	if err == nil && len(entries) == 0 {
		return FolderTodo
	}
	return FolderPartial
}
