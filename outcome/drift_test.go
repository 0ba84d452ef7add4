package outcome

import (
	"context"
	"testing"
	"time"

	"dpsdeprov/deprovision"
)

func TestDriftDetectedIsPublishedAndItsFailureJournaled(t *testing.T) {
	tp := &topic{}
	j := &journalSpy{}
	p := newPublisher(t, tp, j)
	f := deprovision.Finding{ID: "drift/device-enabled/sensor-042/op-1", Pass: "drift", Kind: "device-enabled", RegistrationID: "sensor-042",
		DeviceID: "sensor-042", Hub: "hub1.azure-devices.net", Intent: deprovision.IntentCompromised, Detail: "enabled again",
		Action: "re-revoked", OperationID: "op-2", OperationStatus: deprovision.StatusSucceeded, RunID: "run-7", Time: time.Now()}
	p.DriftDetected(context.Background(), f)
	// A member of a disabled group has no operation: its failed publish is journaled under the run.
	failing := &topic{status: 500}
	pf := newPublisher(t, failing, j)
	pf.DriftDetected(context.Background(), deprovision.Finding{ID: "drift-groups/x", Kind: "group-member-enabled", GroupID: "g1", RunID: "run-8"})
	for _, pub := range []*Publisher{p, pf} {
		if err := pub.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if len(tp.events) != 1 {
		t.Fatalf("published %d events", len(tp.events))
	}
	ev := tp.events[0]
	if ev["type"] != TypeDriftDetected || ev["subject"] != "devices/sensor-042" || ev["id"] != "drift/run-7/"+f.ID {
		t.Fatalf("event %v", ev)
	}
	data := ev["data"].(map[string]any)
	if data["kind"] != "device-enabled" || data["action"] != "re-revoked" || data["operationId"] != "op-2" || data["intent"] != "compromised" {
		t.Fatalf("data %v", data)
	}
	if len(j.recs) != 1 || j.recs[0].OperationID != "drift-run-8" || j.recs[0].Kind != StepPublish {
		t.Fatalf("journaled failures: %+v", j.recs)
	}
}
