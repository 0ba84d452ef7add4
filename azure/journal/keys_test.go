package journal

import (
	"strings"
	"testing"
)

func TestSplitCountsUTF16Units(t *testing.T) {
	s := strings.Repeat("😀", 20_000) // 2 UTF-16 units each: 40,000 units
	parts := split(s, maxStringChars)
	if len(parts) != 2 || strings.Join(parts, "") != s {
		t.Fatalf("%d parts", len(parts))
	}
	for _, p := range parts {
		if units(p) > maxStringChars {
			t.Fatalf("part of %d units", units(p))
		}
	}
	if got := truncate(strings.Repeat("ü", 10_000), 4096); units(got) > 4096 || !strings.HasSuffix(got, "[truncated]") {
		t.Fatalf("truncate kept %d units", units(got))
	}
	if got := truncate("short", 4096); got != "short" {
		t.Fatal(got)
	}
}

func TestMarshalEnforcesLimits(t *testing.T) {
	e := entity{"PartitionKey": "p", "RowKey": "r"}
	for i := range 253 {
		e[strings.Repeat("p", 1)+string(rune('A'+i%26))+strings.Repeat("x", i/26)] = i
	}
	if _, err := e.marshal(); err == nil || !strings.Contains(err.Error(), "properties") {
		t.Fatalf("253 properties: %v", err)
	}
	big := entity{"PartitionKey": "p", "RowKey": "r", "V": strings.Repeat("😀", 17_000)}
	if _, err := big.marshal(); err == nil || !strings.Contains(err.Error(), "32K") {
		t.Fatalf("34K-unit string: %v", err)
	}
}
