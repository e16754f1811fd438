package policy_test

import (
	"testing"

	"natsbench/policy"
)

func TestFullMask(t *testing.T) {
	checkGrid(t, policy.FullMask(4), []string{
		".xxx",
		"..xx",
		"...x",
		"....",
	})
}

func TestFullDecodeMatchesMask(t *testing.T) {
	const L, B, H, n = 2, 2, 3, 40
	masks := make([][][]bool, L*B*H)
	for k := range masks {
		masks[k] = policy.FullMask(n)
	}
	checkContract(t, policy.Full{}, L, B, H, n, masks, nil)
	checkContract(t, nil, L, B, H, n, masks, nil) // a nil evictor keeps everything too
}
