package deprovision_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	d "dpsdeprov/deprovision"
	"dpsdeprov/deprovision/fake"
)

// bulkCalls counts the bulk calls the hubs answered, and which durable effect each was:
// it sits below a fake.Crasher, so it sees a call succeed before the crasher counts it.
type bulkCalls struct {
	d.Devices
	cr      *fake.Crasher
	mu      sync.Mutex
	calls   int
	effects map[int]bool
}

func (b *bulkCalls) Bulk(ctx context.Context, hub string, mode d.BulkMode, items []d.BulkItem) ([]d.BulkItemResult, error) {
	out, err := b.Devices.Bulk(ctx, hub, mode, items)
	if err == nil {
		b.mu.Lock()
		b.calls++
		if b.cr != nil {
			b.effects[b.cr.Count()+1] = true
		}
		b.mu.Unlock()
	}
	return out, err
}

// Each batch's outcome is journaled as its bulk call returns, and a disable reads its members
// first (group.go, disableMembers): a death at any point of the fan-out or of a GroupWork
// delivery, even right after a bulk call whose answer was not journaled yet, sends no bulk
// call again, since the resume finds those members disabled already.
func TestGroupResumeResendsNoJournaledBulkCall(t *testing.T) {
	req := d.Request{EventID: "g", Source: "s", Intent: d.IntentGroupCompromised, EnrollmentGroupID: "g-x509"}
	opID := d.OperationID(req.Source, req.EventID)
	// 230 members over two hubs in pages of 150: two batches of one hub in a page, several
	// pages, and one bulk call per batch.
	engine := func(deps d.Deps) *d.Engine {
		return d.NewEngine(deps, d.Config{LeaseDuration: time.Minute, GroupPageSize: 150})
	}
	ref := newWorld()
	setupGroup(230)(ref)
	refBulk := &bulkCalls{Devices: ref.hubs}
	deps := ref.deps()
	deps.Devices = refBulk
	if op := ref.run(t, engine(deps), req); op.Status != d.StatusSucceeded {
		t.Fatalf("reference run: %s %s", op.Status, op.Reason)
	}
	if refBulk.calls != 4 { // page 1: 75+75 (two hubs), page 2: 40+40
		t.Fatalf("reference run made %d bulk calls, want 4", refBulk.calls)
	}
	want := observe(t, ref, opID, "sensor-042")

	resentRuns := 0
	for at := 1; ; at++ {
		w := newWorld()
		setupGroup(230)(w)
		cr := &fake.Crasher{At: at}
		bc := &bulkCalls{Devices: w.hubs, cr: cr, effects: map[int]bool{}}
		deps := w.deps()
		deps.Devices = bc
		if !fake.Run(func() {
			e := engine(cr.Wrap(deps))
			_, _ = e.Submit(context.Background(), req)
			_ = w.q.DeliverAll(context.Background(), e)
		}) {
			break
		}
		w.clock.Advance(2 * time.Minute)
		bc.cr = nil
		deps = w.deps()
		deps.Devices = bc
		if op := w.run(t, engine(deps), req); op.Status != d.StatusSucceeded {
			t.Fatalf("death after effect %d: resume gave %s %s", at, op.Status, op.Reason)
		}
		if got := observe(t, w, opID, "sensor-042"); got.hubs != want.hubs || got.progress != want.progress {
			t.Fatalf("death after effect %d: hubs or progress differ\n%s %s\nwant\n%s %s", at, got.hubs, got.progress, want.hubs, want.progress)
		}
		if bc.effects[at] {
			resentRuns++ // died between the hub's answer and the journal write
		}
		if bc.calls != refBulk.calls {
			t.Fatalf("death after effect %d: %d bulk calls in all, want %d (%d re-sent)", at, bc.calls, refBulk.calls, bc.calls-refBulk.calls)
		}
	}
	if resentRuns != refBulk.calls {
		t.Errorf("%d deaths fell right after a bulk call, want one per call (%d)", resentRuns, refBulk.calls)
	}
}

