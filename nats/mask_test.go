package nats

import (
	"fmt"
	"strings"
	"testing"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"

	"natsbench/model"
)

// hardMaskFor runs the masker at inference on a scorer whose logits are forced to the given roles (one per unit):
// the scorer input is a one-hot of the wanted role, so argmax picks it.
func hardMaskFor(t *testing.T, roles string, cfg Config, seq int) [][]float32 {
	t.Helper()
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mc := model.Config{VocabSize: 8, DModel: 3, NLayers: 1, NHeads: 1, FFNMult: 1, MaxSeqLen: 64}
	n := len(roles)
	// pooled input per token: one-hot of role of its unit × 10; scorer = identity [3,3].
	x := make([]float32, seq*3)
	for i := 0; i < seq; i++ {
		r := strings.IndexByte("GLW", roles[i/cfg.Chunk])
		x[i*3+r] = 10
	}
	_ = n
	backend, err := model.NewBackend("go")
	if err != nil {
		t.Fatal(err)
	}
	exec, err := NewExec(backend, func(xn, w *Node) *Node {
		out := m.Mask(&model.AttnSite{Cfg: mc, Normed: xn, Param: func(string) *Node { return w }})
		return out.Mask
	})
	if err != nil {
		t.Fatal(err)
	}
	res, err := exec.Exec(tensors.FromFlatDataAndDimensions(x, 1, seq, 3), tensors.FromFlatDataAndDimensions([]float32{1, 0, 0, 0, 1, 0, 0, 0, 1}, 3, 3))
	if err != nil {
		t.Fatal(err)
	}
	flat := tensors.MustCopyFlatData[float32](res[0])
	grid := make([][]float32, seq)
	for i := range grid {
		grid[i] = flat[i*seq : (i+1)*seq]
	}
	_ = dtypes.Float32
	_ = shapes.Make
	return grid
}

func render(grid [][]float32) string {
	var sb strings.Builder
	for _, row := range grid {
		for _, v := range row {
			if v > 0.5 {
				sb.WriteByte('x')
			} else {
				sb.WriteByte('.')
			}
		}
		sb.WriteByte('\n')
	}
	return sb.String()
}

func TestHardMaskTokenGrids(t *testing.T) {
	cases := []struct {
		name  string
		roles string
		w     int
		want  []string
	}{
		{"local run cut by global", "GLLGL", 16, []string{
			"x....",
			"xx...",
			"xxx..",
			"xxxx.", // the next Global (3) still sees the locals
			"x..xx", // after it, they are gone
		}},
		{"window 1", "GWWWW", 1, []string{
			"x....",
			"xx...",
			"xxx..",
			"x.xx.",
			"x..xx",
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Window = c.w
			got := render(hardMaskFor(t, c.roles, cfg, len(c.roles)))
			want := strings.Join(c.want, "\n") + "\n"
			if got != want {
				t.Errorf("roles %s W=%d:\ngot\n%s\nwant\n%s", c.roles, c.w, got, want)
			}
		})
	}
	fmt.Print()
}
