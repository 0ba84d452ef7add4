package scenario_test

import (
	"context"
	"fmt"
	"testing"

	"dpsdeprov/azure/dps"
	"dpsdeprov/azure/iothub"
	"dpsdeprov/deprovision"
	"dpsdeprov/deprovision/fake"
	"dpsdeprov/emulator"
)

// members provisions n devices of a group and returns their ids and assigned hubs.
func (e *env) skMembers(group, key string, n int) map[string]string {
	e.t.Helper()
	out := map[string]string{}
	for i := range n {
		id := fmt.Sprintf("%s-m%d", group, i)
		k, _ := deprovision.DeriveDeviceKey(key, id)
		out[id] = e.mustProvision(id, skCred(k))
	}
	return out
}

func TestGroupCompromised(t *testing.T) {
	e := newEnv(t)
	key := randomKey()
	e.groupSK("gc-group", key)
	members := e.skMembers("gc-group", key, 5) // page size 2: three pages
	op := e.submit(deprovision.Request{EventID: "gc", Source: "/scenario", Intent: deprovision.IntentGroupCompromised, EnrollmentGroupID: "gc-group", Reason: "CA key leaked"})
	succeeded(t, op)
	if op.Progress.Total != 5 || op.Progress.Done != 5 || op.Progress.Pages != 3 {
		t.Fatalf("progress %+v", op.Progress)
	}
	if g := e.group("gc-group"); g == nil || g.ProvisioningStatus != dps.ProvisioningStatusDisabled {
		t.Fatalf("group after group-compromised: %+v", g)
	}
	for id, hub := range members {
		if d := e.device(hub, id); d == nil || d.Status != iothub.DeviceStatusDisabled {
			t.Fatalf("member %s: %+v, want disabled (kept as evidence)", id, d)
		}
		k, _ := deprovision.DeriveDeviceKey(key, id)
		e.mustNotProvision(id, skCred(k))
	}
}

func TestGroupRetired(t *testing.T) {
	e := newEnv(t)
	root := fake.NewCA("gr-root")
	e.groupX509("gr-group", root)
	members := map[string]*fake.Cert{}
	hubs := map[string]string{}
	for i := range 3 {
		id := fmt.Sprintf("gr-m%d", i)
		members[id] = root.Issue(id, false)
		hubs[id] = e.mustProvision(id, x509Cred(members[id]))
	}
	succeeded(t, e.submit(deprovision.Request{EventID: "gr", Source: "/scenario", Intent: deprovision.IntentGroupRetired, EnrollmentGroupID: "gr-group"}))
	if e.group("gr-group") != nil {
		t.Fatal("group left after group-retired (no other group signs its root)")
	}
	for id, c := range members {
		if e.device(hubs[id], id) != nil || e.hasRegistration(id) {
			t.Fatalf("member %s: identity or registration record left", id)
		}
		e.mustNotProvision(id, x509Cred(c))
	}
}

// TestGroupRetiredUnderAnotherGroup: a group whose CA another enabled group signs is kept,
// disabled: deleting it would let its devices in through the upper group.
func TestGroupRetiredUnderAnotherGroup(t *testing.T) {
	e := newEnv(t)
	root := fake.NewCA("gu-root")
	inter := root.Issue("gu-inter", true)
	e.groupX509("gu-upper", root)
	e.groupX509("gu-lower", inter)
	dev := inter.Issue("gu-m0", false)
	hub := e.mustProvision("gu-m0", x509Cred(dev, inter))
	op := e.submit(deprovision.Request{EventID: "gu", Source: "/scenario", Intent: deprovision.IntentGroupRetired, EnrollmentGroupID: "gu-lower"})
	succeeded(t, op)
	g := e.group("gu-lower")
	if g == nil || g.ProvisioningStatus != dps.ProvisioningStatusDisabled {
		t.Fatalf("lower group: %+v, want kept and disabled\n%s", g, op.Plan)
	}
	if e.device(hub, "gu-m0") != nil {
		t.Fatal("member identity left")
	}
	// The nearest group (disabled) still refuses the device.
	e.mustNotProvision("gu-m0", x509Cred(dev, inter))
}

// TestLargeGroup: a group of 1,000 seeded members, paged 100 at a time through the real DPS
// continuation tokens, applied with bulk calls of at most 100 devices, then retired.
func TestLargeGroup(t *testing.T) {
	e := newEnv(t)
	seeded, err := e.em.Seed(emulator.SeedSpec{Prefix: "big", Registrations: 1000})
	if err != nil {
		t.Fatal(err)
	}
	gid := seeded.Groups[0].ID
	eng := deprovision.NewEngine(e.ports, deprovision.Config{GroupPageSize: 100})
	e.em.ResetStats()
	op := e.submitTo(eng, deprovision.Request{EventID: "big-c", Source: "/scenario", Intent: deprovision.IntentGroupCompromised, EnrollmentGroupID: gid})
	succeeded(t, op)
	if op.Progress.Total != 1000 || op.Progress.Done != 1000 || op.Progress.Pages != 10 {
		t.Fatalf("progress %+v", op.Progress)
	}
	st := e.em.Stats()
	var ops int64
	for _, h := range st.Hubs {
		ops += h.RegistryOps
	}
	bulk := st.Operations["hub.devices.bulk"].Calls
	if bulk < 10 || bulk > 20 || ops < 1000 {
		t.Fatalf("%d bulk calls charging %d registry operations for 1,000 members", bulk, ops)
	}
	for j := 0; j < 1000; j += 97 {
		id := fmt.Sprintf("big-g0-d%d", j)
		r, err := e.dps.GetRegistrationState(context.Background(), id, nil)
		if err != nil {
			t.Fatal(err)
		}
		if d := e.device(r.AssignedHub, id); d == nil || d.Status != iothub.DeviceStatusDisabled {
			t.Fatalf("member %s: %+v", id, d)
		}
	}

	op = e.submitTo(eng, deprovision.Request{EventID: "big-r", Source: "/scenario", Intent: deprovision.IntentGroupRetired, EnrollmentGroupID: gid})
	succeeded(t, op)
	if e.group(gid) != nil {
		t.Fatal("group left after group-retired")
	}
	left := 0
	for page, err := range e.ports.Registrations.GroupRegistrations(context.Background(), gid, "", 100) {
		if err != nil {
			t.Fatal(err)
		}
		left += len(page.Items)
	}
	if left != 0 {
		t.Fatalf("%d registration records left", left)
	}
}
