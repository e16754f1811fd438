package nats

import (
	"github.com/gomlx/compute/dtypes"
	. "github.com/gomlx/gomlx/core/graph"

	"natsbench/model"
)

// DecodeRoles implements model.DecodeRoler: the role of the new token per KV head (C = 1), or, for chunks, the
// role of the chunk computed from the running mean (or max) of its tokens' normed inputs; the host reads it when
// the chunk completes (pos+1 ≡ 0 mod C). Argmax with the Global bonus; the first token (chunk) is Global.
func (m *Masker) DecodeRoles(s *model.DecodeSite) (roles, newState *Node) {
	g := s.Normed.Graph()
	x := ConvertDType(s.Normed, dtypes.Float32) // [b, d]
	c := m.cfg.Chunk
	pooled := x
	newState = s.State
	if c > 1 {
		start := Equal(ConvertDType(Rem(s.Pos, Const(g, int32(c))), dtypes.Int32), Const(g, int32(0)))
		startB := BroadcastToShape(start, x.Shape())
		if m.cfg.Merge == "max" {
			newState = Where(startB, x, Max(s.State, x))
			pooled = newState
		} else {
			newState = Where(startB, x, Add(s.State, x))
			pooled = DivScalar(newState, float64(c))
		}
	}
	b, d := x.Shape().Dimensions[0], x.Shape().Dimensions[1]
	w := ConvertDType(s.Param("scorer"), dtypes.Float32)
	lg := m.logits(s.Cfg, Reshape(pooled, b, 1, d), w) // [b,kv,1,3]
	lg = Add(lg, m.roleOffset(g, m.cfg.GlobalBonus))
	r := Squeeze(ArgMax(lg, -1, dtypes.Int32), -1) // [b,kv]
	first := LessThan(s.Pos, Const(g, int32(c)))
	roles = Where(BroadcastToShape(first, r.Shape()), ZerosLike(r), r)
	return roles, newState
}
