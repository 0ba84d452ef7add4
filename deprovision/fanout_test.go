package deprovision_test

import (
	"context"
	"dpsdeprov/deprovision/fake"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	d "dpsdeprov/deprovision"
)

// run is what the app does with an event: a delivery of req to e (Submit), then the GroupWork
// function applying every batch the fan-out enqueued. It returns the operation as journaled
// at the end.
func (w *world) run(t *testing.T, e *d.Engine, req d.Request) *d.Operation {
	t.Helper()
	op := submit(t, e, req)
	if err := w.q.DeliverAll(context.Background(), e); err != nil {
		t.Fatalf("GroupWork for %s: %v", op.ID, err)
	}
	got, err := w.j.GetOperation(context.Background(), op.ID)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func fanOutWorld(n int) (*world, *fake.Queue, *d.Engine) {
	w := newWorld()
	setupGroup(n)(w)
	return w, w.q, w.engine(w.deps())
}

// A group fanned out through the queue: the parent stays running until the workers have
// applied every batch, a redelivered batch is counted once, and the last batch ends the
// operation and announces it once.
func TestFanOutEndsWithTheLastBatch(t *testing.T) {
	ctx := context.Background()
	const n = 1050 // 11 pages of 100, split over 2 hubs: batches of at most 100 per hub
	w, q, e := fanOutWorld(n)
	op := submit(t, e, fanOutReq("grp-1"))
	if op.Status != d.StatusRunning {
		t.Fatalf("after the fan-out the operation is %s (%s), want running until the batches are applied", op.Status, op.Reason)
	}
	batches := q.Take()
	if op.Progress.Total != n || op.Progress.Batches != len(batches) || !op.Progress.FannedOut {
		t.Fatalf("progress %+v after enqueuing %d batches", op.Progress, len(batches))
	}
	seen := map[string]bool{}
	for i, b := range batches {
		if b.Seq != i+1 || len(b.Members) == 0 || len(b.Members) > 100 {
			t.Fatalf("batch %d: seq %d with %d members", i, b.Seq, len(b.Members))
		}
		for _, m := range b.Members {
			if seen[m.RegistrationID] {
				t.Fatalf("member %s is in two batches", m.RegistrationID)
			}
			seen[m.RegistrationID] = true
			if want := []string{hub1, hub2}[memberIndex(t, m.RegistrationID)%2]; b.Hub != want {
				t.Fatalf("member %s batched for %s, assigned to %s", m.RegistrationID, b.Hub, want)
			}
		}
	}
	if len(seen) != n {
		t.Fatalf("%d members enqueued, want %d", len(seen), n)
	}

	// Workers apply the batches concurrently; every third batch is delivered twice.
	var wg sync.WaitGroup
	errs := make(chan error, 2*len(batches))
	for i, b := range batches {
		for range 1 + min(1, i%3/2) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := e.ApplyBatch(ctx, &b, d.BatchOptions{}); err != nil {
					errs <- err
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	got, steps, err := e.Operation(ctx, op.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != d.StatusSucceeded || got.Progress.Done != n || got.Progress.Failed != 0 || got.Progress.BatchesDone != len(batches) {
		t.Fatalf("after every batch: %s %q %+v", got.Status, got.Reason, got.Progress)
	}
	if ended := w.note.ops; len(ended) != 1 || ended[0] != op.ID+" succeeded" {
		t.Fatalf("announced %v, want the operation once, succeeded", ended)
	}
	for i := range n {
		id := fmt.Sprintf("m-%04d", i)
		if dev, _ := w.hubs.Device([]string{hub1, hub2}[i%2], id); dev.Enabled {
			t.Fatalf("member %s still enabled", id)
		}
	}
	records := 0
	for _, s := range steps {
		if s.Kind == d.StepGroupBatch {
			records++
			if s.Outcome != d.StepDone {
				t.Errorf("batch record %s: %s %s", s.Target, s.Outcome, s.Error)
			}
		}
	}
	if records != len(batches) {
		t.Errorf("%d batch records in the journal, want %d", records, len(batches))
	}

	// A late redelivery changes nothing.
	if _, err := e.ApplyBatch(ctx, &batches[0], d.BatchOptions{}); err != nil {
		t.Fatal(err)
	}
	if again, _, _ := e.Operation(ctx, op.ID); fmt.Sprint(again.Progress) != fmt.Sprint(got.Progress) || len(w.note.ops) != 1 {
		t.Fatalf("a late redelivery changed the operation: %+v", again.Progress)
	}
}

func memberIndex(t *testing.T, rid string) int {
	t.Helper()
	var i int
	if _, err := fmt.Sscanf(rid, "m-%d", &i); err != nil {
		t.Fatalf("member id %q: %v", rid, err)
	}
	return i
}

// The workers may finish before the fan-out does: then the fan-out's own last write ends the
// operation.
func TestFanOutEndsWhenWorkersWereFaster(t *testing.T) {
	w, _, _ := fanOutWorld(30)
	// A queue that applies each batch as soon as it is enqueued.
	deps := w.deps()
	var eng *d.Engine
	deps.Work = queueFunc(func(ctx context.Context, b *d.WorkBatch) error {
		_, err := eng.ApplyBatch(ctx, b, d.BatchOptions{})
		return err
	})
	eng = w.engine(deps)
	op := submit(t, eng, fanOutReq("grp-fast"))
	if op.Status != d.StatusSucceeded || op.Progress.Done != 30 || op.Progress.BatchesDone != op.Progress.Batches {
		t.Fatalf("%s %+v", op.Status, op.Progress)
	}
	if len(w.note.ops) != 1 {
		t.Fatalf("announced %v, want once", w.note.ops)
	}
}

type queueFunc func(context.Context, *d.WorkBatch) error

func (f queueFunc) Enqueue(ctx context.Context, b *d.WorkBatch) error { return f(ctx, b) }

// A queue outage in the middle of the fan-out: the delivery fails as transient, and the next
// delivery resumes at the first page not journaled, enqueuing its batches under the same
// numbers; nothing is lost or counted twice.
func TestFanOutResumesAfterAQueueOutage(t *testing.T) {
	ctx := context.Background()
	const n = 600
	_, q, e := fanOutWorld(n)
	q.FailAfter = 7 // page 1 gives batches 1-2, …; the outage strikes in page 4
	if _, err := e.Submit(ctx, fanOutReq("grp-2")); err == nil || !d.IsTransient(err) {
		t.Fatalf("Submit during the queue outage: %v, want a transient error", err)
	}
	q.FailAfter = 0
	op := submit(t, e, fanOutReq("grp-2"))
	if op.Status != d.StatusRunning || op.Progress.Total != n {
		t.Fatalf("after the resumed fan-out: %s %+v", op.Status, op.Progress)
	}
	batches := q.Take()
	bySeq := map[int]int{}
	for _, b := range batches {
		bySeq[b.Seq]++
	}
	if len(bySeq) != op.Progress.Batches {
		t.Fatalf("%d distinct batch numbers for %d batches", len(bySeq), op.Progress.Batches)
	}
	for _, b := range batches {
		if _, err := e.ApplyBatch(ctx, &b, d.BatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	got, _, _ := e.Operation(ctx, op.ID)
	if got.Status != d.StatusSucceeded || got.Progress.Done != n {
		t.Fatalf("%s %+v", got.Status, got.Progress)
	}
}

// A batch whose bulk call keeps failing is retried by the queue; on the last delivery its
// members are journaled as failed (and the error still returned, so the message is poisoned
// for an operator), and the operation ends failed, naming them.
func TestFanOutPoisonedBatchIsJournaled(t *testing.T) {
	ctx := context.Background()
	w, q, e := fanOutWorld(20)
	op := submit(t, e, fanOutReq("grp-3"))
	batches := q.Take()
	if len(batches) != 2 {
		t.Fatalf("%d batches, want 2 (one per hub)", len(batches))
	}
	if _, err := e.ApplyBatch(ctx, &batches[0], d.BatchOptions{}); err != nil {
		t.Fatal(err)
	}
	failing := d.Deps(w.deps())
	failing.Devices = failingBulk{w.hubs}
	fe := w.engine(failing)
	if _, err := fe.ApplyBatch(ctx, &batches[1], d.BatchOptions{}); err == nil || !d.IsTransient(err) {
		t.Fatalf("failing batch before the last try: %v, want transient", err)
	}
	if mid, _, _ := e.Operation(ctx, op.ID); mid.Progress.Failed != 0 || mid.Status != d.StatusRunning {
		t.Fatalf("a batch that will be retried was counted: %+v", mid.Progress)
	}
	if _, err := fe.ApplyBatch(ctx, &batches[1], d.BatchOptions{LastTry: true}); err == nil {
		t.Fatal("the last try of a failing batch returned no error; the message would not reach the poison queue")
	}
	got, steps, _ := e.Operation(ctx, op.ID)
	if got.Status != d.StatusFailed || got.Progress.Failed != len(batches[1].Members) || got.Progress.Done != len(batches[0].Members) {
		t.Fatalf("after the poisoned batch: %s %+v", got.Status, got.Progress)
	}
	if !strings.Contains(got.Reason, batches[1].Members[0].DeviceID) {
		t.Errorf("the reason does not name a failed member: %q", got.Reason)
	}
	failedRecs := 0
	for _, s := range steps {
		if s.Kind == d.StepGroupBatch && s.Outcome == d.StepFailed {
			failedRecs++
		}
	}
	if failedRecs != 1 {
		t.Errorf("%d failed batch records, want 1", failedRecs)
	}
}

type failingBulk struct{ d.Devices }

func (failingBulk) Bulk(context.Context, string, d.BulkMode, []d.BulkItem) ([]d.BulkItemResult, error) {
	return nil, d.Transient(errors.New("hub answered 503"))
}

func fanOutReq(id string) d.Request {
	return d.Request{EventID: id, Source: "/security", Intent: d.IntentGroupCompromised, EnrollmentGroupID: "g-x509", EventTime: t0.Add(time.Hour)}
}

// A batch whose operation is not in the journal (a hand-made message) is still applied and
// journaled under the operation id it names; nothing is counted.
func TestBatchWithoutItsOperationIsAppliedAndJournaled(t *testing.T) {
	ctx := context.Background()
	w, _, e := fanOutWorld(3)
	b := &d.WorkBatch{OperationID: "op-gone", Hub: hub1, Action: d.ActionDisable, Seq: 4,
		Members: []d.WorkMember{{RegistrationID: "m-0000", DeviceID: "m-0000"}, {RegistrationID: "m-0002", DeviceID: "m-0002"}}}
	res, err := e.ApplyBatch(ctx, b, d.BatchOptions{})
	if err != nil || res.Done != 2 {
		t.Fatalf("%+v %v", res, err)
	}
	for _, id := range []string{"m-0000", "m-0002"} {
		if dev, _ := w.hubs.Device(hub1, id); dev.Enabled {
			t.Errorf("%s still enabled", id)
		}
	}
	steps, err := w.j.Steps(ctx, "op-gone")
	if err != nil || len(steps) != 1 || steps[0].Kind != d.StepGroupBatch || steps[0].Outcome != d.StepDone {
		t.Fatalf("journal of the batch: %+v %v", steps, err)
	}
	if b.Seq != 4 {
		t.Errorf("the caller's batch was changed: seq %d", b.Seq)
	}
}

// hookRegistrations runs hook before the first registration record is deleted.
type hookRegistrations struct {
	d.Registrations
	once sync.Once
	hook func()
}

func (h *hookRegistrations) DeleteRegistration(ctx context.Context, id, etag string) error {
	h.once.Do(h.hook)
	return h.Registrations.DeleteRegistration(ctx, id, etag)
}

// A retired group: while the fan-out goes on with the plan's later steps (deleting the
// registration records), workers count their batches in the same operation row. The
// fan-out's own lease-renewing write merges with them instead of failing as "lease lost".
func TestFanOutLaterStepsMergeWithWorkers(t *testing.T) {
	ctx := context.Background()
	w := newWorld()
	setupGroup(250)(w)
	q := &fake.Queue{}
	deps := w.deps()
	deps.Work = q
	var e *d.Engine
	hr := &hookRegistrations{Registrations: w.dps}
	hr.hook = func() {
		for _, b := range q.Take() {
			if _, err := e.ApplyBatch(ctx, &b, d.BatchOptions{}); err != nil {
				t.Error(err)
			}
		}
		w.clock.Advance(45 * time.Second) // past half the lease: the executor saves after this step
	}
	deps.Registrations = hr
	e = w.engine(deps)
	req := fanOutReq("grp-retired")
	req.Intent = d.IntentGroupRetired
	op, err := e.Submit(ctx, req)
	if err != nil {
		t.Fatalf("Submit: %v", err)
	}
	if op.Status != d.StatusSucceeded || op.Progress.Done != 250 || op.Progress.BatchesDone != op.Progress.Batches {
		t.Fatalf("%s %q %+v", op.Status, op.Reason, op.Progress)
	}
	if w.dps.HasRegistration("m-0001") {
		t.Error("registration records left after the group was retired")
	}
}
