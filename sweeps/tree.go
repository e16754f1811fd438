package sweeps

import (
	"fmt"
	"math"
	hint "natsbench/internal/suggest"
	"sort"
	"strconv"
	"strings"
	"time"
)

// deepCopy copies a decoded TOML value: tables and arrays are copied, scalars shared.
func deepCopy(v any) any {
	switch t := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, x := range t {
			out[k] = deepCopy(x)
		}
		return out
	case []map[string]any:
		out := make([]any, len(t))
		for i, x := range t {
			out[i] = deepCopy(x)
		}
		return out
	case []any:
		out := make([]any, len(t))
		for i, x := range t {
			out[i] = deepCopy(x)
		}
		return out
	}
	return v
}

func copyTable(m map[string]any) map[string]any {
	if m == nil {
		return map[string]any{}
	}
	return deepCopy(m).(map[string]any)
}

// merge deep-merges src into dst: tables merge, scalars and arrays replace.
func merge(dst, src map[string]any) {
	for k, v := range src {
		if sm, ok := v.(map[string]any); ok {
			if dm, ok := dst[k].(map[string]any); ok {
				merge(dm, sm)
				continue
			}
		}
		dst[k] = deepCopy(v)
	}
}

// flatten turns nested tables into dotted paths; arrays and scalars are leaves.
func flatten(prefix string, m map[string]any, out map[string]any) {
	for k, v := range m {
		p := k
		if prefix != "" {
			p = prefix + "." + k
		}
		if sub, ok := v.(map[string]any); ok && len(sub) > 0 {
			flatten(p, sub, out)
			continue
		}
		out[p] = v
	}
}

// getPath looks up a dotted path in a table.
func getPath(m map[string]any, path string) (any, bool) {
	var cur any = m
	for _, part := range strings.Split(path, ".") {
		t, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		cur, ok = t[part]
		if !ok {
			return nil, false
		}
	}
	return cur, true
}

// setPath sets a dotted path in a table, creating tables on the way; it fails when a path element is a
// value rather than a table.
func setPath(m map[string]any, path string, v any) error {
	parts := strings.Split(path, ".")
	cur := m
	for i, part := range parts[:len(parts)-1] {
		next, ok := cur[part]
		if !ok {
			t := map[string]any{}
			cur[part] = t
			cur = t
			continue
		}
		t, ok := next.(map[string]any)
		if !ok {
			return fmt.Errorf("path %q: %q is a %s, not a table", path, strings.Join(parts[:i+1], "."), typeName(next))
		}
		cur = t
	}
	cur[parts[len(parts)-1]] = deepCopy(v)
	return nil
}

func validPath(p string) bool {
	if p == "" {
		return false
	}
	for _, part := range strings.Split(p, ".") {
		if part == "" {
			return false
		}
	}
	return true
}

func typeName(v any) string {
	switch v.(type) {
	case map[string]any:
		return "table"
	case []any, []map[string]any:
		return "array"
	case string:
		return "string"
	case int64:
		return "integer"
	case float64:
		return "float"
	case bool:
		return "boolean"
	}
	return fmt.Sprintf("%T", v)
}

// FormatValue writes a config value as it appears in canonical keys: floats by
// strconv.FormatFloat(v, 'g', -1, 64), integers in decimal, strings as they are, arrays as `[a+b]`.
func FormatValue(v any) string {
	switch t := v.(type) {
	case string:
		return t
	case int64:
		return strconv.FormatInt(t, 10)
	case int:
		return strconv.Itoa(t)
	case float64:
		return strconv.FormatFloat(t, 'g', -1, 64)
	case bool:
		return strconv.FormatBool(t)
	case time.Time:
		return t.Format(time.RFC3339Nano)
	case []any:
		parts := make([]string, len(t))
		for i, x := range t {
			parts[i] = FormatValue(x)
		}
		return "[" + strings.Join(parts, "+") + "]"
	case map[string]any:
		keys := sortedKeys(t)
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = k + ":" + FormatValue(t[k])
		}
		return "{" + strings.Join(parts, "+") + "}"
	}
	return fmt.Sprint(v)
}

// sameValue compares a value written in a `from` reference with a canonical key value: as strings, or as
// numbers when both parse as numbers ("5e-7" matches "5e-07").
func sameValue(a, b string) bool {
	if a == b {
		return true
	}
	x, err1 := strconv.ParseFloat(a, 64)
	y, err2 := strconv.ParseFloat(b, 64)
	return err1 == nil && err2 == nil && (x == y || (math.IsNaN(x) && math.IsNaN(y)))
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// suggest returns a "did you mean" hint for name among known (see internal/suggest).
func suggest(name string, known []string) string { return hint.DidYouMean(name, known) }
