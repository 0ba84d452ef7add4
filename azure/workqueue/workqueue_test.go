package workqueue_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"

	"dpsdeprov/azure/journal"
	"dpsdeprov/azure/workqueue"
	"dpsdeprov/deprovision"
	"dpsdeprov/deprovision/fake"
	"dpsdeprov/handler"
	"dpsdeprov/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func newQueue(t *testing.T) (*workqueue.Queue, *azqueue.QueueClient) {
	t.Helper()
	a := testenv.SharedAzurite(t)
	svc, err := azqueue.NewServiceClientFromConnectionString(a.ConnectionString(), nil)
	if err != nil {
		t.Fatal(err)
	}
	name := strings.ToLower(testenv.UniqueName("work"))
	ctx := context.Background()
	q, err := workqueue.Create(ctx, svc, name)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := workqueue.Create(ctx, svc, name); err != nil {
		t.Fatalf("creating an existing queue again: %v", err)
	}
	return q, svc.NewQueueClient(name)
}

// A batch goes on the queue as the GroupWork trigger reads it: base64 of the JSON the
// handler decodes strictly, members and batch number intact, and it never expires.
func TestEnqueueWritesWhatGroupWorkReads(t *testing.T) {
	q, raw := newQueue(t)
	ctx := context.Background()
	b := &deprovision.WorkBatch{OperationID: "op-1", Hub: "hub1.azure-devices.net", Action: deprovision.ActionDisable,
		StatusReason: "group compromised", Seq: 7, Members: []deprovision.WorkMember{{RegistrationID: "r1", DeviceID: "d1"}, {RegistrationID: "r2"}}}
	if err := q.Enqueue(ctx, b); err != nil {
		t.Fatal(err)
	}
	resp, err := raw.DequeueMessages(ctx, &azqueue.DequeueMessagesOptions{NumberOfMessages: to.Ptr(int32(1))})
	if err != nil || len(resp.Messages) != 1 {
		t.Fatalf("dequeue: %v %+v", err, resp)
	}
	m := resp.Messages[0]
	if m.ExpirationTime != nil && m.ExpirationTime.Before(time.Now().AddDate(1, 0, 0)) {
		t.Errorf("the message expires at %s; a batch must wait as long as the hubs' budgets need", m.ExpirationTime)
	}
	body, err := base64.StdEncoding.DecodeString(*m.MessageText)
	if err != nil {
		t.Fatalf("the message is not base64 (host.json messageEncoding): %v", err)
	}
	var got handler.GroupWorkItem
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("the message is not a group work item: %v\n%s", err, body)
	}
	if fmt.Sprint(got) != fmt.Sprint(*b) {
		t.Errorf("got %+v, want %+v", got, *b)
	}
}

// A batch too large for a queue message is refused with an error that says so, not enqueued
// truncated.
func TestEnqueueRefusesAnOversizedBatch(t *testing.T) {
	q, _ := newQueue(t)
	b := &deprovision.WorkBatch{OperationID: "op-1", Hub: "hub1", Action: deprovision.ActionDelete}
	for i := range 100 {
		b.Members = append(b.Members, deprovision.WorkMember{RegistrationID: strings.Repeat("x", 500) + fmt.Sprint(i)})
	}
	err := q.Enqueue(context.Background(), b)
	if err == nil || !strings.Contains(err.Error(), "at most") || deprovision.IsTransient(err) {
		t.Fatalf("oversized batch: %v, want a permanent error naming the limit", err)
	}
}

