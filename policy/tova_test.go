package policy_test

import (
	"testing"

	"natsbench/kvcache"
	"natsbench/policy"
)

func TestTOVATrace(t *testing.T) {
	const F = kvcache.Free
	t.Run("budget=3", func(t *testing.T) {
		// Two keys survive each step: the ones the current query attended to most.
		runTrace(t, policy.TOVA{Budget: 3}, []evictStep{
			{map[int32]float32{0: 1}, []int32{0, F, F}},
			{map[int32]float32{0: .5, 1: .5}, []int32{0, 1, F}},
			{map[int32]float32{0: .5, 1: .125, 2: .375}, []int32{0, F, 2}}, // drop 1
			{map[int32]float32{0: .25, 2: .5, 3: .25}, []int32{F, 3, 2}},   // 3 reuses slot 1; tie 0/3 → drop older 0
			{map[int32]float32{2: .5, 3: .375, 4: .125}, []int32{F, 3, 2}}, // the newest token 4 is dropped
			{map[int32]float32{2: .25, 3: .25, 5: .5}, []int32{5, 3, F}},   // tie 2/3 → drop older 2
			{map[int32]float32{3: .25, 5: .375, 6: .375}, []int32{5, F, 6}},
			{map[int32]float32{5: .125, 6: .75, 7: .125}, []int32{F, 7, 6}}, // tie 5/7 → drop older 5
		})
	})
	t.Run("budget=1", func(t *testing.T) {
		runTrace(t, policy.TOVA{Budget: 1}, []evictStep{
			{map[int32]float32{0: 1}, []int32{F}},
			{map[int32]float32{1: 1}, []int32{F}},
		})
	})
	t.Run("budget=4 last attention only", func(t *testing.T) {
		// Scores do not accumulate: 0 is dropped at step 4 although it led before.
		runTrace(t, policy.TOVA{Budget: 4}, []evictStep{
			{map[int32]float32{0: 1}, []int32{0, F, F, F}},
			{map[int32]float32{0: .75, 1: .25}, []int32{0, 1, F, F}},
			{map[int32]float32{0: .75, 1: .125, 2: .125}, []int32{0, 1, 2, F}},
			{map[int32]float32{0: .5, 1: .25, 2: .125, 3: .125}, []int32{0, 1, F, 3}}, // tie 2/3 → drop older 2
			{map[int32]float32{0: .0625, 1: .25, 3: .25, 4: .4375}, []int32{F, 1, 4, 3}},
		})
	})
}
