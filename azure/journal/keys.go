package journal

import (
	"fmt"
	"strings"
	"unicode/utf16"
)

// Table Storage limits (reference: "Understanding the Table service data model").
const (
	maxKeyBytes = 1024 // PartitionKey and RowKey, each
	// maxStringChars keeps a string property under the 64 KiB limit: UTF-16 needs up to two
	// bytes per UTF-16 code unit, and the real service rejects more than 32K characters.
	maxStringChars = 30000
	// maxProperties is the limit of 255 properties less PartitionKey, RowKey and Timestamp.
	maxProperties = 252
	// maxEntityBytes keeps an entity under the 1 MiB limit with room for the framing.
	maxEntityBytes = 960 * 1024
)

// EncodeKey makes s safe as a PartitionKey or RowKey: it keeps letters, digits and - _ . : @,
// and writes every other byte (the forbidden / \ # ?, control characters, '~' itself and any
// non-ASCII byte) as ~XX in hex. The encoding is reversible and keeps distinct ids distinct.
func EncodeKey(s string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9',
			c == '-', c == '_', c == '.', c == ':', c == '@':
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, "~%02X", c)
		}
	}
	if b.Len() > maxKeyBytes {
		return "", fmt.Errorf("key for %.40q… is %d bytes once encoded; Table keys hold at most %d", s, b.Len(), maxKeyBytes)
	}
	if b.Len() == 0 {
		return "", fmt.Errorf("empty key")
	}
	return b.String(), nil
}

// DecodeKey reverses [EncodeKey].
func DecodeKey(k string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(k); i++ {
		if k[i] != '~' {
			b.WriteByte(k[i])
			continue
		}
		if i+2 >= len(k) {
			return "", fmt.Errorf("key %q: truncated escape", k)
		}
		var v byte
		if _, err := fmt.Sscanf(k[i+1:i+3], "%02X", &v); err != nil {
			return "", fmt.Errorf("key %q: bad escape %q", k, k[i:i+3])
		}
		b.WriteByte(v)
		i += 2
	}
	return b.String(), nil
}

// units is the length of s in UTF-16 code units, the unit of Table Storage's string limit.
func units(s string) int {
	n := 0
	for _, r := range s {
		n += utf16.RuneLen(r)
	}
	return n
}

// split cuts s into pieces of at most n UTF-16 code units, never inside a character.
func split(s string, n int) []string {
	var out []string
	start, count := 0, 0
	for i, r := range s {
		l := utf16.RuneLen(r)
		if count+l > n {
			out = append(out, s[start:i])
			start, count = i, 0
		}
		count += l
	}
	if start < len(s) || len(out) == 0 {
		out = append(out, s[start:])
	}
	return out
}

// truncate cuts s to n UTF-16 code units, saying so, so that a free-text property never
// breaks the 64 KiB limit.
func truncate(s string, n int) string {
	if units(s) <= n {
		return s
	}
	const marker = "…[truncated]"
	return split(s, n-units(marker))[0] + marker
}
