package devhost

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"testing"
)

// records collects what devhost logs, signalling each record.
type records struct {
	mu  sync.Mutex
	got []slog.Record
	ch  chan struct{}
}

func (r *records) Enabled(context.Context, slog.Level) bool { return true }
func (r *records) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	r.got = append(r.got, rec.Clone())
	r.mu.Unlock()
	select {
	case r.ch <- struct{}{}:
	default:
	}
	return nil
}
func (r *records) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *records) WithGroup(string) slog.Handler      { return r }

// console returns the records devhost logged from the handler's output, by message.
func (r *records) console() map[string]slog.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]slog.Record{}
	for _, rec := range r.got {
		rec.Attrs(func(a slog.Attr) bool {
			if a.Key == "category" && a.Value.String() == ConsoleCategory {
				out[rec.Message] = rec
			}
			return true
		})
	}
	return out
}

// Without HandlerOutput, devhost logs each line the handler writes as the host does: stdout at
// Information, stderr at Error unless the line says "warn" (any case), then at Warning.
func TestHandlerOutputLoggedAtTheHostsLevels(t *testing.T) {
	app := newTestApp(t, "", map[string]string{"Orders": `{"bindings":[{"type":"httpTrigger","direction":"in","name":"req"},{"type":"http","direction":"out","name":"res"}]}`})
	console, _ := json.Marshal(map[string][]string{
		"Stdout": {`{"level":"INFO","msg":"operation ended"}`, `{"level":"ERROR","msg":"printed to stdout"}`},
		"Stderr": {`{"level":"WARN","msg":"event rejected"}`, `{"level":"ERROR","msg":"operation failed"}`, `panic: Warning, device lost`},
	})
	rec := &records{ch: make(chan struct{}, 1)}
	startHost(t, app, nil, map[string]string{"DEVHOST_TEST_CONSOLE": string(console)}, Options{Logger: slog.New(rec)})
	want := map[string]slog.Level{
		`{"level":"INFO","msg":"operation ended"}`:    slog.LevelInfo,
		`{"level":"ERROR","msg":"printed to stdout"}`: slog.LevelInfo,
		`{"level":"WARN","msg":"event rejected"}`:     slog.LevelWarn,
		`{"level":"ERROR","msg":"operation failed"}`:  slog.LevelError,
		`panic: Warning, device lost`:                 slog.LevelWarn,
	}
	waitFor(t, "the handler's five lines", func() bool { return len(rec.console()) >= len(want) })
	got := rec.console()
	for line, level := range want {
		r, ok := got[line]
		if !ok {
			t.Errorf("line %q was not logged", line)
			continue
		}
		if r.Level != level {
			t.Errorf("line %q logged at %s, want %s", line, r.Level, level)
		}
	}
}
