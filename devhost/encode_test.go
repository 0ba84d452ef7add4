package devhost

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestHostValueEncoding(t *testing.T) {
	if got := string(hostString("stringTest")); got != `"\"stringTest\""` {
		t.Errorf(`hostString("stringTest") = %s, want "\"stringTest\"" (the host's own test)`, got)
	}
	if got := string(hostString("a<b&c")); got != `"\"a<b&c\""` {
		t.Errorf("hostString escapes HTML characters as Newtonsoft does not: %s", got)
	}
	for in, want := range map[string]string{
		`{"a": 1}`:  `{"a":1}`,
		`4`:         `"4"`,
		`true`:      `"true"`,
		`[1, 2]`:    `"[1,2]"`,
		`"text"`:    `"\"text\""`,
		`null`:      ``,
		`{"b":[1]}`: `{"b":[1]}`,
	} {
		got, err := hostToken(json.RawMessage(in))
		if err != nil || string(got) != want {
			t.Errorf("hostToken(%s) = %s, %v; want %s", in, got, err, want)
		}
	}
	if got := string(hostTimeOffset(time.Date(2024, 5, 1, 12, 0, 0, 123456789, time.UTC))); got != `"2024-05-01T12:00:00+00:00"` {
		t.Errorf("hostTimeOffset = %s", got)
	}
}

func TestJSONMessageBindingData(t *testing.T) {
	inv := &Invocation{Metadata: map[string]json.RawMessage{"Id": hostString("msg-1")}}
	applyJSONBindingData(inv, []byte(`{"orderId":42,"ok":true,"name":"x","nested":{"a":1},"list":[1],"none":null,"id":"override"}`))
	want := map[string]string{
		"orderId": `"\"42\""`, "ok": `"\"True\""`, "name": `"\"x\""`, "nested": `{"a":1}`, "Id": `"\"override\""`,
	}
	for k, v := range want {
		if string(inv.Metadata[k]) != v {
			t.Errorf("Metadata[%s] = %s, want %s", k, inv.Metadata[k], v)
		}
	}
	for _, k := range []string{"list", "none", "id"} {
		if _, ok := inv.Metadata[k]; ok {
			t.Errorf("Metadata has %s; arrays and nulls are skipped and keys match case-insensitively", k)
		}
	}
}

func TestQueueOutputRules(t *testing.T) {
	cases := []struct {
		in     string
		binary bool
		want   []string
	}{
		{`{"a":1}`, false, []string{"{\n  \"a\": 1\n}"}},
		{`["x",{"a":1},3]`, false, []string{"x", "{\n  \"a\": 1\n}", "3"}},
		{`"aGVsbG8="`, false, []string{"hello"}},    // valid base64: decoded (the host's quirk)
		{`"test"`, false, []string{"\xb5\xeb\x2d"}}, // "test" is valid base64 too
		{`"test"`, true, []string{"test"}},          // binary: passed through
		{`"hello world"`, false, []string{"hello world"}},
		{`"[\"a\",\"b\"]"`, false, []string{"a", "b"}}, // a string holding a JSON array
	}
	for _, c := range cases {
		got, err := queueMessages(json.RawMessage(c.in), c.binary)
		if err != nil {
			t.Errorf("%s: %v", c.in, err)
			continue
		}
		var gs []string
		for _, g := range got {
			gs = append(gs, string(g))
		}
		if strings.Join(gs, "|") != strings.Join(c.want, "|") {
			t.Errorf("queueMessages(%s, binary=%v) = %q, want %q", c.in, c.binary, gs, c.want)
		}
	}
}

func TestOutputValuesReturnValue(t *testing.T) {
	f := &Function{Bindings: []Binding{{Name: "out", Direction: "out", Type: "queue"}}}
	got := outputValues(f, &Result{Outputs: map[string]json.RawMessage{"out": json.RawMessage(`1`)}, ReturnValue: json.RawMessage(`{"out":2}`)})
	if string(got["out"]) != "2" {
		t.Errorf("an object ReturnValue overrides Outputs: got %s", got["out"])
	}
	f.Bindings = append(f.Bindings, Binding{Name: "$return", Direction: "out", Type: "queue"})
	got = outputValues(f, &Result{Outputs: map[string]json.RawMessage{"out": json.RawMessage(`1`)}, ReturnValue: json.RawMessage(`{"out":2}`)})
	if string(got["out"]) != "1" || string(got["$return"]) != `{"out":2}` {
		t.Errorf("with a $return binding: %v", got)
	}
}

