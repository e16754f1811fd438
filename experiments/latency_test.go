package experiments

import (
	"testing"

	"natsbench/model"
)

func TestPrefillChunk(t *testing.T) {
	small := model.Config{NHeads: 8, NLayers: 8, NKVHeads: 8}
	big := model.Config{NHeads: 32, NLayers: 8, NKVHeads: 8}
	for _, c := range []struct {
		name string
		cfg  model.Config
		m    MethodConfig
		n    int
		want int
	}{
		{"short prompt: one graph", small, MethodConfig{Name: "full"}, 1000, 1024},
		{"tiny prompt: at least 64", small, MethodConfig{Name: "full"}, 10, 64},
		// 8 heads · T · (65536+T) · 4 bytes ≤ 4 GiB → T = 1024 (2048 needs 4.4e9 bytes).
		{"64k, 8 heads", small, MethodConfig{Name: "full"}, 65536, 1024},
		// 32 heads: four times less.
		{"64k, 32 heads", big, MethodConfig{Name: "nats", ChunkSize: 8}, 65536, 256},
		// H2O statistics: 8·8·T·(256+T)·4 ≤ 1 GiB → T = 1024 (2048 would need 2.3 GiB).
		{"h2o statistics", small, MethodConfig{Name: "h2o", Budget: 256}, 16384, 1024},
		{"nats chunk 48 rounds up", small, MethodConfig{Name: "nats", ChunkSize: 48}, 100, 144},
	} {
		if got := prefillChunk(c.cfg, c.m, 1, c.n); got != c.want {
			t.Errorf("%s: prefillChunk = %d, want %d", c.name, got, c.want)
		}
	}
}
