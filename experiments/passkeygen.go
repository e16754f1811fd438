package experiments

import (
	"fmt"
	"sync"

	"natsbench/llama"
)

// PretrainIndexBase is the first sample index of PasskeySet: far above a finetune run's training indices (its
// steps) and its held-out ones (1<<40 on), so that a model pretrained on these samples never sees the samples a
// finetune run trains or scores on (and the seeds differ too).
const PretrainIndexBase = uint64(1) << 50

// PasskeySet builds n passkey samples with the finetune kind's own sampler (passkeySample: the same haystack
// cutting, needle wording and tokenisation) for f's haystack, tokenizer, seq_len, words, num_keys and key_words, at
// indices PretrainIndexBase+i under seed. It is the training data of a small model that can retrieve passkeys
// (`runner passkeygen`, scripts/train_passkey_llama.py), so that the finetune sweep has a base model whose full-attention accuracy is
// worth keeping. toks and labels are [n][seq_len] row-major (labels 1 on answer tokens), lens the real tokens of
// each row. Samples are built by `workers` goroutines; the result does not depend on their number.
func PasskeySet(f FinetuneConfig, tok llama.Tokenizer, n int, seed uint64, workers int) (toks []int32, labels []uint8, lens []int32, err error) {
	if n < 1 {
		return nil, nil, nil, fmt.Errorf("passkey set: n = %d, want ≥ 1", n)
	}
	words, err := haystackWords(f.Haystack, 4_000_000)
	if err != nil {
		return nil, nil, nil, err
	}
	s := f.SeqLen
	toks, labels, lens = make([]int32, n*s), make([]uint8, n*s), make([]int32, n)
	workers = max(1, min(workers, n))
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < n; i += workers {
				t, l, m, _, err := passkeySample(f, tok, words, seed, PretrainIndexBase+uint64(i))
				if err != nil {
					errs[w] = fmt.Errorf("passkey sample %d: %w", i, err)
					return
				}
				copy(toks[i*s:], t)
				for j, v := range l {
					labels[i*s+j] = uint8(v)
				}
				lens[i] = int32(m)
			}
		}(w)
	}
	wg.Wait()
	for _, e := range errs {
		if e != nil {
			return nil, nil, nil, e
		}
	}
	return toks, labels, lens, nil
}
