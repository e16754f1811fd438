// Package progress writes the live progress line of long work (training steps, evaluated windows or samples): on a
// terminal one line rewritten in place, elsewhere whole lines at most every Every.
package progress

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// Every is how often a live line is written out in full when the log is not a terminal.
const Every = 30 * time.Second

// Line writes a run's progress (training steps, evaluated samples). On a terminal it is one line rewritten in
// place with "\r"; anywhere else (a log file, a pipe, a Slurm job's output, a parent runner) the carriage returns
// would pile every update into one huge line, so an update is written as a full line at most every Every, and
// End writes the last update if it has not been written yet.
type Line struct {
	w       io.Writer
	tty     bool
	every   time.Duration
	last    time.Time
	pending string // the latest update not yet written (non-terminal)
	wrote   bool   // an update was written since the last End (terminal: the line is open)
}

// New returns the live line of w.
func New(w io.Writer) *Line {
	return &Line{w: w, tty: isTerminal(w), every: Every}
}

// EveryUpdate is implemented by a progress writer that wants every update as on a terminal (a UI, or a test that
// acts on a given step), not rate-limited lines.
type EveryUpdate interface{ EveryUpdate() bool }

// isTerminal reports whether w is a character device (a terminal) or asks for every update (EveryUpdate).
func isTerminal(w io.Writer) bool {
	if e, ok := w.(EveryUpdate); ok {
		return e.EveryUpdate()
	}
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// Update replaces the live line with the formatted text.
func (l *Line) Update(format string, args ...any) {
	msg := strings.TrimRight(fmt.Sprintf(format, args...), " ")
	if l.tty {
		fmt.Fprintf(l.w, "\r%s   ", msg)
		l.wrote = true
		return
	}
	l.pending = msg
	if now := time.Now(); l.last.IsZero() || now.Sub(l.last) >= l.every {
		fmt.Fprintln(l.w, msg)
		l.last, l.pending = now, ""
	}
}

// End finishes the live line: on a terminal a newline after the last update, elsewhere the last update when it
// was not written yet.
func (l *Line) End() {
	switch {
	case l.tty && l.wrote:
		fmt.Fprintln(l.w)
	case !l.tty && l.pending != "":
		fmt.Fprintln(l.w, l.pending)
	}
	l.pending, l.wrote, l.last = "", false, time.Time{}
}
