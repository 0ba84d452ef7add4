package hostlog

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
)

// hostLevel is how the Functions host reads a line of a custom handler
// (WorkerProcess.ParseErrorMessageAndLog with UseStdErrorStreamForErrorsOnly): stdout is
// Information; stderr is Warning when the line contains "warn" in any case, else Error.
func hostLevel(stderr bool, line string) string {
	switch {
	case !stderr:
		return "Information"
	case strings.Contains(strings.ToLower(line), "warn"):
		return "Warning"
	}
	return "Error"
}

// Each level lands where the host reads it at that level, including an error that mentions a
// warning, and every line is still JSON that says what was logged.
func TestLinesReachTheHostAtTheirLevel(t *testing.T) {
	var out, errs bytes.Buffer
	log := slog.New(New(&out, &errs, &slog.HandlerOptions{Level: slog.LevelDebug})).With("function", "DeviceEvents")
	ctx := With(context.Background(), "operation", "op-1", "device", "sensor-042", "group", "")
	log.DebugContext(ctx, "step", "kind", "dps.disable-enrollment")
	log.InfoContext(ctx, "operation ended", "status", "succeeded")
	log.WarnContext(ctx, "event rejected", "reason", "source not allowed")
	log.ErrorContext(ctx, "operation failed", "reason", "hub answered 403 (WARNING: Forbidden)", "device", "warn-sensor-7")
	log.ErrorContext(ctx, "invocation failed", "error", "journal unavailable")

	want := []struct {
		msg, level string
		stderr     bool
	}{
		{"step", "Information", false}, {"operation ended", "Information", false}, {"event rejected", "Warning", true},
		{"operation failed", "Error", true}, {"invocation failed", "Error", true},
	}
	lines := append(strings.Split(strings.TrimSpace(out.String()), "\n"), strings.Split(strings.TrimSpace(errs.String()), "\n")...)
	if len(lines) != len(want) {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), len(want), strings.Join(lines, "\n"))
	}
	for i, w := range want {
		line := lines[i]
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("line %d is not JSON: %v\n%s", i, err, line)
		}
		if rec["msg"] != w.msg {
			t.Fatalf("line %d says %v, want %q", i, rec["msg"], w.msg)
		}
		if got := hostLevel(w.stderr, line); got != w.level {
			t.Errorf("%q reaches the host as %s, want %s:\n%s", w.msg, got, w.level, line)
		}
		if rec["operation"] != "op-1" || rec["function"] != "DeviceEvents" {
			t.Errorf("%q lacks the context's or the logger's attributes: %s", w.msg, line)
		}
		if _, ok := rec["group"]; ok {
			t.Errorf("an empty context attribute was logged: %s", line)
		}
		if strings.Count(line, `"device"`) != 1 {
			t.Errorf("device appears twice (the record's own value must win over the context's): %s", line)
		}
	}
	var failed map[string]any
	_ = json.Unmarshal([]byte(lines[3]), &failed)
	if failed["reason"] != "hub answered 403 (WARNING: Forbidden)" || failed["device"] != "warn-sensor-7" {
		t.Fatalf("escaping changed what the error line says: %v", failed)
	}
}

// With merges: a later value replaces an earlier one for the same key.
func TestWithReplacesEarlierValues(t *testing.T) {
	ctx := With(context.Background(), "event", "e1", "operation", "op-1")
	ctx = With(ctx, "operation", "op-2", "device", "d")
	var got []string
	for _, a := range fromContext(ctx) {
		got = append(got, a.Key+"="+a.Value.String())
	}
	if strings.Join(got, " ") != "event=e1 operation=op-2 device=d" {
		t.Fatalf("context attributes %v", got)
	}
}
