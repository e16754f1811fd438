package sweeps

import (
	"strconv"
	"strings"
)

// keyLines maps every key path of a TOML document to the line (1-based) where it is first written.
// Elements of arrays (of tables or inline) are addressed by their index: "run.2.method.lambda",
// "figure.0.id". It is a best-effort scanner that runs only on documents BurntSushi/toml has already
// parsed; on anything else it still terminates without panicking, possibly with fewer lines.
func keyLines(src []byte) map[string]int {
	l := &locator{src: src, line: 1, lines: map[string]int{}, arr: map[string]int{}}
	l.document()
	return l.lines
}

// pathKey joins key pieces; pieces may themselves contain dots (quoted keys such as "method.lambda").
func pathKey(parts []string) string { return strings.Join(parts, "\x00") }

type locator struct {
	src   []byte
	i     int
	line  int
	lines map[string]int // pathKey → line
	arr   map[string]int // array-of-tables path → number of elements so far
}

func (l *locator) peek(k int) byte {
	if l.i+k < len(l.src) {
		return l.src[l.i+k]
	}
	return 0
}

func (l *locator) record(parts []string) {
	k := pathKey(parts)
	if _, ok := l.lines[k]; !ok {
		l.lines[k] = l.line
	}
}

func (l *locator) skipSpace() {
	for l.i < len(l.src) && (l.src[l.i] == ' ' || l.src[l.i] == '\t' || l.src[l.i] == '\r') {
		l.i++
	}
}

// skipBlank skips spaces, newlines and comments.
func (l *locator) skipBlank() {
	for l.i < len(l.src) {
		switch l.src[l.i] {
		case ' ', '\t', '\r':
			l.i++
		case '\n':
			l.line++
			l.i++
		case '#':
			l.skipLine()
		default:
			return
		}
	}
}

// skipLine moves to the newline ending the current line (not past it).
func (l *locator) skipLine() {
	for l.i < len(l.src) && l.src[l.i] != '\n' {
		l.i++
	}
}

func (l *locator) document() {
	var prefix []string
	for l.i < len(l.src) {
		l.skipBlank()
		if l.i >= len(l.src) {
			return
		}
		start := l.i
		if l.src[l.i] == '[' {
			array := l.peek(1) == '['
			if array {
				l.i += 2
			} else {
				l.i++
			}
			parts := l.key()
			l.skipLine()
			if len(parts) == 0 {
				continue
			}
			full := l.resolve(parts[:len(parts)-1])
			full = append(full, parts[len(parts)-1])
			if array {
				base := pathKey(full)
				n := l.arr[base]
				l.arr[base] = n + 1
				l.record(full)
				full = append(full, strconv.Itoa(n))
			}
			l.record(full)
			prefix = full
			continue
		}
		parts := l.key()
		l.skipSpace()
		if len(parts) == 0 || l.peek(0) != '=' {
			if l.i == start {
				l.i++
			}
			l.skipLine()
			continue
		}
		l.i++
		full := append(append([]string{}, prefix...), parts...)
		for k := len(prefix) + 1; k <= len(full); k++ {
			l.record(full[:k])
		}
		l.value(full, 0)
	}
}

// resolve maps header pieces to a path, inserting the current index of arrays of tables.
func (l *locator) resolve(parts []string) []string {
	var out []string
	for _, p := range parts {
		out = append(out, p)
		if n, ok := l.arr[pathKey(out)]; ok && n > 0 {
			out = append(out, strconv.Itoa(n-1))
		}
	}
	return out
}

// key reads a dotted key: bare, "basic" or 'literal' pieces.
func (l *locator) key() []string {
	var parts []string
	for {
		l.skipSpace()
		if l.i >= len(l.src) {
			return parts
		}
		var piece string
		switch c := l.src[l.i]; {
		case c == '"':
			piece = l.quoted('"')
		case c == '\'':
			piece = l.quoted('\'')
		case isBare(c):
			s := l.i
			for l.i < len(l.src) && isBare(l.src[l.i]) {
				l.i++
			}
			piece = string(l.src[s:l.i])
		default:
			return parts
		}
		parts = append(parts, piece)
		l.skipSpace()
		if l.peek(0) != '.' {
			return parts
		}
		l.i++
	}
}

func isBare(c byte) bool {
	return c == '_' || c == '-' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
}

// quoted reads a single-line quoted string starting at the quote and returns its content.
func (l *locator) quoted(q byte) string {
	l.i++
	var b strings.Builder
	for l.i < len(l.src) && l.src[l.i] != '\n' {
		c := l.src[l.i]
		if c == q {
			l.i++
			return b.String()
		}
		if q == '"' && c == '\\' && l.i+1 < len(l.src) {
			l.i++
			c = l.src[l.i]
		}
		b.WriteByte(c)
		l.i++
	}
	return b.String()
}

// multiline skips a """ or ”' string starting at the opening delimiter.
func (l *locator) multiline(q byte) {
	l.i += 3
	for l.i < len(l.src) {
		c := l.src[l.i]
		switch {
		case c == '\n':
			l.line++
		case c == '\\' && q == '"':
			l.i++
			if l.i < len(l.src) && l.src[l.i] == '\n' {
				l.line++
			}
		case c == q && l.peek(1) == q && l.peek(2) == q:
			l.i += 3
			for l.i < len(l.src) && l.src[l.i] == q { // up to two extra quotes belong to the string
				l.i++
			}
			return
		}
		l.i++
	}
}

// value skips one value, recording the keys of inline tables and the elements of arrays.
func (l *locator) value(path []string, depth int) {
	l.skipSpace()
	if l.i >= len(l.src) || depth > 200 {
		return
	}
	switch c := l.src[l.i]; c {
	case '"', '\'':
		if l.peek(1) == c && l.peek(2) == c {
			l.multiline(c)
		} else {
			l.quoted(c)
		}
	case '{':
		l.i++
		for l.i < len(l.src) {
			l.skipBlank()
			if l.peek(0) == '}' {
				l.i++
				return
			}
			if l.peek(0) == ',' {
				l.i++
				continue
			}
			start := l.i
			parts := l.key()
			l.skipSpace()
			if len(parts) == 0 || l.peek(0) != '=' {
				if l.i == start {
					l.i++
				}
				continue
			}
			l.i++
			full := append(append([]string{}, path...), parts...)
			for k := len(path) + 1; k <= len(full); k++ {
				l.record(full[:k])
			}
			l.value(full, depth+1)
		}
	case '[':
		l.i++
		for n := 0; l.i < len(l.src); {
			l.skipBlank()
			switch l.peek(0) {
			case ']':
				l.i++
				return
			case ',':
				l.i++
				continue
			}
			start := l.i
			elem := append(append([]string{}, path...), strconv.Itoa(n))
			l.record(elem)
			l.value(elem, depth+1)
			n++
			if l.i == start {
				l.i++
			}
		}
	default:
		for l.i < len(l.src) {
			switch l.src[l.i] {
			case ',', ']', '}', '\n', '#':
				return
			}
			l.i++
		}
	}
}
