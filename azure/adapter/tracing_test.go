package adapter_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/tracing"

	"dpsdeprov/azure/adapter"
	"dpsdeprov/azure/dps"
	"dpsdeprov/azure/internal/swaggercheck"
	"dpsdeprov/azure/iothub"
	"dpsdeprov/deprovision"
	"dpsdeprov/emulator"
	"dpsdeprov/internal/testenv"
)

// span is one span a recordingTracer saw end.
type span struct {
	id, parent int
	name       string
	kind       tracing.SpanKind
	attrs      map[string]any
	status     tracing.SpanStatus
}

// recordingTracer is a tracer provider that keeps every span, as an OpenTelemetry provider
// given to the app would export them.
type recordingTracer struct {
	mu    sync.Mutex
	next  int
	spans []span
}

type spanKey struct{}

func (r *recordingTracer) provider() tracing.Provider {
	return tracing.NewProvider(func(name, version string) tracing.Tracer {
		return tracing.NewTracer(func(ctx context.Context, spanName string, o *tracing.SpanOptions) (context.Context, tracing.Span) {
			r.mu.Lock()
			r.next++
			s := &span{id: r.next, name: spanName, kind: o.Kind, attrs: map[string]any{}}
			r.mu.Unlock()
			if p, ok := ctx.Value(spanKey{}).(*span); ok {
				s.parent = p.id
			}
			for _, a := range o.Attributes {
				s.attrs[a.Key] = a.Value
			}
			return context.WithValue(ctx, spanKey{}, s), tracing.NewSpan(tracing.SpanImpl{
				SetAttributes: func(attrs ...tracing.Attribute) {
					for _, a := range attrs {
						s.attrs[a.Key] = a.Value
					}
				},
				SetStatus: func(code tracing.SpanStatus, _ string) { s.status = code },
				End: func() {
					r.mu.Lock()
					defer r.mu.Unlock()
					r.spans = append(r.spans, *s)
				},
			})
		}, nil)
	}, nil)
}

// ended returns the spans named name, and the spans whose parent is one of them.
func (r *recordingTracer) ended(name string) (spans, children []span) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.spans {
		if s.name == name {
			spans = append(spans, s)
		}
	}
	for _, s := range r.spans {
		if slices.ContainsFunc(spans, func(p span) bool { return p.id == s.parent }) {
			children = append(children, s)
		}
	}
	return spans, children
}

// A tracer provider given to the clients sees every DPS and hub call the engine makes: one span
// per client method, in the Microsoft.Devices namespace, with the HTTP call as its child, and a
// span per page of a query.
func TestClientsTraceEveryCall(t *testing.T) {
	em := testenv.StartEmulator(t, emulator.Options{Hubs: []string{"hub1"}})
	info := em.Info()
	rec := &recordingTracer{}
	dco := swaggercheck.EmulatorOptions(t, em, nil, "")
	dco.TracingProvider = rec.provider()
	dc, err := dps.NewClientFromConnectionString(info.DPS.ConnectionString, &dps.ClientOptions{ClientOptions: dco})
	if err != nil {
		t.Fatal(err)
	}
	hc, err := iothub.NewClientFromConnectionString(info.Hubs[0].ConnectionString, &iothub.ClientOptions{ClientOptions: dco})
	if err != nil {
		t.Fatal(err)
	}
	enrollments, hubs := adapter.NewDPS(dc), adapter.NewHubDevices(map[string]*iothub.Client{info.Hubs[0].Host: hc})
	ctx := context.Background()

	if _, err := enrollments.GetEnrollment(ctx, "traced-1"); !errors.Is(err, deprovision.ErrNotFound) {
		t.Fatalf("GetEnrollment: %v, want not found", err)
	}
	if _, err := hubs.GetDevice(ctx, info.Hubs[0].Host, "traced-1"); !errors.Is(err, deprovision.ErrNotFound) {
		t.Fatalf("GetDevice: %v, want not found", err)
	}
	for page, err := range enrollments.GroupRegistrations(ctx, "traced-group", "", 10) {
		if err != nil {
			t.Fatalf("listing registrations: %v", err)
		}
		_ = page
	}

	for _, c := range []struct{ span, host string }{
		{"Client.GetEnrollment", info.DPS.Host},
		{"Client.GetDevice", info.Hubs[0].Host},
	} {
		spans, children := rec.ended(c.span)
		if len(spans) != 1 {
			t.Fatalf("%d %s spans, want 1 (all: %+v)", len(spans), c.span, rec.spans)
		}
		s := spans[0]
		if s.attrs["az.namespace"] != "Microsoft.Devices" || s.status != tracing.SpanStatusError {
			t.Errorf("%s: attributes %v, status %v; want az.namespace Microsoft.Devices and an error status (404)", c.span, s.attrs, s.status)
		}
		if len(children) != 1 || children[0].name != "HTTP GET" ||
			children[0].kind != tracing.SpanKindClient || children[0].attrs["http.status_code"] != 404 || children[0].attrs["net.peer.name"] != c.host {
			t.Errorf("%s: HTTP spans %+v, want one GET to %s answered 404", c.span, children, c.host)
		}
	}
	pages, children := rec.ended("Pager[QueryRegistrationStatesResponse].NextPage")
	if len(pages) != 1 || len(children) != 1 || children[0].name != "HTTP POST" {
		t.Errorf("query: page spans %+v with children %+v, want one page with its POST", pages, children)
	}
}
