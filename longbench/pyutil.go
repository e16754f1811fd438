package longbench

// Helpers that mirror the Python / NumPy semantics the official scripts rely
// on. Character classes use Go's unicode tables (Unicode 15.0); CPython 3.11
// uses Unicode 14.0, so the only differences are characters first assigned
// in Unicode 15 (checked exhaustively against Python 3.11 when written).

import (
	"math"
	"strconv"
	"strings"
	"unicode"
)

// pyIsSpace reports whether Python's str.isspace / str.split() treat r as
// whitespace (bidi class WS, B or S, or category Zs). Unlike Go's
// unicode.IsSpace this includes U+001C..U+001F.
func pyIsSpace(r rune) bool {
	switch r {
	case '\t', '\n', '\v', '\f', '\r', 0x1c, 0x1d, 0x1e, 0x1f, ' ', 0x85, 0xa0,
		0x1680, 0x2028, 0x2029, 0x202f, 0x205f, 0x3000:
		return true
	}
	return r >= 0x2000 && r <= 0x200a
}

// pySplit is Python's str.split() without arguments: split on runs of
// whitespace, no empty strings.
func pySplit(s string) []string {
	return strings.FieldsFunc(s, pyIsSpace)
}

// pyIsWord is Python re's \w for str patterns: str.isalnum() or '_'.
func pyIsWord(r rune) bool {
	return r == '_' || unicode.IsLetter(r) || unicode.IsNumber(r)
}

// pyIsDecimal is Python re's \d for str patterns (category Nd).
func pyIsDecimal(r rune) bool {
	if r < 0x80 {
		return r >= '0' && r <= '9'
	}
	return unicode.IsDigit(r)
}

// pyIsCased is Unicode's Cased property (Lu, Ll, Lt, Other_Lowercase,
// Other_Uppercase), as used by str.lower's final-sigma rule.
func pyIsCased(r rune) bool {
	return unicode.In(r, unicode.Lu, unicode.Ll, unicode.Lt, unicode.Other_Lowercase, unicode.Other_Uppercase)
}

// pyIsCaseIgnorable is Unicode's Case_Ignorable property: Mn, Me, Cf, Lm, Sk
// and the Word_Break classes MidLetter, MidNumLet and Single_Quote.
func pyIsCaseIgnorable(r rune) bool {
	switch r {
	case '\'', '.', ':', 0xb7, 0x387, 0x55f, 0x5f4, 0x2018, 0x2019, 0x2024, 0x2027,
		0xfe13, 0xfe52, 0xfe55, 0xff07, 0xff0e, 0xff1a:
		return true
	}
	return unicode.In(r, unicode.Mn, unicode.Me, unicode.Cf, unicode.Lm, unicode.Sk)
}

// pyLower is Python's str.lower(): the full lowercase mapping (U+0130 becomes
// "i\u0307") and the Final_Sigma rule for U+03A3, which Go's
// strings.ToLower does not apply.
func pyLower(s string) string {
	ascii := true
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			ascii = false
			break
		}
	}
	if ascii {
		return strings.ToLower(s)
	}
	rs := []rune(s)
	var b strings.Builder
	b.Grow(len(s))
	for i, r := range rs {
		switch r {
		case 0x130:
			b.WriteString("i\u0307")
		case 0x3a3:
			b.WriteRune(finalSigma(rs, i))
		default:
			b.WriteRune(unicode.ToLower(r))
		}
	}
	return b.String()
}

// finalSigma mirrors CPython's handle_capital_sigma: U+03A3 lowers to
// U+03C2 when preceded by a cased letter and not followed by one (skipping
// case-ignorable characters both ways), else to U+03C3.
func finalSigma(rs []rune, i int) rune {
	j := i - 1
	for j >= 0 && pyIsCaseIgnorable(rs[j]) {
		j--
	}
	final := j >= 0 && pyIsCased(rs[j])
	if final && i+1 < len(rs) {
		j = i + 1
		for j < len(rs) && pyIsCaseIgnorable(rs[j]) {
			j++
		}
		final = j == len(rs) || !pyIsCased(rs[j])
	}
	if final {
		return 0x3c2
	}
	return 0x3c3
}

