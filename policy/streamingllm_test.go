package policy_test

import (
	"testing"

	"natsbench/policy"
)

var streamingCases = []struct {
	name          string
	n, sinks, bud int
	want          []string
}{
	{
		name: "sinks=2 budget=4", n: 8, sinks: 2, bud: 4,
		want: []string{
			".xxxxxxx",
			"..xxxxxx",
			"...xxxxx",
			"....xxxx",
			"..x..xxx",
			"..xx..xx",
			"..xxx..x",
			"..xxxx..",
		},
	},
	{
		name: "sinks=0 budget=3", n: 6, sinks: 0, bud: 3,
		want: []string{
			".xxxxx",
			"..xxxx",
			"...xxx",
			"x...xx",
			"xx...x",
			"xxx...",
		},
	},
	{
		name: "sinks=1 budget=2", n: 5, sinks: 1, bud: 2,
		want: []string{
			".xxxx",
			"..xxx",
			".x.xx",
			".xx.x",
			".xxx.",
		},
	},
	{
		name: "budget=1", n: 3, sinks: 0, bud: 1,
		want: []string{
			".xx",
			"x.x",
			"xx.",
		},
	},
	{
		name: "budget >= n", n: 4, sinks: 1, bud: 9,
		want: []string{
			".xxx",
			"..xx",
			"...x",
			"....",
		},
	},
}

func TestStreamingLLMMask(t *testing.T) {
	for _, tc := range streamingCases {
		t.Run(tc.name, func(t *testing.T) {
			checkGrid(t, policy.StreamingLLMMask(tc.n, tc.sinks, tc.bud), tc.want)
		})
	}
}

func TestStreamingLLMDecodeMatchesMask(t *testing.T) {
	for _, tc := range streamingCases {
		t.Run(tc.name, func(t *testing.T) {
			m := policy.StreamingLLMMask(tc.n, tc.sinks, tc.bud)
			checkContract(t, policy.StreamingLLM{Sinks: tc.sinks, Budget: tc.bud}, 1, 1, 1, tc.n, [][][]bool{m}, nil)
		})
	}
	// Longer runs over several layers/heads and parameters.
	for sinks := 0; sinks < 5; sinks++ {
		for bud := sinks + 1; bud < 12; bud++ {
			const L, B, H, n = 2, 1, 2, 30
			m := policy.StreamingLLMMask(n, sinks, bud)
			checkContract(t, policy.StreamingLLM{Sinks: sinks, Budget: bud}, L, B, H, n,
				[][][]bool{m, m, m, m}, nil)
		}
	}
}
