package longbench

import "fmt"

// Tokenizer is the part of a model tokenizer pred.py uses for truncation.
type Tokenizer interface {
	// Encode tokenizes text as tokenizer(prompt).input_ids does, including
	// any special tokens the tokenizer adds (e.g. BOS).
	Encode(text string) []int
	// Decode turns ids back into text, skipping special tokens
	// (skip_special_tokens=True).
	Decode(ids []int) string
}

// TruncateMiddle is pred.py's middle truncation: when the prompt has more
// than maxLen tokens, half = int(maxLen/2) and the result is
// Decode(tok[:half]) + Decode(tok[-half:]) with Python slice semantics (so
// maxLen 0 or 1 gives half 0 and tok[-0:] is the whole list, as in Python).
// Otherwise the prompt is returned unchanged (not re-decoded).
func TruncateMiddle(tok Tokenizer, prompt string, maxLen int) string {
	ids := tok.Encode(prompt)
	if len(ids) <= maxLen {
		return prompt
	}
	half := maxLen / 2 // Go's division truncates toward zero, like int()
	return tok.Decode(pySliceTo(ids, half)) + tok.Decode(pySliceFrom(ids, -half))
}

// pySliceTo is Python's s[:k].
func pySliceTo(s []int, k int) []int {
	return s[:pyIndex(k, len(s))]
}

// pySliceFrom is Python's s[k:].
func pySliceFrom(s []int, k int) []int {
	return s[pyIndex(k, len(s)):]
}

// pyIndex clamps a Python slice bound into [0, n].
func pyIndex(k, n int) int {
	if k < 0 {
		k += n
		if k < 0 {
			k = 0
		}
	}
	if k > n {
		k = n
	}
	return k
}

// ChatTemplate selects how a prompt is wrapped for a chat model. Templates
// never emit the BOS token: Tokenizer.Encode is expected to add it, as
// pred.py's tokenizer(prompt) does.
type ChatTemplate string

// Supported chat templates.
const (
	// ChatNone leaves the prompt unchanged (the NAtS hf_pred.py protocol
	// and base models).
	ChatNone ChatTemplate = "none"
	// ChatLlama2 is pred.py's build_chat for llama2: "[INST]{prompt}[/INST]"
	// (no spaces, no system prompt).
	ChatLlama2 ChatTemplate = "llama2"
	// ChatMistral is the Mistral-Instruct format "[INST] {prompt} [/INST]".
	ChatMistral ChatTemplate = "mistral"
	// ChatLlama3 is the Llama-3-Instruct format for one user turn:
	// "<|start_header_id|>user<|end_header_id|>\n\n{prompt}<|eot_id|>
	// <|start_header_id|>assistant<|end_header_id|>\n\n".
	ChatLlama3 ChatTemplate = "llama3"
	// ChatLlama31 is Llama-3.1-Instruct's Hugging Face chat template for one
	// user turn, which always adds a system block with "Cutting Knowledge
	// Date: December 2023" and "Today Date: 26 Jul 2024", then the llama3
	// user turn.
	ChatLlama31 ChatTemplate = "llama3.1"
)

// ChatTemplates lists the supported templates.
var ChatTemplates = []ChatTemplate{ChatNone, ChatLlama2, ChatMistral, ChatLlama3, ChatLlama31}

// ParseChatTemplate validates a template name ("" means none).
func ParseChatTemplate(name string) (ChatTemplate, error) {
	if name == "" {
		return ChatNone, nil
	}
	for _, t := range ChatTemplates {
		if string(t) == name {
			return t, nil
		}
	}
	return "", fmt.Errorf("longbench: unknown chat template %q (known: none, llama2, mistral, llama3, llama3.1)", name)
}

const llama3User = "<|start_header_id|>user<|end_header_id|>\n\n"
const llama3Assistant = "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"

// Apply wraps prompt with the template.
func (c ChatTemplate) Apply(prompt string) (string, error) {
	switch c {
	case ChatNone, "":
		return prompt, nil
	case ChatLlama2:
		return "[INST]" + prompt + "[/INST]", nil
	case ChatMistral:
		return "[INST] " + prompt + " [/INST]", nil
	case ChatLlama3:
		return llama3User + prompt + llama3Assistant, nil
	case ChatLlama31:
		return "<|start_header_id|>system<|end_header_id|>\n\n" +
			"Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|>" +
			llama3User + prompt + llama3Assistant, nil
	}
	return "", fmt.Errorf("longbench: unknown chat template %q", string(c))
}

// BuildModelPrompt is pred.py's prompt pipeline for one sample: format the
// task template (BuildPrompt), truncate in the middle to maxLen tokens
// (TruncateMiddle; tok may be nil to skip truncation), then apply the chat
// template unless the task is one of trec, triviaqa, samsum, lsht, lcc,
// repobench-p.
func BuildModelPrompt(task string, s Sample, tok Tokenizer, maxLen int, chat ChatTemplate) (string, error) {
	base, _ := SplitE(task)
	info, err := Task(base)
	if err != nil {
		return "", err
	}
	p, err := BuildPrompt(base, s)
	if err != nil {
		return "", err
	}
	if tok != nil {
		p = TruncateMiddle(tok, p, maxLen)
	}
	if info.ChatTemplate {
		return chat.Apply(p)
	}
	if _, err := chat.Apply(""); err != nil {
		return "", err
	}
	return p, nil
}
