package progress

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// TestLineNonTerminal: off a terminal, progress is whole lines (no carriage returns), the first update at once,
// later ones at most every interval, and End writes the last update when it was held back.
func TestLineNonTerminal(t *testing.T) {
	var buf bytes.Buffer
	l := New(&buf)
	if l.tty {
		t.Fatal("a bytes.Buffer is not a terminal")
	}
	l.every = time.Hour
	for i := 1; i <= 100; i++ {
		l.Update("  train step %d/100   ", i)
	}
	l.End()
	got := buf.String()
	if strings.Contains(got, "\r") {
		t.Fatalf("carriage return in a non-terminal log: %q", got)
	}
	if want := "  train step 1/100\n  train step 100/100\n"; got != want {
		t.Fatalf("log = %q, want %q", got, want)
	}
	buf.Reset()
	l.every = 0 // every update is due
	l.Update("a %d", 1)
	l.Update("a %d", 2)
	l.End() // nothing held back: no repeat
	if want := "a 1\na 2\n"; buf.String() != want {
		t.Fatalf("log = %q, want %q", buf.String(), want)
	}
}

// TestLineTerminal: on a terminal each update rewrites the line and End closes it once.
func TestLineTerminal(t *testing.T) {
	var buf bytes.Buffer
	l := &Line{w: &buf, tty: true, every: Every}
	l.End() // nothing written: no stray newline
	l.Update("x %d", 1)
	l.Update("x %d", 2)
	l.End()
	if want := "\rx 1   \rx 2   \n"; buf.String() != want {
		t.Fatalf("terminal output = %q, want %q", buf.String(), want)
	}
}

type everyWriter struct{ bytes.Buffer }

func (*everyWriter) EveryUpdate() bool { return true }

// TestLineEveryUpdate: a writer that asks for every update gets them as on a terminal.
func TestLineEveryUpdate(t *testing.T) {
	var w everyWriter
	l := New(&w)
	l.Update("s %d", 1)
	l.Update("s %d", 2)
	l.End()
	if want := "\rs 1   \rs 2   \n"; w.String() != want {
		t.Fatalf("output = %q, want %q", w.String(), want)
	}
}
