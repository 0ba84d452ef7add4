package main

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The Application Insights queries in docs/app.md ask for log lines by their msg and read
// their attributes: each message and each attribute they name must be one the code writes, so
// that a renamed message breaks this test rather than an operator's query.
func TestLogQueriesNameWhatTheCodeWrites(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("docs", "app.md"))
	if err != nil {
		t.Fatal(err)
	}
	var queries strings.Builder
	for _, block := range regexp.MustCompile("(?s)```kusto\n(.*?)```").FindAllStringSubmatch(string(doc), -1) {
		queries.WriteString(block[1])
	}
	if queries.Len() == 0 {
		t.Fatal("docs/app.md has no KQL queries")
	}
	var code strings.Builder
	err = filepath.WalkDir(".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "node_modules" || strings.HasPrefix(d.Name(), ".") && p != ".") {
			return filepath.SkipDir
		}
		if strings.HasSuffix(p, ".go") && !strings.HasSuffix(p, "_test.go") {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			code.Write(b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	written := code.String()
	msgs := regexp.MustCompile(`tostring\(log\.msg\) == "([^"]+)"`).FindAllStringSubmatch(queries.String(), -1)
	if len(msgs) == 0 {
		t.Fatal("the queries select no message")
	}
	for _, m := range msgs {
		if !strings.Contains(written, `"`+m[1]+`"`) {
			t.Errorf("the queries look for msg %q, which no code logs", m[1])
		}
	}
	for _, a := range regexp.MustCompile(`\blog\.([A-Za-z]+)`).FindAllStringSubmatch(queries.String(), -1) {
		if a[1] == "msg" || a[1] == "level" {
			continue // every slog line has them
		}
		if !strings.Contains(written, `"`+a[1]+`", `) {
			t.Errorf("the queries read attribute %q, which no code logs", a[1])
		}
	}
}