// failOnce fails the first operation update that fail selects (every one with always), as a
// process dying just before it would.
type failOnce struct {
	d.Journal
	mu     sync.Mutex
	done   bool
	always bool
	fail   func(*d.Operation) bool
}

func (j *failOnce) UpdateOperation(ctx context.Context, op *d.Operation) error {
	j.mu.Lock()
	hit := !j.done && j.fail(op)
	if hit && !j.always {
		j.done = true
	}
	j.mu.Unlock()
	if hit {
		return d.Transient(errors.New("storage went away"))
	}
	return j.Journal.UpdateOperation(ctx, op)
}

// A queue batch whose outcome was journaled by a delivery that died before counting it is
// counted from that record when the queue delivers it again: no second bulk call.
func TestRedeliveredBatchIsCountedFromItsRecord(t *testing.T) {
	ctx := context.Background()
	w, q, _ := fanOutWorld(20)
	bc := &bulkCalls{Devices: w.hubs}
	deps := w.deps()
	deps.Devices, deps.Work = bc, q
	e := w.engine(deps)
	op := submit(t, e, fanOutReq("grp-once"))
	batches := q.Take()
	if len(batches) != 2 {
		t.Fatalf("%d batches, want 2", len(batches))
	}
	dying := deps
	dying.Journal = &failOnce{Journal: w.j, fail: func(o *d.Operation) bool { return o.Progress.Applied != "" || o.Progress.BatchesDone > 0 }}
	if _, err := w.engine(dying).ApplyBatch(ctx, &batches[0], d.BatchOptions{}); err == nil || !d.IsTransient(err) {
		t.Fatalf("the count failed, ApplyBatch answered %v; want a transient error (deliver again)", err)
	}
	if bc.calls != 1 {
		t.Fatalf("%d bulk calls, want 1", bc.calls)
	}
	res, err := e.ApplyBatch(ctx, &batches[0], d.BatchOptions{Redelivered: true})
	if err != nil || res.Done != len(batches[0].Members) {
		t.Fatalf("redelivery: %+v %v", res, err)
	}
	if bc.calls != 1 {
		t.Fatalf("the redelivery called the hub again: %d bulk calls", bc.calls)
	}
	if _, err := e.ApplyBatch(ctx, &batches[1], d.BatchOptions{}); err != nil {
		t.Fatal(err)
	}
	got, _, _ := e.Operation(ctx, op.ID)
	if got.Status != d.StatusSucceeded || got.Progress.Done != 20 || got.Progress.BatchesDone != 2 || bc.calls != 2 {
		t.Fatalf("after both batches: %s %+v, %d bulk calls", got.Status, got.Progress, bc.calls)
	}
}

// A redelivered batch that has no journaled outcome (the earlier delivery died inside the
// bulk call) is applied again: the guarantee stays at least once.
func TestRedeliveredBatchWithoutRecordIsApplied(t *testing.T) {
	ctx := context.Background()
	w, q, _ := fanOutWorld(6)
	bc := &bulkCalls{Devices: w.hubs}
	deps := w.deps()
	deps.Devices, deps.Work = bc, q
	e := w.engine(deps)
	op := submit(t, e, fanOutReq("grp-again"))
	for _, b := range q.Take() {
		if _, err := e.ApplyBatch(ctx, &b, d.BatchOptions{Redelivered: true}); err != nil {
			t.Fatal(err)
		}
	}
	got, _, _ := e.Operation(ctx, op.ID)
	if got.Status != d.StatusSucceeded || got.Progress.Done != 6 || bc.calls != 2 {
		t.Fatalf("%s %+v, %d bulk calls, want succeeded with 2", got.Status, got.Progress, bc.calls)
	}
	for i := range 6 {
		id := []string{"m-0000", "m-0001", "m-0002", "m-0003", "m-0004", "m-0005"}[i]
		if dev, _ := w.hubs.Device([]string{hub1, hub2}[i%2], id); dev.Enabled {
			t.Errorf("%s still enabled", id)
		}
	}
}

