package main

import "testing"

// TestParseXLAPlan reads go-xla's compiled-memory log line as compute/support/humanize writes it.
func TestParseXLAPlan(t *testing.T) {
	line := `I1129 10:00:00.000000  1234 executable.go:95] Memory usage: On Device: [Code:1.5 MiB, Inputs:15.0 GiB, ` +
		`Outputs:1.2 KiB, Aliases:0 B, Temporary:98.5 GiB]; On Host: [Code:0 B, Inputs:0 B, Outputs:0 B, Aliases:0 B, Temporary:0 B]`
	p, ok := parseXLAPlan(line)
	if !ok {
		t.Fatal("line not recognised")
	}
	want := xlaPlan{Code: 1572864, Inputs: 15 << 30, Outputs: 1228, Temporary: 98.5 * (1 << 30)}
	if p.Code != want.Code || p.Inputs != want.Inputs || p.Outputs != want.Outputs || p.Aliases != 0 || p.Temporary != want.Temporary {
		t.Fatalf("parsed %+v, want %+v", p, want)
	}
	if p.Total() != want.Code+want.Inputs+want.Outputs+want.Temporary {
		t.Fatalf("total %d", p.Total())
	}
	if _, ok := parseXLAPlan("Compiling \"step\""); ok {
		t.Fatal("parsed a line without a plan")
	}
	x := &xlaMemLog{}
	x.Write([]byte("noise\n" + line + "\n"))
	if got, ok := x.Largest(); !ok || got.Temporary != want.Temporary {
		t.Fatalf("Largest = %+v, %v", got, ok)
	}
}