func TestSchedules(t *testing.T) {
	s, err := parseSchedule("0 */5 * * * *")
	if err != nil {
		t.Fatal(err)
	}
	from := time.Date(2024, 5, 1, 11, 57, 30, 0, time.UTC)
	if n := s.next(from); !n.Equal(time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)) {
		t.Errorf("next after %s = %s", from, n)
	}
	if s, err := parseSchedule("00:00:30"); err != nil || s.next(from) != from.Add(30*time.Second) {
		t.Errorf("TimeSpan schedule: %v", err)
	}
	for _, bad := range []string{"*/5 * * * *", "0 0 25 * * *", "x"} {
		if _, err := parseSchedule(bad); err == nil {
			t.Errorf("schedule %q accepted", bad)
		}
	}
}

func TestRoutes(t *testing.T) {
	for _, c := range []struct {
		tmpl, path string
		ok         bool
		params     map[string]string
	}{
		{"deprovision/{kind?}/{id?}", "deprovision", true, map[string]string{}},
		{"deprovision/{kind?}/{id?}", "deprovision/operations/x", true, map[string]string{"kind": "operations", "id": "x"}},
		{"deprovision/{kind?}/{id?}", "deprovision/a/b/c", false, nil},
		{"orders/{id:int}", "orders/42", true, map[string]string{"id": "42"}},
		{"orders/{id}", "orders", false, nil},
	} {
		p, ok := matchRoute(c.tmpl, strings.Split(c.path, "/"))
		if ok != c.ok || (ok && len(p) != len(c.params)) {
			t.Errorf("matchRoute(%s, %s) = %v %v", c.tmpl, c.path, p, ok)
		}
		for k, v := range c.params {
			if p[k] != v {
				t.Errorf("matchRoute(%s, %s)[%s] = %q, want %q", c.tmpl, c.path, k, p[k], v)
			}
		}
	}
}

func TestLoadAppRejects(t *testing.T) {
	host := `{"version":"2.0","customHandler":{"description":{"defaultExecutablePath":"h"}}}`
	for name, c := range map[string]struct{ host, folder, fn, want string }{
		"old version":        {`{"version":"1.0","customHandler":{"description":{"defaultExecutablePath":"h"}}}`, "F", eventFunction, "version"},
		"no custom handler":  {`{"version":"2.0"}`, "F", eventFunction, "defaultExecutablePath"},
		"underscore binding": {host, "F", `{"bindings":[{"type":"eventGridTrigger","direction":"in","name":"my_event"}]}`, "not valid"},
		"two triggers":       {host, "F", `{"bindings":[{"type":"eventGridTrigger","direction":"in","name":"a"},{"type":"timerTrigger","direction":"in","name":"b","schedule":"* * * * * *"}]}`, "more than one trigger"},
		"table output":       {host, "F", `{"bindings":[{"type":"eventGridTrigger","direction":"in","name":"a"},{"type":"table","direction":"out","name":"t"}]}`, "does not write output binding"},
		"unknown trigger":    {host, "F", `{"bindings":[{"type":"blobTrigger","direction":"in","name":"a"}]}`, "cannot drive"},
		"bad folder name":    {host, "9F", eventFunction, "not a valid function name"},
	} {
		dir := t.TempDir()
		writeFile(t, filepath.Join(dir, "host.json"), c.host)
		writeFile(t, filepath.Join(dir, c.folder, "function.json"), c.fn)
		_, err := LoadApp(dir)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want it to mention %q", name, err, c.want)
		}
	}
}

// A defaultExecutablePath that names a folder under the app root (a Go package folder with the
// binary's name, say) is reported as such, not started.
func TestExecutableFolderIsRefused(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "handler", "x.go"), "package x")
	app := &App{Root: dir}
	app.Host.CustomHandler = &CustomHandlerConfig{}
	app.Host.CustomHandler.Description.DefaultExecutablePath = "handler"
	_, _, _, err := executable(app, nil)
	if err == nil || !strings.Contains(err.Error(), "is a folder") {
		t.Errorf("err = %v, want it to say the path is a folder", err)
	}
}
