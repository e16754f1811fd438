package pg19

import (
	"fmt"
	"math/bits"
	"math/rand/v2"
)

// Sampler draws training batches of random contiguous windows from a token stream, nanoGPT get_batch
// style, deterministically: the batch of (seed, step) depends on nothing else, so a run resumed at step k
// sees exactly the batches it would have seen without stopping.
type Sampler struct {
	tokens []uint16
	seqLen int
}

// NewSampler returns a sampler of windows of seqLen tokens over tokens; it needs at least seqLen+1 tokens
// (one window plus its shifted target).
func NewSampler(tokens []uint16, seqLen int) (*Sampler, error) {
	if seqLen <= 0 {
		return nil, fmt.Errorf("pg19: sampler: sequence length %d, want > 0", seqLen)
	}
	if len(tokens) < seqLen+1 {
		return nil, fmt.Errorf("pg19: sampler: %d tokens, need at least sequence length + 1 = %d", len(tokens), seqLen+1)
	}
	return &Sampler{tokens: tokens, seqLen: seqLen}, nil
}

// SeqLen returns the window length.
func (s *Sampler) SeqLen() int { return s.seqLen }

// Len returns the number of tokens of the stream.
func (s *Sampler) Len() int { return len(s.tokens) }

// Starts returns the window starts of batch (seed, step): batchSize values drawn uniformly from
// [0, n-seqLen-1] (n tokens; torch.randint(n - seqLen) in nanoGPT), from a PCG generator
// (math/rand/v2) keyed only by seed and step through splitmix64. The bounded draw is Lemire's
// multiply-and-reject on PCG's Uint64 output, both fixed algorithms, so batches do not depend on the Go
// release.
func (s *Sampler) Starts(seed uint64, step int64, batchSize int) []int {
	if batchSize <= 0 {
		return nil
	}
	k1 := splitmix64(seed ^ 0x6a09e667f3bcc909)
	k2 := splitmix64(k1 ^ splitmix64(uint64(step)+0xbb67ae8584caa73b))
	r := rand.NewPCG(k1, k2)
	span := uint64(len(s.tokens) - s.seqLen) // starts 0..span-1
	out := make([]int, batchSize)
	for i := range out {
		out[i] = int(boundedDraw(r, span))
	}
	return out
}

// Batch returns batch (seed, step): inputs[b*seqLen+t] = tokens[start_b+t] and targets[b*seqLen+t] =
// tokens[start_b+t+1], row-major [batchSize, seqLen], with the starts of Starts.
func (s *Sampler) Batch(seed uint64, step int64, batchSize int) (inputs, targets []int32) {
	starts := s.Starts(seed, step, batchSize)
	if starts == nil {
		return nil, nil
	}
	L := s.seqLen
	inputs = make([]int32, batchSize*L)
	targets = make([]int32, batchSize*L)
	for b, st := range starts {
		win := s.tokens[st : st+L+1]
		in, tg := inputs[b*L:(b+1)*L], targets[b*L:(b+1)*L]
		for t := 0; t < L; t++ {
			in[t] = int32(win[t])
			tg[t] = int32(win[t+1])
		}
	}
	return inputs, targets
}

// splitmix64 is the SplitMix64 finaliser (Steele, Lea, Flood 2014), used to mix seeds.
func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// boundedDraw returns a uniform value in [0, n) (n > 0) by Lemire's nearly divisionless method.
func boundedDraw(r *rand.PCG, n uint64) uint64 {
	hi, lo := bits.Mul64(r.Uint64(), n)
	if lo < n {
		thresh := -n % n
		for lo < thresh {
			hi, lo = bits.Mul64(r.Uint64(), n)
		}
	}
	return hi
}
