package outcome

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"dpsdeprov/deprovision"
	"dpsdeprov/deprovision/fake"
)

type fixedClock time.Time

func (c fixedClock) Now() time.Time { return time.Time(c) }

// The engine, holding a group-wide operation beyond MAX_GROUP_DEVICES, announces it through
// the publisher once: the topic gets one ApprovalRequired event naming the limit, the count
// and the route that approves it, and a redelivery of the held event publishes nothing.
func TestHeldOperationPublishesApprovalRequiredOnce(t *testing.T) {
	ctx := context.Background()
	tp := &topic{}
	j := fake.NewJournal()
	p := newPublisher(t, tp, &journalSpy{})
	dps, hubs := fake.NewDPS(), fake.NewHubDevices("hub1.azure-devices.net")
	dps.AddGroup(deprovision.Group{ID: "line-7", Attestation: deprovision.AttestationSymmetricKey, Enabled: true}, "Z3JvdXAta2V5LWZvci10ZXN0cy1vbmx5")
	for i := range 4 {
		id := fmt.Sprintf("m-%d", i)
		dps.AddRegistration(deprovision.Registration{RegistrationID: id, DeviceID: id, AssignedHub: "hub1.azure-devices.net"}, "line-7")
		hubs.AddDevice(deprovision.Device{Hub: "hub1.azure-devices.net", DeviceID: id, Enabled: true, AuthType: "sas"})
	}
	now := time.Date(2026, 6, 1, 9, 0, 0, 0, time.UTC)
	e := deprovision.NewEngine(deprovision.Deps{Enrollments: dps, Registrations: dps, Devices: hubs, Journal: j,
		Clock: fixedClock(now), Notifier: p, Logger: slog.New(slog.DiscardHandler)},
		deprovision.Config{Guard: deprovision.Guardrails{MaxGroupDevices: 2}})
	req := deprovision.Request{EventID: "ev-1", Source: "/security", Intent: deprovision.IntentGroupRetired, EnrollmentGroupID: "line-7"}
	for range 2 { // the second is a redelivery
		op, err := e.Submit(ctx, req)
		if err != nil || op.Status != deprovision.StatusAwaitingApproval {
			t.Fatalf("submit: %+v %v", op, err)
		}
	}
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if len(tp.events) != 1 {
		t.Fatalf("%d events for one hold and its redelivery, want 1: %v", len(tp.events), tp.events)
	}
	id := deprovision.OperationID(req.Source, req.EventID)
	ev := tp.events[0]
	if ev["type"] != TypeApprovalRequired || ev["subject"] != "enrollmentGroups/line-7" || ev["id"] != id+"/awaiting-approval" {
		t.Fatalf("event %v", ev)
	}
	data := ev["data"].(map[string]any)
	if data["operationId"] != id || data["status"] != "awaiting-approval" || data["limit"] != "MAX_GROUP_DEVICES" ||
		data["max"] != float64(2) || data["count"].(float64) <= 2 || data["approveRoute"] != "deprovision/approvals/"+id ||
		data["denyRoute"] != "deprovision/denials/"+id || !strings.Contains(data["reason"].(string), "MAX_GROUP_DEVICES") {
		t.Fatalf("data %v", data)
	}
}

func TestApprovalEventOnlyForHeldOperations(t *testing.T) {
	if _, err := NewApprovalEvent("/s", sampleOp(deprovision.StatusRunning), time.Now()); err == nil || !strings.Contains(err.Error(), "running") {
		t.Fatalf("approval event for a running operation: %v", err)
	}
}
