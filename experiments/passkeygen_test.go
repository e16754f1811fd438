package experiments

import (
	"slices"
	"strings"
	"testing"

	"natsbench/llama"
)

// TestPasskeySet checks the pretraining data of scripts/train_passkey_llama.py: independent of the number of
// workers, one answer span per row right before the row's end, whose tokens decode to the NATO-word passkey, and
// no sample equal to the finetune run's training sample of the same index under the same seed.
func TestPasskeySet(t *testing.T) {
	tok, err := llama.LoadTokenizer("../llama/testdata/tok512.bin")
	if err != nil {
		t.Fatal(err)
	}
	f := FinetuneConfig{Haystack: "../testdata/pg19", SeqLen: 256, Words: 60, NumKeys: 2, KeyWords: 2}
	const n = 12
	t1, l1, n1, err := PasskeySet(f, tok, n, 7, 1)
	if err != nil {
		t.Fatal(err)
	}
	t3, l3, n3, err := PasskeySet(f, tok, n, 7, 3)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(t1, t3) || !slices.Equal(l1, l3) || !slices.Equal(n1, n3) {
		t.Fatal("the samples depend on the number of workers")
	}
	words, err := haystackWords(f.Haystack, 4_000_000)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		row, lab, m := t1[i*256:(i+1)*256], l1[i*256:(i+1)*256], int(n1[i])
		first := slices.Index(lab, 1)
		if first <= 0 || m > 256 || slices.Contains(lab[m:], 1) || slices.Contains(lab[first:m], 0) {
			t.Fatalf("row %d: answer labels %v with %d real tokens", i, lab, m)
		}
		var ids []int
		for _, x := range row[first:m] {
			ids = append(ids, int(x))
		}
		ans := strings.Fields(tok.Decode(ids))
		if len(ans) != f.KeyWords || !slices.Contains(natoForTest, ans[0]) {
			t.Errorf("row %d: answer %q is not %d NATO words", i, tok.Decode(ids), f.KeyWords)
		}
		ft, _, _, _, err := passkeySample(f, tok, words, 7, uint64(i))
		if err != nil {
			t.Fatal(err)
		}
		if slices.Equal(ft, row) {
			t.Errorf("row %d equals the finetune run's training sample %d", i, i)
		}
	}
}

var natoForTest = strings.Fields("alfa bravo charlie delta echo foxtrot golf hotel india juliett kilo lima mike november oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu")
