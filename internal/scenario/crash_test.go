package scenario_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"dpsdeprov/deprovision"
	"dpsdeprov/deprovision/fake"
	"dpsdeprov/internal/testenv"
)

// state renders what the DPS, the hubs and the journal hold about a case's ids.
func (e *env) state(t *testing.T, opID, rid string, ids map[string]string, groups []string) string {
	t.Helper()
	var lines []string
	for id, hub := range ids {
		en := e.enrollment(id)
		if en != nil {
			lines = append(lines, fmt.Sprintf("enrollment %s %s %s hubs=%v", id, en.Attestation.Type, en.ProvisioningStatus, en.IoTHubs))
		}
		lines = append(lines, fmt.Sprintf("registration %s %v", id, e.hasRegistration(id)))
		if d := e.device(hub, id); d != nil {
			lines = append(lines, fmt.Sprintf("device %s %s %q", id, d.Status, d.StatusReason))
		}
	}
	for _, g := range groups {
		if gr := e.group(g); gr != nil {
			lines = append(lines, fmt.Sprintf("group %s %s", g, gr.ProvisioningStatus))
		}
	}
	op, steps, err := e.engine(nil).Operation(context.Background(), opID)
	if err != nil {
		t.Fatal(err)
	}
	lines = append(lines, fmt.Sprintf("operation %s %q progress=%d/%d/%d pages=%d", op.Status, op.Reason, op.Progress.Total, op.Progress.Done, op.Progress.Failed, op.Progress.Pages))
	for _, s := range steps {
		lines = append(lines, fmt.Sprintf("step %d %s %s %s", s.Index, s.Kind, s.Target, s.Outcome))
	}
	if rid != "" {
		ds, _, err := e.engine(nil).DeviceHistory(context.Background(), rid)
		if err != nil {
			t.Fatal(err)
		}
		if ds != nil {
			lines = append(lines, fmt.Sprintf("device-row %s blocking=%v hub=%s enrollment=%s pending=%q", ds.Intent, ds.BlockingEnrollment, ds.HubAction, ds.EnrollmentAction, ds.PendingOperation))
		}
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// TestCrashAndRedelivery stops the engine right after each durable effect in turn (every
// DPS, hub and Table write, in the delivery or in a GroupWork invocation), restarts it (a new
// engine on a reopened journal) with the same event once the dead delivery's lease has run
// out, and checks that DPS, the hubs and the journal end as after an uninterrupted run, with
// no write applied twice (but for the one bulk call a death right after its answer re-sends).
func TestCrashAndRedelivery(t *testing.T) {
	type setup func(e *env) (req deprovision.Request, ids map[string]string, groups []string)
	cases := []struct {
		name  string
		setup setup
	}{
		{"symmetric-key individual lost", func(e *env) (deprovision.Request, map[string]string, []string) {
			key := randomKey()
			e.individualSK("cr-ind", key)
			hub := e.mustProvision("cr-ind", skCred(key))
			return request("lost", deprovision.IntentLost, "cr-ind", 0), map[string]string{"cr-ind": hub}, nil
		}},
		{"x509 member sold", func(e *env) (deprovision.Request, map[string]string, []string) {
			root := fake.NewCA("cr-root")
			e.groupX509("cr-xg", root)
			c := root.Issue("cr-xm", false)
			hub := e.mustProvision("cr-xm", x509Cred(c))
			r := request("sold", deprovision.IntentSold, "cr-xm", 0)
			r.CertificatePEM = c.PEM
			return r, map[string]string{"cr-xm": hub}, []string{"cr-xg"}
		}},
		{"symmetric-key group retired", func(e *env) (deprovision.Request, map[string]string, []string) {
			key := randomKey()
			e.groupSK("cr-g", key)
			ids := e.skMembers("cr-g", key, 5)
			return deprovision.Request{EventID: "gr", Source: "/scenario", Intent: deprovision.IntentGroupRetired, EnrollmentGroupID: "cr-g"}, ids, []string{"cr-g"}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ref := newEnv(t)
			req, ids, groups := c.setup(ref)
			opID := deprovision.OperationID(req.Source, req.EventID)
			ref.em.ResetStats()
			succeeded(t, ref.submit(req))
			want, wantWrites := ref.state(t, opID, req.RegistrationID, ids, groups), ref.writes()

			for at := 1; ; at++ {
				e := newEnv(t)
				c.setup(e)
				e.em.ResetStats()
				died, afterBulk := e.dieAfter(at, req)
				if !died {
					t.Logf("crashed after each of the %d effects in turn", at-1)
					return
				}
				e.clock.Advance(2 * time.Minute)
				e.reopenJournal()
				succeeded(t, e.submit(req))
				if got := e.state(t, opID, req.RegistrationID, ids, groups); got != want {
					t.Fatalf("crash after effect %d: end state differs\n%s\nwant\n%s", at, got, want)
				}
				resent := int64(0)
				if afterBulk {
					resent = 1 // died between the hub's answer and the batch's journal record
				}
				if got := e.writes(); got < wantWrites || got > wantWrites+resent {
					t.Fatalf("crash after effect %d: %d writes to DPS and the hubs, an uninterrupted run makes %d", at, got, wantWrites)
				}
			}
		})
	}
}

// TestConcurrentDeliveries: the same event delivered twice at once runs once; conflicting
// events for one device end as the precedence rules say, whatever the interleaving.
func TestConcurrentDeliveries(t *testing.T) {
	// deliver submits like Event Grid: an answer that another delivery holds the device or
	// the operation is delivered again, until that delivery has ended.
	deliver := func(e *env, r deprovision.Request) (*deprovision.Operation, error) {
		var op *deprovision.Operation
		var err error
		if werr := testenv.WaitFor(testenv.Context(e.t), func() bool {
			op, err = e.engine(nil).Submit(context.Background(), r)
			return !errors.Is(err, deprovision.ErrBusy)
		}); werr != nil {
			return nil, fmt.Errorf("still busy: %w (last: %v)", werr, err)
		}
		return op, err
	}
	t.Run("same event twice", func(t *testing.T) {
		e := newEnv(t)
		key := randomKey()
		e.individualSK("cc-1", key)
		hub := e.mustProvision("cc-1", skCred(key))
		e.em.ResetStats()
		r := request("dup", deprovision.IntentCompromised, "cc-1", 0)
		var wg sync.WaitGroup
		results := make([]error, 2)
		for i := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, results[i] = e.engine(nil).Submit(context.Background(), r)
			}()
		}
		wg.Wait()
		for _, err := range results {
			if err != nil && !errors.Is(err, deprovision.ErrBusy) {
				t.Fatalf("delivery failed: %v", err)
			}
		}
		op, err := deliver(e, r)
		if err != nil {
			t.Fatal(err)
		}
		succeeded(t, op)
		if w := e.writes(); w != 2 { // one enrollment PUT, one device PUT
			t.Fatalf("%d writes for one compromised device, want 2", w)
		}
		disabledIn(t, e, hub, "cc-1", "compromised")
	})
	t.Run("lost and compromised at once", func(t *testing.T) {
		for round := range 3 {
			e := newEnv(t)
			key := randomKey()
			rid := fmt.Sprintf("cc-lc%d", round)
			e.individualSK(rid, key)
			e.mustProvision(rid, skCred(key))
			reqs := []deprovision.Request{request("l", deprovision.IntentLost, rid, 0), request("c", deprovision.IntentCompromised, rid, time.Second)}
			var wg sync.WaitGroup
			for _, r := range reqs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if _, err := deliver(e, r); err != nil {
						t.Error(err)
					}
				}()
			}
			wg.Wait()
			ds, _, err := e.engine(nil).DeviceHistory(context.Background(), rid)
			if err != nil || ds.Intent != deprovision.IntentCompromised || ds.PendingOperation != "" {
				t.Fatalf("device row after lost and compromised together: %+v %v", ds, err)
			}
			rejected(t, e.submit(request("r", deprovision.IntentRecovered, rid, time.Hour)), "never undoes")
			e.mustNotProvision(rid, skCred(key))
		}
	})
	t.Run("sold while lost", func(t *testing.T) {
		e := newEnv(t)
		gkey := randomKey()
		e.groupSK("cc-sg", gkey)
		k, _ := deprovision.DeriveDeviceKey(gkey, "cc-s1")
		hub := e.mustProvision("cc-s1", skCred(k))
		var wg sync.WaitGroup
		for _, r := range []deprovision.Request{request("l", deprovision.IntentLost, "cc-s1", 0), request("s", deprovision.IntentSold, "cc-s1", time.Second)} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := deliver(e, r); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		// Whichever ran first, the device ends sold: blocked for good, identity and record gone.
		ds, _, err := e.engine(nil).DeviceHistory(context.Background(), "cc-s1")
		if err != nil || ds.Intent != deprovision.IntentSold {
			t.Fatalf("device row: %+v %v", ds, err)
		}
		if e.enrollment("cc-s1") == nil || e.device(hub, "cc-s1") != nil || e.hasRegistration("cc-s1") {
			t.Fatal("sold did not end with a blocked device, no identity and no record")
		}
		e.mustNotProvision("cc-s1", skCred(k))
		rejected(t, e.submit(request("r", deprovision.IntentRecovered, "cc-s1", time.Hour)), "final")
	})
}
