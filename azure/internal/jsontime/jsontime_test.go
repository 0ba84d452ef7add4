package jsontime

import (
	"encoding/json"
	"testing"
	"time"
)

func TestUnmarshal(t *testing.T) {
	cases := map[string]time.Time{
		`"2024-05-01T10:20:30.1234567Z"`: time.Date(2024, 5, 1, 10, 20, 30, 123456700, time.UTC),
		`"2024-05-01T10:20:30+02:00"`:    time.Date(2024, 5, 1, 8, 20, 30, 0, time.UTC),
		`"0001-01-01T00:00:00"`:          time.Time{},
		`"2019-04-09T19:47:29.5"`:        time.Date(2019, 4, 9, 19, 47, 29, 500000000, time.UTC),
	}
	for in, want := range cases {
		var got Time
		if err := json.Unmarshal([]byte(in), &got); err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		if !got.Set || !got.Equal(want) {
			t.Errorf("%s = %v (set %v), want %v", in, got.Time, got.Set, want)
		}
	}
	for _, in := range []string{`null`, `""`} {
		var got Time
		if err := json.Unmarshal([]byte(in), &got); err != nil || got.Set || got.Ptr() != nil {
			t.Errorf("%s: %v %v", in, got, err)
		}
	}
	for _, in := range []string{`"yesterday"`, `12`} {
		var got Time
		if err := json.Unmarshal([]byte(in), &got); err == nil {
			t.Errorf("%s accepted", in)
		}
	}
}
