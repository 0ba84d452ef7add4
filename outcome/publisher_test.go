package outcome

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/messaging/eventgrid/azeventgrid"

	"dpsdeprov/deprovision"
)

// topic is a local stand-in for an Event Grid topic's publish endpoint: it checks what Event
// Grid checks (the key header, the CloudEvents batch content type) and keeps what it accepts.
type topic struct {
	mu       sync.Mutex
	failures int // answer 503 this many times first
	status   int // when set, answer this status always
	calls    int
	events   []map[string]any
	headers  http.Header
}

func (tp *topic) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	tp.calls++
	tp.headers = r.Header.Clone()
	if r.Header.Get("aeg-sas-key") != "topic-key" {
		http.Error(w, `{"error":{"code":"Unauthorized","message":"bad key"}}`, http.StatusUnauthorized)
		return
	}
	if !strings.HasPrefix(r.Header.Get("Content-Type"), "application/cloudevents-batch+json") {
		http.Error(w, "content type", http.StatusBadRequest)
		return
	}
	if tp.status != 0 {
		w.WriteHeader(tp.status)
		return
	}
	if tp.failures > 0 {
		tp.failures--
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	b, _ := io.ReadAll(r.Body)
	var batch []map[string]any
	if err := json.Unmarshal(b, &batch); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	tp.events = append(tp.events, batch...)
}

type journalSpy struct {
	mu   sync.Mutex
	recs []deprovision.StepRecord
}

func (j *journalSpy) RecordStep(ctx context.Context, rec deprovision.StepRecord) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.recs = append(j.recs, rec)
	return nil
}

func newPublisher(t *testing.T, tp *topic, j *journalSpy) *Publisher {
	t.Helper()
	srv := httptest.NewTLSServer(tp)
	t.Cleanup(srv.Close)
	opts := NewClientOptions(srv.Client())
	opts.Retry.MaxRetries = -1 // the publisher's own attempts are under test here
	c, err := azeventgrid.NewClientWithSharedKeyCredential(srv.URL+"/api/events", azcore.NewKeyCredential("topic-key"), opts)
	if err != nil {
		t.Fatal(err)
	}
	return NewPublisher(c, PublisherOptions{Source: "/test/app", Attempts: 3, Backoff: time.Millisecond, Journal: j})
}

func sampleOp(status deprovision.Status) *deprovision.Operation {
	return &deprovision.Operation{
		ID: "op-1", Status: status, Reason: "done",
		Request: deprovision.Request{EventID: "e1", Source: "/s", Intent: deprovision.IntentCompromised, RegistrationID: "sensor-042",
			CertificatePEM: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"},
		Plan: &deprovision.Plan{Path: "individual/tpm/revoke", Steps: []deprovision.Step{{Kind: deprovision.StepDisableEnrollment, Target: "dps/enrollments/sensor-042", Reason: "r", Params: map[string]string{"k": "v"}}}},
	}
}

func TestPublishesOutcomeAfterTransientFailures(t *testing.T) {
	tp := &topic{failures: 2}
	j := &journalSpy{}
	p := newPublisher(t, tp, j)
	p.OperationEnded(context.Background(), sampleOp(deprovision.StatusSucceeded))
	if err := p.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(tp.events) != 1 || tp.calls != 3 {
		t.Fatalf("events %d after %d calls", len(tp.events), tp.calls)
	}
	ev := tp.events[0]
	if ev["type"] != TypeCompleted || ev["source"] != "/test/app" || ev["subject"] != "devices/sensor-042" || ev["specversion"] != "1.0" || ev["id"] != "op-1/succeeded" {
		t.Fatalf("event %v", ev)
	}
	data := ev["data"].(map[string]any)
	if data["operationId"] != "op-1" || data["registrationId"] != "sensor-042" || data["hasCertificate"] != true {
		t.Fatalf("data %v", data)
	}
	b, _ := json.Marshal(ev)
	if strings.Contains(string(b), "BEGIN CERTIFICATE") || strings.Contains(string(b), `"k"`) {
		t.Fatalf("the event carries more than the summary: %s", b)
	}
	if len(j.recs) != 0 {
		t.Fatalf("a publish that succeeded was journaled as failed: %+v", j.recs)
	}
}

func TestFailedPublishIsJournaledNotFatal(t *testing.T) {
	tp := &topic{failures: 100}
	j := &journalSpy{}
	p := newPublisher(t, tp, j)
	p.OperationEnded(context.Background(), sampleOp(deprovision.StatusRejected))
	_ = p.Close(context.Background())
	if tp.calls != 3 || len(j.recs) != 1 {
		t.Fatalf("calls %d, journal %+v", tp.calls, j.recs)
	}
	rec := j.recs[0]
	if rec.OperationID != "op-1" || rec.Kind != StepPublish || rec.Outcome != deprovision.StepFailed || rec.HTTPStatus != 503 {
		t.Fatalf("record %+v", rec)
	}
	if strings.Contains(rec.Error, "topic-key") {
		t.Fatal("the key leaked into the journal")
	}
}

func TestRefusedPublishIsNotRetried(t *testing.T) {
	tp := &topic{status: http.StatusForbidden}
	j := &journalSpy{}
	p := newPublisher(t, tp, j)
	p.OperationEnded(context.Background(), sampleOp(deprovision.StatusFailed))
	_ = p.Close(context.Background())
	if tp.calls != 1 || len(j.recs) != 1 || j.recs[0].HTTPStatus != 403 {
		t.Fatalf("calls %d, journal %+v", tp.calls, j.recs)
	}
}

func TestDryRunIsNotAnnounced(t *testing.T) {
	tp := &topic{}
	p := newPublisher(t, tp, &journalSpy{})
	p.OperationEnded(context.Background(), sampleOp(deprovision.StatusPlanned))
	p.OperationEnded(context.Background(), sampleOp(deprovision.StatusRunning))
	_ = p.Close(context.Background())
	if tp.calls != 0 {
		t.Fatalf("%d publishes for a dry run and a running operation", tp.calls)
	}
	for st, want := range map[deprovision.Status]string{deprovision.StatusSucceeded: TypeCompleted, deprovision.StatusFailed: TypeFailed, deprovision.StatusRejected: TypeRejected} {
		if got, ok := EventType(st); !ok || got != want {
			t.Errorf("EventType(%s) = %s", st, got)
		}
	}
}
