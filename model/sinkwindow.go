package model

import (
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph"
)

// SinkWindow is StreamingLLM's attention pattern as a Masker: query i sees key j when j < Sinks or
// i − j < Budget − Sinks (the Budget − Sinks most recent tokens including itself). It is the forward-pass
// equivalent of policy.StreamingLLM's evictor.
type SinkWindow struct{ Sinks, Budget int }

// Specs declares no parameters.
func (SinkWindow) Specs(Config, int) []Spec { return nil }

// Mask returns the sink + recent-window mask `[batch, kv_heads, seq, seq]`.
func (m SinkWindow) Mask(s *AttnSite) MaskOut {
	dims := s.Normed.Shape().Dimensions
	b, seq := dims[0], dims[1]
	g := s.Normed.Graph()
	i := Iota(g, shapes.Make(dtypes.Int32, seq, seq), 0)
	j := Iota(g, shapes.Make(dtypes.Int32, seq, seq), 1)
	ok := Or(LessThan(j, Const(g, int32(m.Sinks))), LessThan(Sub(i, j), Const(g, int32(m.Budget-m.Sinks))))
	mask := ConvertDType(ok, dtypes.Float32)
	return MaskOut{Mask: BroadcastToDims(InsertAxes(mask, 0, 0), b, s.Cfg.KVHeads(), seq, seq)}
}
