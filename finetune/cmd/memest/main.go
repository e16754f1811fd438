// Command memest prints the shape-based ESTIMATE (not a measurement) of device memory for scorer-only NAtS
// fine-tuning of Llama-3-8B (or the model folder given by -model) at -seq tokens, for the materialised and the fused
// attention path, with and without gradient checkpointing, and the longest sequence that fits -budget GiB.
//
//	go run ./finetune/cmd/memest -seq 16384
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"natsbench/finetune"
	"natsbench/llama"
)

func main() {
	seq := flag.Int("seq", 16384, "tokens per sequence")
	dir := flag.String("model", "", "Hugging Face model folder (default: the Llama-3-8B architecture)")
	budget := flag.Float64("budget", 139, "device memory in GiB (H200: about 139 GiB usable)")
	flag.Parse()
	c := finetune.Llama3_8B()
	if *dir != "" {
		var err error
		if c, err = llama.LoadConfig(filepath.Join(*dir, "config.json")); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	b := int64(*budget * (1 << 30))
	for _, fused := range []bool{false, true} {
		if fused {
			fmt.Println("fused attention (what finetune runs in bf16: attention.Core + the carrier's custom VJP, nothing of size seq² kept between the passes):")
		} else {
			fmt.Println("materialised attention (float32 scores, probabilities and the differentiable mask kept per layer):")
		}
		for _, pb := range []int{2, 4} {
			for _, ck := range []bool{false, true} {
				o := finetune.MemoryOptions{Seq: *seq, ParamBytes: pb, ComputeBytes: 2, Checkpoint: ck, Fused: fused}
				m := finetune.EstimateMemory(c, o)
				fmt.Printf("  weights %d B/elem, bf16 compute, checkpointing %-5v seq %d: %v\n    fits %.0f GiB: %v; longest seq that fits: %d\n",
					pb, ck, *seq, m, *budget, m.Total <= b, finetune.MaxSeq(c, o, b, 1024))
			}
		}
	}
}