// A fan-out that dies after enqueuing a page but before journaling it enqueues the page again
// marked Again; a copy whose twin was applied and journaled (but not yet counted) is counted
// from the journal, not sent to the hub again.
func TestReEnqueuedBatchIsNotSentTwice(t *testing.T) {
	ctx := context.Background()
	w, q, _ := fanOutWorld(20)
	bc := &bulkCalls{Devices: w.hubs}
	deps := w.deps()
	deps.Devices, deps.Work = bc, q
	dying := deps
	// The page's journal write (Pages becomes 1) fails, and so does every later write of the
	// dying process: it died after the enqueues.
	dying.Journal = &failOnce{Journal: w.j, always: true, fail: func(o *d.Operation) bool { return o.Progress.Pages == 1 }}
	if _, err := w.engine(dying).Submit(ctx, fanOutReq("grp-twice")); err == nil {
		t.Fatal("the fan-out whose page write failed reported no error")
	}
	first := q.Take()
	if len(first) != 2 || first[0].Again {
		t.Fatalf("first enqueue: %+v", first)
	}
	e := w.engine(deps)
	// The first copy of batch 1 is applied and journaled, but its count is lost.
	counting := deps
	counting.Journal = &failOnce{Journal: w.j, fail: func(o *d.Operation) bool { return o.Progress.BatchesDone > 0 }}
	if _, err := w.engine(counting).ApplyBatch(ctx, &first[0], d.BatchOptions{}); err == nil {
		t.Fatal("the lost count reported no error")
	}
	w.clock.Advance(2 * time.Minute)
	op, err := e.Submit(ctx, fanOutReq("grp-twice"))
	if err != nil {
		t.Fatal(err)
	}
	again := q.Take()
	if len(again) != 2 || !again[0].Again || !again[1].Again || again[0].Seq != first[0].Seq {
		t.Fatalf("the resumed fan-out enqueued %+v, want the same two batches marked again", again)
	}
	for _, b := range append(again, first...) {
		if _, err := e.ApplyBatch(ctx, &b, d.BatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	got, _, _ := e.Operation(ctx, op.ID)
	if got.Status != d.StatusSucceeded || got.Progress.Done != 20 || got.Progress.BatchesDone != 2 {
		t.Fatalf("%s %+v", got.Status, got.Progress)
	}
	if bc.calls != 2 {
		t.Errorf("%d bulk calls for 2 batches enqueued twice, want 2", bc.calls)
	}
}

// A batch journaled as failed members (its last try) whose count was lost is counted as
// failed from its record when it is settled again, naming the members, without a hub call.
func TestRedeliveredFailedBatchKeepsItsFailures(t *testing.T) {
	ctx := context.Background()
	w, q, _ := fanOutWorld(4)
	bc := &bulkCalls{Devices: w.hubs}
	deps := w.deps()
	deps.Devices, deps.Work = bc, q
	e := w.engine(deps)
	op := submit(t, e, fanOutReq("grp-failed"))
	batches := q.Take()
	dying := deps
	dying.Devices = failingBulk{w.hubs}
	dying.Journal = &failOnce{Journal: w.j, fail: func(o *d.Operation) bool { return o.Progress.BatchesDone > 0 }}
	if _, err := w.engine(dying).ApplyBatch(ctx, &batches[0], d.BatchOptions{LastTry: true}); err == nil {
		t.Fatal("the lost count reported no error")
	}
	if err := e.SettlePoisoned(ctx, &batches[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ApplyBatch(ctx, &batches[1], d.BatchOptions{}); err != nil {
		t.Fatal(err)
	}
	got, _, _ := e.Operation(ctx, op.ID)
	if got.Status != d.StatusFailed || got.Progress.Failed != 2 || got.Progress.Done != 2 || bc.calls != 1 {
		t.Fatalf("%s %+v, %d bulk calls (want failed 2, done 2, 1 call)", got.Status, got.Progress, bc.calls)
	}
	if len(got.Progress.Failures) != 2 || !strings.HasPrefix(got.Progress.Failures[0], batches[0].Members[0].DeviceID+": ") ||
		!strings.Contains(got.Progress.Failures[0], "503") {
		t.Errorf("failures read back from the record: %q", got.Progress.Failures)
	}
}
