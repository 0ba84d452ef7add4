package deprovision_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	d "dpsdeprov/deprovision"
	"dpsdeprov/deprovision/fake"
)

// outcome is everything a run leaves behind that must not depend on interruptions.
type outcome struct {
	dps, hubs            string
	dpsWrites, hubWrites []string
	status               d.Status
	steps                []string
	device               string
	progress             string
}

func observe(t *testing.T, w *world, opID, rid string) outcome {
	t.Helper()
	ctx := context.Background()
	op, err := w.j.GetOperation(ctx, opID)
	if err != nil {
		t.Fatal(err)
	}
	recs, _ := w.j.Steps(ctx, opID)
	var steps []string
	for _, r := range recs {
		steps = append(steps, fmt.Sprintf("%d %s %s %s", r.Index, r.Kind, r.Target, r.Outcome))
	}
	dev := "none"
	if ds, err := w.j.GetDevice(ctx, rid); err == nil {
		dev = fmt.Sprintf("%s blocking=%v hub=%s enrollment=%s pending=%q op=%s", ds.Intent, ds.BlockingEnrollment, ds.HubAction, ds.EnrollmentAction, ds.PendingOperation, ds.OperationID)
	}
	return outcome{dps: w.dps.Snapshot(), hubs: w.hubs.Snapshot(), dpsWrites: w.dps.Writes, hubWrites: w.hubs.Writes,
		status: op.Status, steps: steps, device: dev,
		progress: fmt.Sprintf("total=%d done=%d failed=%d pages=%d", op.Progress.Total, op.Progress.Done, op.Progress.Failed, op.Progress.Pages)}
}

// TestCrashAfterEveryEffect kills the engine right after each durable effect in turn (every
// DPS, hub and journal write), starts a new engine on the same journal, redelivers the same
// event, and checks the end state equals an uninterrupted run's, with no write applied twice.
func TestCrashAfterEveryEffect(t *testing.T) {
	member := devReq("e1", d.IntentLost)
	member.CertificatePEM = leaf.ChainPEM
	cases := []struct {
		name  string
		setup func(*world)
		req   d.Request
	}{
		{"tpm compromised", setupTPM, devReq("e1", d.IntentCompromised)},
		{"tpm sold", setupTPM, devReq("e1", d.IntentSold)},
		{"x509 member lost", setupX509Member, member},
		{"sk member retired", setupSKMember, devReq("e1", d.IntentRetired)},
		{"group compromised", setupGroup(230), d.Request{EventID: "g", Source: "s", Intent: d.IntentGroupCompromised, EnrollmentGroupID: "g-x509"}},
		{"group retired", setupGroup(230), d.Request{EventID: "g", Source: "s", Intent: d.IntentGroupRetired, EnrollmentGroupID: "g-x509"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			opID := d.OperationID(c.req.Source, c.req.EventID)
			ref := newWorld()
			c.setup(ref)
			if op := ref.run(t, ref.engine(ref.deps()), c.req); op.Status != d.StatusSucceeded {
				t.Fatalf("reference run: %s %s", op.Status, op.Reason)
			}
			want := observe(t, ref, opID, "sensor-042")

			for at := 1; ; at++ {
				w := newWorld()
				c.setup(w)
				deps := (&fake.Crasher{At: at}).Wrap(w.deps())
				crashed := fake.Run(func() {
					e := w.engine(deps)
					_, _ = e.Submit(context.Background(), c.req)
					_ = w.q.DeliverAll(context.Background(), e) // the GroupWork function, in the same dying process
				})
				if !crashed {
					if at == 1 {
						t.Fatal("no effect observed")
					}
					t.Logf("crashed after each of %d effects", at-1)
					return
				}
				// The dead process's lease runs out; Event Grid redelivers, and the queue delivers
				// the batches not yet applied again.
				w.clock.Advance(2 * time.Minute)
				if op := w.run(t, w.engine(w.deps()), c.req); op.Status != d.StatusSucceeded {
					t.Fatalf("crash after effect %d: resume gave %s %s", at, op.Status, op.Reason)
				}
				got := observe(t, w, opID, "sensor-042")
				if got.dps != want.dps || got.hubs != want.hubs {
					t.Fatalf("crash after effect %d: state differs\nDPS:\n%s\nwant:\n%s\nhubs:\n%s\nwant:\n%s", at, got.dps, want.dps, got.hubs, want.hubs)
				}
				if !slices.Equal(got.dpsWrites, want.dpsWrites) || !slices.Equal(got.hubWrites, want.hubWrites) {
					t.Fatalf("crash after effect %d: writes differ (applied twice?)\n%q\nwant\n%q\n%d hub writes, want %d", at, got.dpsWrites, want.dpsWrites, len(got.hubWrites), len(want.hubWrites))
				}
				if got.status != want.status || !slices.Equal(got.steps, want.steps) || got.device != want.device || got.progress != want.progress {
					t.Fatalf("crash after effect %d: journal differs\n%v\n%v\n%s\nwant\n%v\n%v\n%s", at, got.steps, got.device, got.progress, want.steps, want.device, want.progress)
				}
			}
		})
	}
}
