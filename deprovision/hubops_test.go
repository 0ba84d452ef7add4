package deprovision_test

import (
	"context"
	"testing"

	d "dpsdeprov/deprovision"
	"dpsdeprov/deprovision/fake"
)

// A single-device hub step decides and writes on the identity resolution read in the same
// invocation: a disable costs that read and the write (the write carries the identity as
// read, so its keys stay), a delete that read and an unconditional DELETE. A resumed
// operation has no such read: its step reads for itself.
func TestSingleDeviceRegistryOperations(t *testing.T) {
	for _, c := range []struct {
		name  string
		in    d.Intent
		ops   int
		write string
	}{
		{"compromised: disable", d.IntentCompromised, 2, "put " + hub1 + "/sensor-042 enabled=false"},
		{"lost: disable", d.IntentLost, 2, "put " + hub1 + "/sensor-042 enabled=false"},
		{"sold: delete", d.IntentSold, 2, "delete " + hub1 + "/sensor-042"},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := newWorld()
			setupTPM(w)
			op := submit(t, w.engine(w.deps()), devReq("e1", c.in))
			if op.Status != d.StatusSucceeded {
				t.Fatalf("%s %s", op.Status, op.Reason)
			}
			if w.hubs.RegistryOps != c.ops || len(w.hubs.Writes) != 1 || w.hubs.Writes[0] != c.write {
				t.Fatalf("%d registry operations, writes %v; want %d and [%s]", w.hubs.RegistryOps, w.hubs.Writes, c.ops, c.write)
			}
		})
	}
	t.Run("recovered after lost: enable", func(t *testing.T) {
		w := newWorld()
		setupTPM(w)
		e := w.engine(w.deps())
		submit(t, e, devReq("e1", d.IntentLost))
		w.hubs.RegistryOps = 0
		rec := devReq("e2", d.IntentRecovered)
		rec.EventTime = rec.EventTime.Add(1)
		if op := submit(t, e, rec); op.Status != d.StatusSucceeded {
			t.Fatalf("%s %s", op.Status, op.Reason)
		}
		if dev, _ := w.hubs.Device(hub1, "sensor-042"); !dev.Enabled || w.hubs.RegistryOps != 2 {
			t.Fatalf("enabled %t with %d registry operations; want enabled with 2", dev.Enabled, w.hubs.RegistryOps)
		}
	})
	t.Run("resumed: the step reads for itself", func(t *testing.T) {
		w := newWorld()
		setupTPM(w)
		deps := w.deps()
		deps.Devices = &failingPut{HubDevices: w.hubs, left: 1}
		e := w.engine(deps)
		if _, err := e.Submit(context.Background(), devReq("e1", d.IntentCompromised)); !d.IsTransient(err) {
			t.Fatalf("the failed write: %v, want transient", err)
		}
		w.hubs.RegistryOps = 0
		if op := submit(t, e, devReq("e1", d.IntentCompromised)); op.Status != d.StatusSucceeded {
			t.Fatalf("resumed: %s %s", op.Status, op.Reason)
		}
		if dev, _ := w.hubs.Device(hub1, "sensor-042"); dev.Enabled || w.hubs.RegistryOps != 2 {
			t.Fatalf("resumed disable: enabled %t, %d registry operations (want disabled with the step's read and write)", dev.Enabled, w.hubs.RegistryOps)
		}
	})
}

// failingPut fails the next left device writes, as an unavailable hub does.
type failingPut struct {
	*fake.HubDevices
	left int
}

func (f *failingPut) PutDevice(ctx context.Context, dev *d.Device, etag string) (*d.Device, error) {
	if f.left > 0 {
		f.left--
		return nil, d.Transient(context.DeadlineExceeded)
	}
	return f.HubDevices.PutDevice(ctx, dev, etag)
}

// racingHubs lets another writer change the identity between resolution's read and the
// step's write, which then carries a stale etag.
type racingHubs struct {
	*fake.HubDevices
	race func(*fake.HubDevices)
	done bool
}

func (r *racingHubs) PutDevice(ctx context.Context, dev *d.Device, etag string) (*d.Device, error) {
	if !r.done && etag != "" {
		r.done = true
		r.race(r.HubDevices)
	}
	return r.HubDevices.PutDevice(ctx, dev, etag)
}

// The read carried from resolution to the write keeps ETag safety: a 412 leads to a fresh
// read and a new decision, never to overwriting what the other writer did.
func TestDeviceWriteOnAStaleReadRereads(t *testing.T) {
	for _, c := range []struct {
		name    string
		race    func(*fake.HubDevices)
		outcome d.StepOutcome
		reason  string
	}{
		{"the other writer disabled it: nothing left to do", func(h *fake.HubDevices) {
			dev, _ := h.Device(hub1, "sensor-042")
			dev.Enabled, dev.StatusReason = false, "disabled by an operator"
			if _, err := h.PutDevice(context.Background(), &dev, "*"); err != nil {
				panic(err)
			}
		}, d.StepNoChange, "disabled by an operator"},
		{"the other writer changed its reason: disable on top of it", func(h *fake.HubDevices) {
			dev, _ := h.Device(hub1, "sensor-042")
			dev.StatusReason = "touched"
			if _, err := h.PutDevice(context.Background(), &dev, "*"); err != nil {
				panic(err)
			}
		}, d.StepDone, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := newWorld()
			setupTPM(w)
			deps := w.deps()
			deps.Devices = &racingHubs{HubDevices: w.hubs, race: c.race}
			op := submit(t, w.engine(deps), devReq("e1", d.IntentCompromised))
			if op.Status != d.StatusSucceeded {
				t.Fatalf("%s %s", op.Status, op.Reason)
			}
			steps, _ := w.j.Steps(context.Background(), op.ID)
			last := steps[len(steps)-1]
			if last.Kind != d.StepDisableDevice || last.Outcome != c.outcome {
				t.Fatalf("last step %s %s, want %s %s", last.Kind, last.Outcome, d.StepDisableDevice, c.outcome)
			}
			dev, _ := w.hubs.Device(hub1, "sensor-042")
			if dev.Enabled || c.reason != "" && dev.StatusReason != c.reason {
				t.Fatalf("device %+v: disabled, with the other writer's reason %q kept, expected", dev, c.reason)
			}
		})
	}
}
