package devhost

import (
	"encoding/json"
	"testing"
)

// A key given twice reaches the handler once, with its last value in its first place, as
// Json.NET's default DuplicatePropertyNameHandling.Replace leaves it; anything else is passed
// on byte for byte.
func TestLastWinsMergesDuplicateKeysAsTheHost(t *testing.T) {
	cases := []struct{ name, in, want string }{
		{"top level", `{"id":"a","type":"t","id":"b"}`, `{"id":"b","type":"t"}`},
		{"nested in data", `{"id":"1","data":{"registrationId":"x","n":1.50,"registrationId":"y"}}`, `{"id":"1","data":{"registrationId":"y","n":1.50}}`},
		{"inside an array", `{"a":[{"k":1,"k":{"z":true}},2]}`, `{"a":[{"k":{"z":true}},2]}`},
		{"names differing in case are two keys", `{"id":"a","ID":"b","id":"c"}`, `{"id":"c","ID":"b"}`},
		{"no HTML escaping", `{"r":"<a&b>","r":"<c&d>"}`, `{"r":"<c&d>"}`},
		{"no duplicate: unchanged bytes", `{"id" : "a",  "n": 1.0e3}`, `{"id" : "a",  "n": 1.0e3}`},
		{"duplicate only inside a string stays", `{"data":"{\"a\":1,\"a\":2}"}`, `{"data":"{\"a\":1,\"a\":2}"}`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := lastWins(json.RawMessage(c.in))
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != c.want {
				t.Fatalf("lastWins(%s) = %s, want %s", c.in, got, c.want)
			}
		})
	}
}
