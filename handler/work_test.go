package handler

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"dpsdeprov/deprovision"
)

type recordingApplier struct {
	got  []deprovision.WorkBatch
	opts []deprovision.BatchOptions
	err  error
}

func (r *recordingApplier) ApplyBatch(_ context.Context, b *deprovision.WorkBatch, o deprovision.BatchOptions) (deprovision.MemberResult, error) {
	r.got = append(r.got, *b)
	r.opts = append(r.opts, o)
	return deprovision.MemberResult{Done: len(b.Members)}, r.err
}

// The group worker hands the engine the batch as enqueued, and says when the queue will not
// deliver it again (the dequeue count at host.json's maxDequeueCount), so that the engine can
// journal a failing batch before it is poisoned.
func TestGroupWorkerPassesTheBatchAndTheLastTry(t *testing.T) {
	body := `{"operationId":"op-1","hub":"hub1.azure-devices.net","action":"disable","batch":3,"statusReason":"r",
		"members":[{"registrationId":"a","deviceId":"A"},{"registrationId":"b"}]}`
	for _, c := range []struct {
		max, dequeue int64
		last         bool
	}{{0, 1, false}, {0, 4, false}, {0, 5, true}, {8, 5, false}, {8, 8, true}, {2, 3, true}} {
		r := &recordingApplier{}
		w := &EngineGroupWorker{Engine: r, MaxDequeueCount: c.max}
		if err := w.Apply(context.Background(), QueueMessage{Body: []byte(body), ID: "m1", DequeueCount: c.dequeue}); err != nil {
			t.Fatal(err)
		}
		if len(r.got) != 1 || r.opts[0].LastTry != c.last {
			t.Fatalf("max %d, dequeue %d: last try %v, want %v", c.max, c.dequeue, r.opts[0].LastTry, c.last)
		}
		// A message seen before may have been applied and journaled: the engine looks first.
		if r.opts[0].Redelivered != (c.dequeue > 1) {
			t.Fatalf("dequeue %d: redelivered %v", c.dequeue, r.opts[0].Redelivered)
		}
		b := r.got[0]
		if b.OperationID != "op-1" || b.Seq != 3 || b.Action != deprovision.ActionDisable || len(b.Members) != 2 || b.Members[0].DeviceID != "A" {
			t.Fatalf("batch %+v", b)
		}
	}
	r := &recordingApplier{err: deprovision.Transient(errors.New("503"))}
	w := &EngineGroupWorker{Engine: r}
	if err := w.Apply(context.Background(), QueueMessage{Body: []byte(body), ID: "m1", DequeueCount: 1}); !deprovision.IsTransient(err) {
		t.Fatalf("a failing batch: %v, want the engine's transient error", err)
	}
	for _, bad := range []string{`{"operationId":"op-1","hub":"h","action":"disable","members":[],"batch":1}`,
		`{"operationId":"op-1","hub":"h","action":"disable","members":[{"registrationId":"a"}],"extra":1}`, `not json`} {
		err := w.Apply(context.Background(), QueueMessage{Body: []byte(bad), ID: "m2", DequeueCount: 1})
		if err == nil || !strings.Contains(err.Error(), "m2") {
			t.Errorf("message %s: %v, want an error naming the message", bad, err)
		}
	}
}

// burstInvocation is the host's invocation of BurstWork for a message whose text is body.
func burstInvocation(t *testing.T, body string) []byte {
	t.Helper()
	text, _ := json.Marshal(body)
	b, err := json.Marshal(map[string]any{"Data": map[string]any{"message": string(text)},
		"Metadata": map[string]any{"DequeueCount": "1", "Id": `"m-burst"`}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A burst message holds the requests a burst deferred together: BurstWork submits every one
// of them, and reads the one-request messages of earlier versions too. A request that fails
// in a way worth retrying fails the invocation, so the message comes again; a message that is
// not deferred requests fails naming the message.
func TestBurstWorkSubmitsEveryDeferredRequest(t *testing.T) {
	eng := newFakeEngine()
	srv := newTestServer(t, eng, Options{})
	req := func(id string) deprovision.Request {
		return deprovision.Request{EventID: id, Source: "/security", Intent: deprovision.IntentCompromised, RegistrationID: "dev-" + id}
	}
	batch, _ := json.Marshal(deprovision.DeferredRequests{Requests: []deprovision.Request{req("a"), req("b"), req("c")}})
	if status, r := post(t, srv, FunctionBurstWork, burstInvocation(t, string(batch))); status != 200 {
		t.Fatalf("a message of three requests: %d %v", status, r.Logs)
	}
	one, _ := json.Marshal(req("d"))
	if status, r := post(t, srv, FunctionBurstWork, burstInvocation(t, string(one))); status != 200 {
		t.Fatalf("a message of one bare request: %d %v", status, r.Logs)
	}
	var got []string
	for _, r := range eng.submitted {
		got = append(got, r.EventID)
	}
	slices.Sort(got)
	if strings.Join(got, ",") != "a,b,c,d" {
		t.Fatalf("submitted %v, want a, b, c and d", got)
	}
	eng.fail = deprovision.Transient(errors.New("journal unavailable"))
	if status, _ := post(t, srv, FunctionBurstWork, burstInvocation(t, string(batch))); status < 300 {
		t.Fatalf("a transient failure answered %d; the message must come again", status)
	}
	eng.fail = nil
	for _, bad := range []string{`{"requests":[{"eventId":"x"}]}`, `{"requests":[],"extra":1}`, `not json`} {
		status, r := post(t, srv, FunctionBurstWork, burstInvocation(t, bad))
		if status < 300 || !strings.Contains(strings.Join(r.Logs, " "), "m-burst") {
			t.Errorf("message %s: %d %v, want a failure naming the message", bad, status, r.Logs)
		}
	}
}