// Round2 rounds x to 2 decimals like Python's built-in round(x, 2) on a
// float: the exact binary value is rounded correctly to the nearest
// multiple of 0.01, ties to even (so 0.125 gives 0.12 and 2.675, stored as
// 2.67499..., gives 2.67). NaN and infinities are returned unchanged.
func Round2(x float64) float64 {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return x
	}
	// strconv's fixed-precision formatting rounds the exact decimal
	// expansion half-to-even, as CPython's _Py_dg_dtoa mode 3 does.
	f, err := strconv.ParseFloat(strconv.FormatFloat(x, 'f', 2, 64), 64)
	if err != nil {
		return x
	}
	return f
}

// NumpyRound2 is round(np.float64(x), 2), which NumPy implements as
// rint(x*100)/100 (np.around): eval.py's LongBench-E path rounds this way
// because np.mean returns an np.float64.
func NumpyRound2(x float64) float64 {
	return math.RoundToEven(x*100) / 100
}

// npPairwiseSum is NumPy's pairwise summation of float64 (the inner loop of
// np.add.reduce on a contiguous array), block size 128, 8 accumulators.
func npPairwiseSum(a []float64) float64 {
	n := len(a)
	switch {
	case n < 8:
		res := math.Copysign(0, -1)
		for _, v := range a {
			res += v
		}
		return res
	case n <= 128:
		var r [8]float64
		copy(r[:], a[:8])
		i := 8
		for ; i < n-n%8; i += 8 {
			for k := 0; k < 8; k++ {
				r[k] += a[i+k]
			}
		}
		res := ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
		for ; i < n; i++ {
			res += a[i]
		}
		return res
	default:
		n2 := n / 2
		n2 -= n2 % 8
		return npPairwiseSum(a[:n2]) + npPairwiseSum(a[n2:])
	}
}

// npMean is np.mean of a list of Python floats: (0.0 + pairwise sum) / n;
// NaN for an empty list (NumPy warns and returns nan).
func npMean(a []float64) float64 {
	if len(a) == 0 {
		return math.NaN()
	}
	return (0.0 + npPairwiseSum(a)) / float64(len(a))
}

// pyFloatRepr formats f like Python's json.dump does: float.__repr__ for
// finite values (shortest round-trip digits, "25.0" not "25", exponent form
// below 1e-4 and from 1e16), and NaN / Infinity / -Infinity otherwise.
func pyFloatRepr(f float64) string {
	switch {
	case math.IsNaN(f):
		return "NaN"
	case math.IsInf(f, 1):
		return "Infinity"
	case math.IsInf(f, -1):
		return "-Infinity"
	}
	e := strconv.FormatFloat(f, 'e', -1, 64) // [-]d[.ddd]e±XX
	sign := ""
	if e[0] == '-' {
		sign, e = "-", e[1:]
	}
	mant, expStr, _ := strings.Cut(e, "e")
	exp, _ := strconv.Atoi(expStr)
	digits := strings.Replace(mant, ".", "", 1)
	decpt := exp + 1
	if decpt <= -4 || decpt > 16 {
		m := digits[:1]
		if len(digits) > 1 {
			m += "." + digits[1:]
		}
		es := "+"
		if exp < 0 {
			es, exp = "-", -exp
		}
		x := strconv.Itoa(exp)
		if len(x) < 2 {
			x = "0" + x
		}
		return sign + m + "e" + es + x
	}
	switch {
	case decpt <= 0:
		return sign + "0." + strings.Repeat("0", -decpt) + digits
	case decpt >= len(digits):
		return sign + digits + strings.Repeat("0", decpt-len(digits)) + ".0"
	default:
		return sign + digits[:decpt] + "." + digits[decpt:]
	}
}
