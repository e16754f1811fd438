package engine

import (
	"fmt"

	"natsbench/kvcache"
	"natsbench/model"
	"natsbench/nats"
	"natsbench/policy"
)

// kind is how the engine handles a cache policy: the visibility rule of its prefill graph and its host table.
type kind int

const (
	kindFull    kind = iota // nil evictor or policy.Full: everything visible, nothing evicted
	kindSink                // policy.StreamingLLM: sinks plus a recent window, by position
	kindNAtS                // policy.NAtS: Global / Local / Window roles from the model's scorer
	kindGeneric             // any other evictor (H2O, TOVA): data dependent, run through kvcache.Cache
)

func (k kind) String() string {
	return [...]string{"full", "streamingllm", "nats", "generic"}[k]
}

// spec is the engine's view of a cache policy.
type spec struct {
	kind          kind
	sinks, budget int // StreamingLLM
	window, chunk int // NAtS: W and C (C ≥ 1)
	needs         kvcache.Stat
}

// newSpec derives the policy spec from the evictor and checks that the masker supplies what it needs.
func newSpec(m model.Masker, ev kvcache.Evictor) (spec, error) {
	if v, ok := ev.(interface{ Validate() error }); ok && ev != nil {
		if err := v.Validate(); err != nil {
			return spec{}, fmt.Errorf("engine: evictor %T: %w", ev, err)
		}
	}
	s := spec{}
	if ev != nil {
		s.needs = ev.Needs()
	}
	switch p := ev.(type) {
	case nil:
		s.kind = kindFull
	case policy.Full:
		s.kind = kindFull
	case policy.StreamingLLM:
		s.kind, s.sinks, s.budget = kindSink, p.Sinks, p.Budget
	case policy.NAtS:
		s.kind, s.window, s.chunk = kindNAtS, p.Window, max(p.Chunk, 1)
		nm, ok := m.(interface{ Config() nats.Config })
		if !ok {
			return spec{}, fmt.Errorf("engine: evictor policy.NAtS needs the NAtS masker (*nats.Masker) for its roles, got masker %T", m)
		}
		if _, ok := m.(model.DecodeRoler); !ok {
			return spec{}, fmt.Errorf("engine: masker %T gives no decode roles (model.DecodeRoler)", m)
		}
		c := nm.Config()
		if max(c.Chunk, 1) != s.chunk || c.Window != s.window {
			return spec{}, fmt.Errorf("engine: policy.NAtS{Window: %d, Chunk: %d} disagrees with the masker's method.window = %d, method.chunk_size = %d",
				p.Window, p.Chunk, c.Window, c.Chunk)
		}
	default:
		s.kind = kindGeneric
	}
	return s, nil
}

// mergeMax reports whether the NAtS masker pools chunks by max (otherwise mean).
func mergeMax(m model.Masker) bool {
	nm, ok := m.(interface{ Config() nats.Config })
	return ok && nm.Config().Merge == "max"
}
