package nats

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"

	"natsbench/kvcache"
	"natsbench/model"
	"natsbench/policy"
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
		return out.Materialize()
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
		{"consecutive globals", "GGLLG", 16, []string{
			"x....",
			"xx...",
			"xxx..",
			"xxxx.",
			"xxxxx",
		}},
		{"locals with no global after", "GLLLL", 16, []string{
			"x....",
			"xx...",
			"xxx..",
			"xxxx.",
			"xxxxx",
		}},
		{"window longer than the sequence", "GWLGW", 8, []string{
			"x....",
			"xx...",
			"xxx..",
			"xxxx.",
			"xx.xx",
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

func TestHardMaskChunkGrids(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Chunk, cfg.Window = 2, 2
	// chunks of 2: G L W G L (the last one incomplete), 9 tokens.
	got := render(hardMaskFor(t, "GLWGL", cfg, 9))
	want := strings.Join([]string{
		"x........",
		"xx.......",
		"xxx......",
		"xxxx.....",
		"xxxxx....",
		"xxxxxx...",
		"xxxxxxx..",
		"xxxxxxxx.", // the Global chunk 3 (tokens 6-7) still sees the local chunk 1; window chunk 2 lasts to 5+2
		"xx....xxx", // then both are gone
	}, "\n") + "\n"
	if got != want {
		t.Errorf("chunk grid:\ngot\n%s\nwant\n%s", got, want)
	}
}

// TestHardMaskMatchesReference compares the graph's hard mask with the loop-based reference masks of package
// policy for many random role sequences, token and chunk variants, several W.
func TestHardMaskMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 9))
	for trial := 0; trial < 24; trial++ {
		c := []int{1, 1, 2, 4}[trial%4]
		w := c * (1 + r.IntN(3))
		seq := 5 + r.IntN(12)
		n := (seq + c - 1) / c
		b := []byte{'G'}
		for len(b) < n {
			b = append(b, "GLW"[r.IntN(3)])
		}
		cfg := DefaultConfig()
		cfg.Chunk, cfg.Window = c, w
		got := render(hardMaskFor(t, string(b), cfg, seq))
		if ref := policyChunkRef(string(b), seq, w, c); got != ref {
			t.Fatalf("roles %s seq %d C %d W %d:\ngot\n%s\nreference\n%s", b, seq, c, w, got, ref)
		}
	}
}

func policyChunkRef(roles string, seq, w, c int) string {
	rs := make([]kvcache.Role, len(roles))
	for i := range roles {
		rs[i] = kvcache.Role(strings.IndexByte("GLW", roles[i]))
	}
	var m [][]bool
	if c == 1 {
		m = policy.NAtSMask(rs, w)
	} else {
		m = policy.NAtSChunkMask(rs, seq, w, c)
	}
	grid := make([][]float32, len(m))
	for i, row := range m {
		grid[i] = make([]float32, len(row))
		for j, v := range row {
			if v {
				grid[i][j] = 1
			}
		}
	}
	return render(grid)
}

// TestDisabledRoleNeverSampled: with a role disabled, training-time Gumbel sampling (on logits that favour the
// disabled role) and inference argmax never emit it.
func TestDisabledRoleNeverSampled(t *testing.T) {
	for _, training := range []bool{true, false} {
		m, err := New(Config{Window: 2, Chunk: 1, Roles: []string{"global", "window"}, GlobalBonus: 0.1})
		if err != nil {
			t.Fatal(err)
		}
		mc := model.Config{VocabSize: 8, DModel: 3, NLayers: 1, NHeads: 1, FFNMult: 1, MaxSeqLen: 64}
		backend, _ := model.NewBackend("go")
		seq := 64
		x := make([]float32, seq*3)
		for i := 0; i < seq; i++ {
			x[i*3+1] = 5 // favour Local
		}
		exec, err := NewExec(backend, func(xn, w, seed *Node) *Node {
			rng := seed
			out := m.Mask(&model.AttnSite{Cfg: mc, Normed: xn, Training: training, Param: func(string) *Node { return w },
				Uniform: func(d []int) *Node {
					var u *Node
					rng, u = RandomUniform(rng, shapes.Make(dtypes.Float32, d...))
					return u
				}})
			return out.Roles
		})
		if err != nil {
			t.Fatal(err)
		}
		for k := int64(0); k < 5; k++ {
			st, _ := RNGStateFromSeed(k)
			res, err := exec.Exec(tensors.FromFlatDataAndDimensions(x, 1, seq, 3),
				tensors.FromFlatDataAndDimensions([]float32{1, 0, 0, 0, 1, 0, 0, 0, 1}, 3, 3), st)
			if err != nil {
				t.Fatal(err)
			}
			counts := map[int32]int{}
			for _, r := range tensors.MustCopyFlatData[int32](res[0]) {
				counts[r]++
			}
			if counts[Local] > 0 {
				t.Fatalf("training=%v: Local sampled %d times with Local disabled", training, counts[Local])
			}
			if training && counts[Window] == 0 {
				t.Fatalf("no Window sampled: test is vacuous (%v)", counts)
			}
		}
	}
}

func TestConfigValidateNamesTheField(t *testing.T) {
	cases := []struct {
		cfg   Config
		field string
	}{
		{Config{Lambda: -1, Window: 16, Chunk: 1}, "method.lambda"},
		{Config{Window: 12, Chunk: 8}, "method.window"},
		{Config{Window: 16, Chunk: 0}, "method.chunk_size"},
		{Config{Window: 16, Chunk: 1, Merge: "median"}, "method.chunk_merge"},
		{Config{Window: 16, Chunk: 1, Roles: []string{"sliding"}}, "method.roles"},
	}
	for _, c := range cases {
		if err := c.cfg.Validate(); err == nil || !strings.Contains(err.Error(), c.field) {
			t.Errorf("%+v: Validate() = %v, want an error naming %s", c.cfg, err, c.field)
		}
	}
}
