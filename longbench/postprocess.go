package longbench

import (
	"fmt"
	"strings"

	"natsbench/internal/suggest"
)

// PostProcess names the model-specific post-processing of a decoded prediction (pred.py's post_process; NAtS's
// hf_pred.py adds a "llama-3" branch, NATS-SPEC §3.6).
type PostProcess string

const (
	// PostAuto resolves to PostLlama3 or PostNone from the loaded model (the caller decides how).
	PostAuto PostProcess = "auto"
	// PostLlama3 is hf_pred.py's branch for model names containing "llama-3": see PostProcessLlama3.
	PostLlama3 PostProcess = "llama-3"
	// PostNone keeps the decoded text as is.
	PostNone PostProcess = "none"
)

// PostProcesses lists the accepted names.
var PostProcesses = []PostProcess{PostAuto, PostLlama3, PostNone}

// ParsePostProcess validates a post-processing name ("" means auto).
func ParsePostProcess(name string) (PostProcess, error) {
	if name == "" {
		return PostAuto, nil
	}
	known := make([]string, len(PostProcesses))
	for i, p := range PostProcesses {
		if string(p) == name {
			return p, nil
		}
		known[i] = string(p)
	}
	return "", fmt.Errorf("unknown post-processing %q%s (known: %s)", name, suggest.DidYouMean(name, known), strings.Join(known, ", "))
}

// Llama3Separators are the cuts of hf_pred.py's "llama-3" post-processing, in its order.
var Llama3Separators = []string{".assistant", "\n\nQuestion", "</s>"}

// PostProcessLlama3 is hf_pred.py's post-processing for Llama-3 models:
//
//	pred.split(".assistant")[0].split("\n\nQuestion")[0].split("</s>")[0].strip()
//
// Each cut keeps the text before the first occurrence of its separator; strip removes Python whitespace
// (str.isspace, which unlike Go's unicode.IsSpace includes U+001C..U+001F) at both ends.
func PostProcessLlama3(pred string) string {
	for _, sep := range Llama3Separators {
		pred, _, _ = strings.Cut(pred, sep)
	}
	return strings.TrimFunc(pred, pyIsSpace)
}

// Apply post-processes pred; PostAuto must have been resolved by the caller (an error otherwise).
func (p PostProcess) Apply(pred string) (string, error) {
	switch p {
	case PostNone:
		return pred, nil
	case PostLlama3:
		return PostProcessLlama3(pred), nil
	}
	return "", fmt.Errorf("longbench: post-processing %q is not resolved to %q or %q", p, PostLlama3, PostNone)
}
