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

// retireWorld is a group of n members fanned out for retirement through the queue.
func retireWorld(t *testing.T, n int) (*world, *fake.Queue, *d.Engine, *d.Operation) {
	t.Helper()
	w, q, e := fanOutWorld(n)
	req := fanOutReq("grp-retired")
	req.Intent = d.IntentGroupRetired
	op := submit(t, e, req)
	if op.Status != d.StatusRunning || !op.Progress.FannedOut {
		t.Fatalf("after the fan-out: %s %q %+v, want running", op.Status, op.Reason, op.Progress)
	}
	return w, q, e, op
}

// A retired group: each batch deletes its members' hub identities, then their registration
// records; the group is deleted last, by the worker that accounts for the last batch, once
// every batch has succeeded. A redelivered batch is counted once.
func TestRetiredGroupDeletedAfterEveryBatch(t *testing.T) {
	ctx := context.Background()
	const n = 250
	w, q, e, op := retireWorld(t, n)
	if g, ok := w.dps.GroupState("g-x509"); !ok || g.Enabled {
		t.Fatalf("after the fan-out the group is %+v (present %v), want present and disabled", g, ok)
	}
	batches := q.Take()
	for i, b := range batches {
		if !b.Registrations {
			t.Fatalf("batch %d of a retirement does not delete its records", b.Seq)
		}
		if _, err := e.ApplyBatch(ctx, &b, d.BatchOptions{}); err != nil {
			t.Fatal(err)
		}
		if i == len(batches)-1 {
			break
		}
		if _, ok := w.dps.GroupState("g-x509"); !ok {
			t.Fatalf("the group was deleted after batch %d of %d", i+1, len(batches))
		}
		if i == 0 { // a redelivery changes nothing
			if _, err := e.ApplyBatch(ctx, &b, d.BatchOptions{Redelivered: true}); err != nil {
				t.Fatal(err)
			}
		}
	}
	got, steps, err := e.Operation(ctx, op.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != d.StatusSucceeded || got.Progress.Done != n || got.Progress.Records != n {
		t.Fatalf("after every batch: %s %q %+v", got.Status, got.Reason, got.Progress)
	}
	if _, ok := w.dps.GroupState("g-x509"); ok {
		t.Error("the group is still there after every batch succeeded")
	}
	for i := range n {
		id := fmt.Sprintf("m-%04d", i)
		if w.dps.HasRegistration(id) {
			t.Fatalf("registration record %s left", id)
		}
		if _, ok := w.hubs.Device([]string{hub1, hub2}[i%2], id); ok {
			t.Fatalf("hub identity %s left", id)
		}
	}
	records := 0
	for _, s := range steps {
		if s.Kind == d.StepGroupBatchRecords && s.Outcome == d.StepDone {
			records++
		}
	}
	if records != len(batches) {
		t.Errorf("%d batches journaled their registration records, want %d", records, len(batches))
	}
	if ended := w.note.ops; len(ended) != 1 || ended[0] != op.ID+" succeeded" {
		t.Errorf("announced %v, want the operation once, succeeded", ended)
	}
}

// A retired group's batches keep the hub identity and the registration record of a member
// that moved out of the group and waits to re-provision (DPS migrates the device from the hub
// that record names); every other member's go, and the group goes last.
func TestRetiredGroupKeepsMembersWaitingToMove(t *testing.T) {
	ctx := context.Background()
	const n = 150
	w, q, e := fanOutWorld(n)
	const mover = "m-0003" // in hub2 (odd members)
	if err := w.j.PutDevice(ctx, &d.DeviceState{RegistrationID: mover, DeviceID: mover, Hub: hub2, MoveTarget: hub1,
		HubAction: d.HubAwaitingMove, GroupMember: true}); err != nil {
		t.Fatal(err)
	}
	req := fanOutReq("grp-retired-move")
	req.Intent = d.IntentGroupRetired
	op := submit(t, e, req)
	for _, b := range q.Take() {
		if _, err := e.ApplyBatch(ctx, &b, d.BatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	got, steps, err := e.Operation(ctx, op.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != d.StatusSucceeded || got.Progress.Done != n || got.Progress.Records != n-1 {
		t.Fatalf("after every batch: %s %q %+v, want succeeded with %d records deleted", got.Status, got.Reason, got.Progress, n-1)
	}
	if !w.dps.HasRegistration(mover) {
		t.Error("the registration record of a member waiting to move was deleted")
	}
	if _, ok := w.hubs.Device(hub2, mover); !ok {
		t.Error("the hub identity of a member waiting to move was deleted")
	}
	for i := range n {
		id := fmt.Sprintf("m-%04d", i)
		if id != mover && w.dps.HasRegistration(id) {
			t.Fatalf("registration record %s left", id)
		}
	}
	if _, ok := w.dps.GroupState("g-x509"); ok {
		t.Error("the group is still there after every batch succeeded")
	}
	kept := false
	for _, s := range steps {
		kept = kept || s.Kind == d.StepGroupBatchRecords && strings.Contains(s.Error, "1 kept")
	}
	if !kept {
		t.Errorf("no batch journaled the record it kept: %+v", steps)
	}
}

// A batch that fails for good leaves the group disabled and its members' registration
// records in place; the operation ends failed, and the same event sent again under a new id
// finishes the retirement.
func TestRetiredGroupKeptWhenABatchFails(t *testing.T) {
	ctx := context.Background()
	const n = 250
	w, q, e, op := retireWorld(t, n)
	broken := w.engine(func() d.Deps {
		deps := w.deps()
		deps.Work = q
		deps.Devices = failingBulk{w.hubs}
		return deps
	}())
	batches := q.Take()
	var failed d.WorkBatch
	for i, b := range batches {
		eng := e
		if i == 1 {
			eng, failed = broken, b
		}
		_, err := eng.ApplyBatch(ctx, &b, d.BatchOptions{LastTry: i == 1})
		if i == 1 && !errors.Is(err, d.ErrBatchGivenUp) || i != 1 && err != nil {
			t.Fatalf("batch %d: %v", b.Seq, err)
		}
	}
	got, _, err := e.Operation(ctx, op.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != d.StatusFailed || got.Progress.Failed != len(failed.Members) || !strings.Contains(got.Reason, "new id") {
		t.Fatalf("after a failed batch: %s %q %+v", got.Status, got.Reason, got.Progress)
	}
	if g, ok := w.dps.GroupState("g-x509"); !ok || g.Enabled {
		t.Fatalf("after a failed batch the group is %+v (present %v), want present and disabled", g, ok)
	}
	for _, m := range failed.Members {
		if !w.dps.HasRegistration(m.RegistrationID) {
			t.Fatalf("the failed batch's member %s lost its registration record", m.RegistrationID)
		}
	}
	if got.Progress.Records != n-len(failed.Members) {
		t.Errorf("%d records deleted, want the %d of the batches that succeeded", got.Progress.Records, n-len(failed.Members))
	}

	// Retry: the records left list the members left; the group goes last.
	req := fanOutReq("grp-retired-again")
	req.Intent = d.IntentGroupRetired
	again := submit(t, e, req)
	if again.Progress.Total != len(failed.Members) {
		t.Fatalf("the retry found %d members, want the %d left", again.Progress.Total, len(failed.Members))
	}
	for _, b := range q.Take() {
		if _, err := e.ApplyBatch(ctx, &b, d.BatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if got, _, _ := e.Operation(ctx, again.ID); got.Status != d.StatusSucceeded {
		t.Fatalf("the retry: %s %q", got.Status, got.Reason)
	}
	if _, ok := w.dps.GroupState("g-x509"); ok {
		t.Error("the group is still there after the retry")
	}
	for _, m := range failed.Members {
		if w.dps.HasRegistration(m.RegistrationID) {
			t.Fatalf("registration record %s left after the retry", m.RegistrationID)
		}
	}
}

// slowRecords makes DeleteRegistration wait for its context after the first n calls, as a
// DPS budget spent by other instances' workers would.
type slowRecords struct {
	d.Registrations
	mu sync.Mutex
	n  int
}

func (s *slowRecords) DeleteRegistration(ctx context.Context, id, etag string) error {
	s.mu.Lock()
	s.n--
	wait := s.n < 0
	s.mu.Unlock()
	if wait {
		<-ctx.Done()
		return ctx.Err()
	}
	return s.Registrations.DeleteRegistration(ctx, id, etag)
}

// A worker that runs out of time waiting for the DPS budget hands the members left to a new
// message, which finishes the batch; the batch is counted once, with every record.
func TestRetirementBatchHandsTheRestOn(t *testing.T) {
	ctx := context.Background()
	w, q, _, op := retireWorld(t, 100)
	deps := w.deps()
	deps.Work = q
	slow := &slowRecords{Registrations: w.dps, n: 30}
	deps.Registrations = slow
	e := d.NewEngine(deps, d.Config{LeaseDuration: time.Minute, GroupPageSize: 100, RecordsTime: 50 * time.Millisecond})
	batches := q.Take()
	if len(batches) != 2 {
		t.Fatalf("%d batches, want 2", len(batches))
	}
	if _, err := e.ApplyBatch(ctx, &batches[0], d.BatchOptions{}); err != nil {
		t.Fatal(err)
	}
	rest := q.Take()
	if len(rest) != 1 || rest[0].Seq != batches[0].Seq || rest[0].HubDone == nil || rest[0].HubDone.Records != 30 ||
		len(rest[0].Members) != len(batches[0].Members)-30 {
		t.Fatalf("continuation %+v, want batch %d's %d members left", rest, batches[0].Seq, len(batches[0].Members)-30)
	}
	if got, _, _ := e.Operation(ctx, op.ID); got.Progress.BatchesDone != 0 {
		t.Fatalf("a batch with records left was counted: %+v", got.Progress)
	}
	slow.n = 1000
	for _, b := range append(rest, batches[1]) {
		if _, err := e.ApplyBatch(ctx, &b, d.BatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	got, _, _ := e.Operation(ctx, op.ID)
	if got.Status != d.StatusSucceeded || got.Progress.Records != 100 || got.Progress.Done != 100 {
		t.Fatalf("after the continuation: %s %q %+v", got.Status, got.Reason, got.Progress)
	}
}
