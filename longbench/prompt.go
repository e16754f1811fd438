package longbench

import (
	"embed"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
)

// configFS holds the official LongBench/config files (MIT, see
// config/LICENSE.LongBench-MIT), byte-identical to THUDM/LongBench 2e00731.
//
//go:embed config/dataset2prompt.json config/dataset2maxlen.json config/LICENSE.LongBench-MIT
var configFS embed.FS

var (
	configOnce sync.Once
	prompts    map[string]string
	maxLens    map[string]int
	configErr  error
)

func loadConfig() error {
	configOnce.Do(func() {
		b, err := configFS.ReadFile("config/dataset2prompt.json")
		if err == nil {
			err = json.Unmarshal(b, &prompts)
		}
		if err != nil {
			configErr = fmt.Errorf("longbench: config/dataset2prompt.json: %w", err)
			return
		}
		b, err = configFS.ReadFile("config/dataset2maxlen.json")
		if err == nil {
			err = json.Unmarshal(b, &maxLens)
		}
		if err != nil {
			configErr = fmt.Errorf("longbench: config/dataset2maxlen.json: %w", err)
		}
	})
	return configErr
}

// ConfigFile returns the bytes of one embedded official config file:
// "dataset2prompt.json", "dataset2maxlen.json" or "LICENSE.LongBench-MIT".
func ConfigFile(name string) ([]byte, error) {
	b, err := configFS.ReadFile("config/" + name)
	if err != nil {
		return nil, fmt.Errorf("longbench: no embedded config file %q: %w", name, err)
	}
	return b, nil
}

// PromptTemplate returns dataset2prompt[task] from the embedded official
// config: a Python str.format template with {context} and {input} fields.
// A LongBench-E name ("qasper_e") uses its base task's template, as pred.py
// does.
func PromptTemplate(task string) (string, error) {
	if err := loadConfig(); err != nil {
		return "", err
	}
	base, _ := SplitE(task)
	if _, err := Task(base); err != nil {
		return "", err
	}
	t, ok := prompts[base]
	if !ok {
		return "", fmt.Errorf("longbench: config/dataset2prompt.json has no entry for %q", base)
	}
	return t, nil
}

// MaxNewTokens returns dataset2maxlen[task] from the embedded official
// config (the same value as TaskInfo.MaxNewTokens). A LongBench-E name uses
// its base task's value.
func MaxNewTokens(task string) (int, error) {
	if err := loadConfig(); err != nil {
		return 0, err
	}
	base, _ := SplitE(task)
	if _, err := Task(base); err != nil {
		return 0, err
	}
	n, ok := maxLens[base]
	if !ok {
		return 0, fmt.Errorf("longbench: config/dataset2maxlen.json has no entry for %q", base)
	}
	return n, nil
}

// BuildPrompt renders the official prompt of task for sample s, like pred.py's
// prompt_format.format(**json_obj). Python str.format semantics are applied:
// "{{" and "}}" are literal braces, a single unmatched brace is an error, and
// a field must name a key of the sample. Supported fields are input, context,
// dataset, language, _id and length; answers and all_classes (which Python
// would render with list repr), attribute/index access, conversions (!r) and
// format specs (:...) are reported as errors. The official templates use only
// {context} and {input}.
func BuildPrompt(task string, s Sample) (string, error) {
	tmpl, err := PromptTemplate(task)
	if err != nil {
		return "", err
	}
	out, err := FormatTemplate(tmpl, s)
	if err != nil {
		return "", fmt.Errorf("longbench: prompt of task %q: %w", task, err)
	}
	return out, nil
}

// FormatTemplate applies Python str.format(**sample) semantics to tmpl; see
// BuildPrompt for what is supported.
func FormatTemplate(tmpl string, s Sample) (string, error) {
	var b strings.Builder
	b.Grow(len(tmpl) + len(s.Context) + len(s.Input))
	i := 0
	for i < len(tmpl) {
		c := tmpl[i]
		switch c {
		case '{':
			if i+1 < len(tmpl) && tmpl[i+1] == '{' {
				b.WriteByte('{')
				i += 2
				continue
			}
			// A replacement field: Python scans to the matching '}',
			// counting nested braces (which may occur in format specs).
			depth := 1
			j := i + 1
			for j < len(tmpl) && depth > 0 {
				switch tmpl[j] {
				case '{':
					depth++
				case '}':
					depth--
				}
				j++
			}
			if depth > 0 {
				if j == i+1 {
					return "", fmt.Errorf("Single '{' encountered in format string (byte %d)", i)
				}
				return "", fmt.Errorf("expected '}' before end of string (byte %d)", i)
			}
			field := tmpl[i+1 : j-1]
			v, err := formatField(field, s)
			if err != nil {
				return "", err
			}
			b.WriteString(v)
			i = j
		case '}':
			if i+1 < len(tmpl) && tmpl[i+1] == '}' {
				b.WriteByte('}')
				i += 2
				continue
			}
			return "", fmt.Errorf("Single '}' encountered in format string (byte %d)", i)
		default:
			// Copy a run of literal text.
			j := i
			for j < len(tmpl) && tmpl[j] != '{' && tmpl[j] != '}' {
				j++
			}
			b.WriteString(tmpl[i:j])
			i = j
		}
	}
	return b.String(), nil
}

func formatField(field string, s Sample) (string, error) {
	if strings.ContainsAny(field, "!:") {
		return "", fmt.Errorf("format field {%s}: conversions and format specs are not supported", field)
	}
	if strings.ContainsAny(field, ".[") {
		return "", fmt.Errorf("format field {%s}: attribute and index access are not supported", field)
	}
	switch field {
	case "input":
		return s.Input, nil
	case "context":
		return s.Context, nil
	case "dataset":
		return s.Dataset, nil
	case "language":
		return s.Language, nil
	case "_id":
		return s.ID, nil
	case "length":
		return strconv.Itoa(s.Length), nil
	case "answers", "all_classes":
		return "", fmt.Errorf("format field {%s}: rendering a Python list repr is not supported", field)
	case "":
		return "", fmt.Errorf("format field {}: positional fields are not supported (str.format(**sample) has no positional arguments)")
	}
	if _, err := strconv.Atoi(field); err == nil {
		return "", fmt.Errorf("Replacement index %s out of range for positional args tuple", field)
	}
	return "", fmt.Errorf("KeyError: %q is not a sample field", field)
}
