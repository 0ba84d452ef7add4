// Package hostlog writes the custom handler's log as the Azure Functions host reads it.
//
// The host logs every line a custom handler writes to stdout at Information, and every line
// it writes to stderr at Error, unless the line contains "warn" (any case), which makes it a
// Warning (azure-functions-host WorkerProcess.ParseErrorMessageAndLog, with
// UseStdErrorStreamForErrorsOnly = true for custom handlers in HttpWorkerDescription; both
// under the category Host.Function.Console). So [New] writes JSON lines below Warn to stdout,
// and Warn and above to stderr: a Warn line says "WARN" in its level, and an Error line has
// every "warn" in it escaped (\u0077arn, the same JSON text to any JSON reader) so that the
// host cannot take an error for a warning because a device or a message mentions one.
//
// [With] attaches attributes to a context; every line logged with that context carries them,
// so that the engine's lines about an event name its operation, event and device without the
// engine knowing about events.
package hostlog

import (
	"bytes"
	"context"
	"io"
	"log/slog"
)

// New returns a handler writing JSON lines (slog.JSONHandler) by level: below slog.LevelWarn
// to stdout, the rest to stderr.
func New(stdout, stderr io.Writer, o *slog.HandlerOptions) slog.Handler {
	if o == nil {
		o = &slog.HandlerOptions{}
	}
	return &handler{
		out:   slog.NewJSONHandler(stdout, o),
		warn:  slog.NewJSONHandler(stderr, o),
		error: slog.NewJSONHandler(dewarn{stderr}, o),
	}
}

type handler struct {
	out, warn, error slog.Handler
}

func (h *handler) pick(l slog.Level) slog.Handler {
	switch {
	case l >= slog.LevelError:
		return h.error
	case l >= slog.LevelWarn:
		return h.warn
	}
	return h.out
}

// Enabled reports whether the stream for level logs it (all three share one level).
func (h *handler) Enabled(ctx context.Context, l slog.Level) bool { return h.pick(l).Enabled(ctx, l) }

// Handle writes r with the context's attributes (see With) that r does not already have.
func (h *handler) Handle(ctx context.Context, r slog.Record) error {
	if extra := fromContext(ctx); len(extra) > 0 {
		r = r.Clone()
		have := map[string]bool{}
		r.Attrs(func(a slog.Attr) bool { have[a.Key] = true; return true })
		for _, a := range extra {
			if !have[a.Key] {
				r.AddAttrs(a)
			}
		}
	}
	return h.pick(r.Level).Handle(ctx, r)
}

// WithAttrs returns a handler whose lines carry attrs.
func (h *handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &handler{out: h.out.WithAttrs(attrs), warn: h.warn.WithAttrs(attrs), error: h.error.WithAttrs(attrs)}
}

// WithGroup returns a handler whose later attributes are in group name.
func (h *handler) WithGroup(name string) slog.Handler {
	return &handler{out: h.out.WithGroup(name), warn: h.warn.WithGroup(name), error: h.error.WithGroup(name)}
}

// dewarn escapes every "warn" (any case) in a JSON line by writing its first letter as a \u
// escape. The word can only appear inside a JSON string (a key or a value), where the escape
// means the same letter; no JSON escape sequence contains a w, so none is split.
type dewarn struct{ w io.Writer }

func (d dewarn) Write(p []byte) (int, error) {
	if !containsWarn(p) {
		return d.w.Write(p)
	}
	var b bytes.Buffer
	for i := 0; i < len(p); i++ {
		if i+4 <= len(p) && bytes.EqualFold(p[i:i+4], []byte("warn")) {
			if p[i] == 'w' {
				b.WriteString(`\u0077`)
			} else {
				b.WriteString(`\u0057`)
			}
			continue
		}
		b.WriteByte(p[i])
	}
	if _, err := d.w.Write(b.Bytes()); err != nil {
		return 0, err
	}
	return len(p), nil
}

func containsWarn(p []byte) bool {
	return bytes.Contains(bytes.ToLower(p), []byte("warn"))
}

type ctxKey struct{}

// With returns ctx carrying attrs (alternating keys and values, or slog.Attr, as for
// slog.Logger.With) in addition to those ctx already carries; a later value for a key
// replaces the earlier one, and an empty string value is left out.
func With(ctx context.Context, args ...any) context.Context {
	var add []slog.Attr
	for _, a := range slog.Group("", args...).Value.Group() {
		if a.Value.Kind() == slog.KindString && a.Value.String() == "" {
			continue // an unknown field is left out rather than logged empty
		}
		add = append(add, a)
	}
	old := fromContext(ctx)
	merged := make([]slog.Attr, 0, len(old)+len(add))
	for _, a := range old {
		replaced := false
		for _, b := range add {
			replaced = replaced || b.Key == a.Key
		}
		if !replaced {
			merged = append(merged, a)
		}
	}
	merged = append(merged, add...)
	return context.WithValue(ctx, ctxKey{}, merged)
}

func fromContext(ctx context.Context) []slog.Attr {
	if ctx == nil {
		return nil
	}
	a, _ := ctx.Value(ctxKey{}).([]slog.Attr)
	return a
}