// The fan-out through the real queue and the Table journal: the engine enqueues the group's
// batches, workers read them off the queue as the GroupWork function does (through the
// handler's group worker), and the operation ends when the last batch is applied.
func TestFanOutThroughTheQueue(t *testing.T) {
	ctx := context.Background()
	q, raw := newQueue(t)
	a := testenv.SharedAzurite(t)
	tables, err := aztables.NewServiceClientFromConnectionString(a.ConnectionString(), nil)
	if err != nil {
		t.Fatal(err)
	}
	j, err := journal.New(ctx, tables, journal.Options{TablePrefix: testenv.UniqueName("wq")})
	if err != nil {
		t.Fatal(err)
	}
	const hub1, hub2, n = "hub1.azure-devices.net", "hub2.azure-devices.net", 250
	dps, hubs := fake.NewDPS(), fake.NewHubDevices(hub1, hub2)
	dps.AddGroup(deprovision.Group{ID: "g1", Attestation: deprovision.AttestationSymmetricKey, Enabled: true}, "a2V5")
	for i := range n {
		id := fmt.Sprintf("m-%04d", i)
		h := []string{hub1, hub2}[i%2]
		dps.AddRegistration(deprovision.Registration{RegistrationID: id, DeviceID: id, AssignedHub: h}, "g1")
		hubs.AddDevice(deprovision.Device{Hub: h, DeviceID: id, Enabled: true, AuthType: "sas"})
	}
	e := deprovision.NewEngine(deprovision.Deps{Enrollments: dps, Registrations: dps, Devices: hubs, Journal: j,
		Logger: slog.New(slog.DiscardHandler), Work: q}, deprovision.Config{GroupPageSize: 100})
	op, err := e.Submit(ctx, deprovision.Request{EventID: "e1", Source: "/security", Intent: deprovision.IntentGroupCompromised,
		EnrollmentGroupID: "g1", EventTime: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if op.Status != deprovision.StatusRunning || op.Progress.Batches == 0 {
		t.Fatalf("after the fan-out: %s %+v", op.Status, op.Progress)
	}
	w := &handler.EngineGroupWorker{Engine: e}
	applied := 0
	for {
		resp, err := raw.DequeueMessages(ctx, &azqueue.DequeueMessagesOptions{NumberOfMessages: to.Ptr(int32(32))})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Messages) == 0 {
			break
		}
		for _, m := range resp.Messages {
			body, _ := base64.StdEncoding.DecodeString(*m.MessageText)
			if err := w.Apply(ctx, handler.QueueMessage{Body: body, ID: *m.MessageID, DequeueCount: *m.DequeueCount}); err != nil {
				t.Fatal(err)
			}
			applied++
			if _, err := raw.DeleteMessage(ctx, *m.MessageID, *m.PopReceipt, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	got, err := j.GetOperation(ctx, op.ID)
	if err != nil {
		t.Fatal(err)
	}
	if applied != op.Progress.Batches || got.Status != deprovision.StatusSucceeded || got.Progress.Done != n {
		t.Fatalf("%d messages applied for %d batches; operation %s %+v", applied, op.Progress.Batches, got.Status, got.Progress)
	}
	for i := range n {
		id := fmt.Sprintf("m-%04d", i)
		if d, _ := hubs.Device([]string{hub1, hub2}[i%2], id); d.Enabled {
			t.Fatalf("member %s still enabled", id)
		}
	}
}

// A batch that reached the poison queue without being journaled (the handler died during its
// last delivery) is settled by a sweep: applied once more and counted, so its operation ends;
// a message that is not a batch stays for an operator.
func TestSweepSettlesPoisonedBatches(t *testing.T) {
	ctx := context.Background()
	a := testenv.SharedAzurite(t)
	svc, err := azqueue.NewServiceClientFromConnectionString(a.ConnectionString(), nil)
	if err != nil {
		t.Fatal(err)
	}
	name := strings.ToLower(testenv.UniqueName("work"))
	q, err := workqueue.Create(ctx, svc, name)
	if err != nil {
		t.Fatal(err)
	}
	poison := workqueue.NewPoison(svc, name)
	if res, err := poison.Sweep(ctx, 10, nil); err != nil || res != (workqueue.SweepResult{}) {
		t.Fatalf("sweeping a poison queue that does not exist: %+v %v", res, err)
	}
	tables, err := aztables.NewServiceClientFromConnectionString(a.ConnectionString(), nil)
	if err != nil {
		t.Fatal(err)
	}
	j, err := journal.New(ctx, tables, journal.Options{TablePrefix: testenv.UniqueName("wp")})
	if err != nil {
		t.Fatal(err)
	}
	const hub1, n = "hub1.azure-devices.net", 150
	dps, hubs := fake.NewDPS(), fake.NewHubDevices(hub1)
	dps.AddGroup(deprovision.Group{ID: "g1", Attestation: deprovision.AttestationSymmetricKey, Enabled: true}, "a2V5")
	for i := range n {
		id := fmt.Sprintf("m-%04d", i)
		dps.AddRegistration(deprovision.Registration{RegistrationID: id, DeviceID: id, AssignedHub: hub1}, "g1")
		hubs.AddDevice(deprovision.Device{Hub: hub1, DeviceID: id, Enabled: true, AuthType: "sas"})
	}
	e := deprovision.NewEngine(deprovision.Deps{Enrollments: dps, Registrations: dps, Devices: hubs, Journal: j,
		Logger: slog.New(slog.DiscardHandler), Work: q}, deprovision.Config{GroupPageSize: 1000})
	op, err := e.Submit(ctx, deprovision.Request{EventID: "e1", Source: "/security", Intent: deprovision.IntentGroupCompromised,
		EnrollmentGroupID: "g1", EventTime: time.Now()})
	if err != nil || op.Progress.Batches != 2 {
		t.Fatalf("fan-out: %v %+v", err, op)
	}
	raw := svc.NewQueueClient(name)
	pq := svc.NewQueueClient(name + workqueue.PoisonSuffix)
	if _, err := pq.Create(ctx, nil); err != nil {
		t.Fatal(err)
	}
	resp, err := raw.DequeueMessages(ctx, &azqueue.DequeueMessagesOptions{NumberOfMessages: to.Ptr(int32(2))})
	if err != nil || len(resp.Messages) != 2 {
		t.Fatalf("dequeue: %v %+v", err, resp)
	}
	// The first batch is applied by a worker; the second is moved to the poison queue as the
	// host would after the last delivery, unjournaled.
	w := &handler.EngineGroupWorker{Engine: e}
	body, _ := base64.StdEncoding.DecodeString(*resp.Messages[0].MessageText)
	if err := w.Apply(ctx, handler.QueueMessage{Body: body, ID: *resp.Messages[0].MessageID, DequeueCount: 1}); err != nil {
		t.Fatal(err)
	}
	for _, text := range []string{*resp.Messages[1].MessageText, "not a batch"} {
		if _, err := pq.EnqueueMessage(ctx, text, nil); err != nil {
			t.Fatal(err)
		}
	}
	if mid, _ := j.GetOperation(ctx, op.ID); mid.Status != deprovision.StatusRunning {
		t.Fatalf("with a batch in the poison queue the operation is %s", mid.Status)
	}
	// Fresh poison messages are left alone (MinAge), visible for whoever watches the queue.
	res, err := poison.Sweep(ctx, 10, e.SettlePoisoned)
	if err != nil || res != (workqueue.SweepResult{Young: 2}) {
		t.Fatalf("first sweep: %+v %v, want both messages left as young", res, err)
	}
	poison.Now = func() time.Time { return time.Now().Add(time.Hour) } // the messages are an hour old
	res, err = poison.Sweep(ctx, 10, e.SettlePoisoned)
	if err != nil || res.Settled != 1 || res.Kept != 1 {
		t.Fatalf("sweep: %+v %v", res, err)
	}
	got, err := j.GetOperation(ctx, op.ID)
	if err != nil || got.Status != deprovision.StatusSucceeded || got.Progress.Done != n {
		t.Fatalf("after the sweep: %v %s %+v", err, got.Status, got.Progress)
	}
	left, err := pq.PeekMessages(ctx, &azqueue.PeekMessagesOptions{NumberOfMessages: to.Ptr(int32(32))})
	if err != nil {
		t.Fatal(err)
	}
	if len(left.Messages) != 0 {
		t.Errorf("%d messages visible in the poison queue right after the sweep; the kept one should be held", len(left.Messages))
	}
}

// drainBurst takes every message off the queue and reads each as the BurstWork function does.
func drainBurst(t *testing.T, raw *azqueue.QueueClient) [][]deprovision.Request {
	t.Helper()
	var out [][]deprovision.Request
	for {
		resp, err := raw.DequeueMessages(context.Background(), &azqueue.DequeueMessagesOptions{NumberOfMessages: to.Ptr(int32(32))})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Messages) == 0 {
			return out
		}
		for _, m := range resp.Messages {
			if len(*m.MessageText) > 64*1024 {
				t.Errorf("a message of %d characters; a queue message holds 64 KiB", len(*m.MessageText))
			}
			body, err := base64.StdEncoding.DecodeString(*m.MessageText)
			if err != nil {
				t.Fatalf("the message is not base64 (host.json messageEncoding): %v", err)
			}
			reqs, err := handler.BurstRequests(body)
			if err != nil {
				t.Fatalf("the message is not what BurstWork reads: %v\n%s", err, body)
			}
			out = append(out, reqs)
		}
	}
}

// Requests deferred together go to the burst queue ten to a message, each caller returning
// once its message is on the queue; large requests go fewer to a message, so that each fits;
// a lone request is sent on its own.
func TestRequestBatcherGathersDeferredRequests(t *testing.T) {
	q, raw := newQueue(t)
	b := workqueue.NewRequestBatcher(q, &workqueue.BatchOptions{Wait: time.Minute}) // only full messages go before the test ends
	ctx := context.Background()
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := deprovision.Request{EventID: fmt.Sprintf("e%02d", i), Source: "/security", Intent: deprovision.IntentCompromised, RegistrationID: fmt.Sprintf("d%02d", i)}
			if err := b.Defer(ctx, req); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	msgs := drainBurst(t, raw)
	seen := map[string]bool{}
	for _, m := range msgs {
		if len(m) != 10 {
			t.Errorf("a message of %d requests, want 10", len(m))
		}
		for _, r := range m {
			seen[r.EventID] = true
		}
	}
	if len(msgs) != 2 || len(seen) != 20 {
		t.Fatalf("%d messages holding %d distinct requests, want 2 holding 20", len(msgs), len(seen))
	}

	// Requests of 9 KB each (a long certificate chain) go four to a message, so that each fits
	// (45 KiB of JSON, 60 KiB encoded); a lone request goes once its Wait is over.
	big := workqueue.NewRequestBatcher(q, &workqueue.BatchOptions{Wait: 100 * time.Millisecond})
	for i := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := deprovision.Request{EventID: fmt.Sprintf("big%02d", i), Source: "/security", Intent: deprovision.IntentCompromised,
				RegistrationID: "d", CertificatePEM: strings.Repeat("A", 9*1024)}
			if err := big.Defer(ctx, req); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	msgs = drainBurst(t, raw)
	n := 0
	for _, m := range msgs {
		n += len(m)
		if len(m) > 4 {
			t.Errorf("a message of %d requests of 9 KB; more than four do not fit", len(m))
		}
	}
	if n != 10 || len(msgs) < 3 {
		t.Errorf("%d large requests in %d messages, want 10 in at least 3", n, len(msgs))
	}
	if err := big.Defer(ctx, deprovision.Request{EventID: "lone", Source: "/security", Intent: deprovision.IntentLost, RegistrationID: "d"}); err != nil {
		t.Fatal(err)
	}
	if msgs = drainBurst(t, raw); len(msgs) != 1 || len(msgs[0]) != 1 || msgs[0][0].EventID != "lone" {
		t.Errorf("a lone request: %v, want a message of its own", msgs)
	}
}
