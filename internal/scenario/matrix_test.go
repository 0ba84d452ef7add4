package scenario_test

import (
	"strings"
	"testing"
	"time"

	"dpsdeprov/azure/dps"
	"dpsdeprov/azure/iothub"
	"dpsdeprov/deprovision"
	"dpsdeprov/deprovision/fake"
)

var t0 = time.Date(2026, 5, 1, 9, 0, 0, 0, time.UTC)

func request(id string, i deprovision.Intent, rid string, at time.Duration) deprovision.Request {
	return deprovision.Request{EventID: id, Source: "/scenario", Intent: i, RegistrationID: rid, EventTime: t0.Add(at), Reason: "scenario " + id}
}

func succeeded(t *testing.T, op *deprovision.Operation) {
	t.Helper()
	if op.Status != deprovision.StatusSucceeded {
		t.Fatalf("operation %s: %s %q\n%s", op.ID, op.Status, op.Reason, op.Plan)
	}
}

func rejected(t *testing.T, op *deprovision.Operation, reason string) {
	t.Helper()
	if op.Status != deprovision.StatusRejected || !strings.Contains(op.Reason, reason) {
		t.Fatalf("operation %s: %s %q, want rejected with %q", op.ID, op.Status, op.Reason, reason)
	}
}

func disabledIn(t *testing.T, e *env, hub, id, intent string) {
	t.Helper()
	d := e.device(hub, id)
	if d == nil || d.Status != iothub.DeviceStatusDisabled || !strings.Contains(d.StatusReason, intent) {
		t.Fatalf("hub identity %s/%s: %+v, want disabled with a reason naming %s", hub, id, d, intent)
	}
}

// TestIndividualSymmetricKey: lost → recovered → compromised → recovered refused → sold.
func TestIndividualSymmetricKey(t *testing.T) {
	e := newEnv(t)
	key := randomKey()
	e.individualSK("sk-ind-1", key)
	hub := e.mustProvision("sk-ind-1", skCred(key))

	succeeded(t, e.submit(request("lost", deprovision.IntentLost, "sk-ind-1", 0)))
	if en := e.enrollment("sk-ind-1"); en == nil || en.ProvisioningStatus != dps.ProvisioningStatusDisabled {
		t.Fatalf("enrollment after lost: %+v", en)
	}
	disabledIn(t, e, hub, "sk-ind-1", "lost")
	e.mustNotProvision("sk-ind-1", skCred(key))

	succeeded(t, e.submit(request("found", deprovision.IntentRecovered, "sk-ind-1", time.Minute)))
	if d := e.device(hub, "sk-ind-1"); d == nil || d.Status != iothub.DeviceStatusEnabled {
		t.Fatalf("hub identity after recovered: %+v", d)
	}
	e.mustProvision("sk-ind-1", skCred(key))

	succeeded(t, e.submit(request("pwned", deprovision.IntentCompromised, "sk-ind-1", 2*time.Minute)))
	e.mustNotProvision("sk-ind-1", skCred(key))
	rejected(t, e.submit(request("found2", deprovision.IntentRecovered, "sk-ind-1", 3*time.Minute)), "never undoes a compromise")
	e.mustNotProvision("sk-ind-1", skCred(key))

	succeeded(t, e.submit(request("sold", deprovision.IntentSold, "sk-ind-1", 4*time.Minute)))
	if e.enrollment("sk-ind-1") != nil || e.hasRegistration("sk-ind-1") || e.device(hub, "sk-ind-1") != nil {
		t.Fatal("enrollment, registration record or hub identity left after sold")
	}
	e.mustNotProvision("sk-ind-1", skCred(key))
	rejected(t, e.submit(request("lost-again", deprovision.IntentLost, "sk-ind-1", 5*time.Minute)), "final")

	ds, hist, err := e.engine(nil).DeviceHistory(t.Context(), "sk-ind-1")
	if err != nil || ds.Intent != deprovision.IntentSold || len(hist) != 6 {
		t.Fatalf("device row %+v, %d history lines, %v", ds, len(hist), err)
	}
}

// TestIndividualTPM: the TPM rows, from the device side. The device attests with a TPM of its
// own (the reference simulator) through DPS's TPM challenge; stolen disables its enrollment,
// so its next attempt ends "disabled"; recovered admits it again; retired deletes the
// enrollment, and it is refused with 401. A TPM device that never registered is found
// through the event's hub.
func TestIndividualTPM(t *testing.T) {
	e := newEnv(t)
	dev := tpmCred(e.individualTPM("tpm-1"))
	if hub := e.mustProvision("tpm-1", dev); hub != hub1 {
		t.Fatalf("TPM device assigned to %s, want %s", hub, hub1)
	}
	succeeded(t, e.submit(request("stolen", deprovision.IntentStolen, "tpm-1", 0)))
	if en := e.enrollment("tpm-1"); en == nil || en.ProvisioningStatus != dps.ProvisioningStatusDisabled || en.Attestation.TPM == nil {
		t.Fatalf("TPM enrollment after stolen: %+v", en)
	}
	disabledIn(t, e, hub1, "tpm-1", "stolen")
	e.mustBeRefused("tpm-1", dev, "disabled")
	succeeded(t, e.submit(request("found", deprovision.IntentRecovered, "tpm-1", time.Minute)))
	e.mustProvision("tpm-1", dev)
	succeeded(t, e.submit(request("retired", deprovision.IntentRetired, "tpm-1", 2*time.Minute)))
	if e.enrollment("tpm-1") != nil || e.device(hub1, "tpm-1") != nil {
		t.Fatal("TPM enrollment or hub identity left after retired")
	}
	e.mustBeRefused("tpm-1", dev, "http 401")

	e.individualTPM("tpm-2")
	e.hubDevice(hub1, "tpm-2")
	r := request("stolen-2", deprovision.IntentStolen, "tpm-2", 0)
	r.Hub = hub1 // never registered: the event says where it is
	succeeded(t, e.submit(r))
	disabledIn(t, e, hub1, "tpm-2", "stolen")
}

// TestIndividualX509: retired deletes the enrollment only where no enabled group covers it.
func TestIndividualX509(t *testing.T) {
	e := newEnv(t)
	root := fake.NewCA("scn-root")
	inter := root.Issue("scn-inter", true)
	covered := inter.Issue("x509-covered", false)
	free := fake.NewCA("scn-other-root").Issue("x509-free", false)
	e.groupX509("scn-root-group", root)
	e.individualX509("x509-covered", covered)
	e.individualX509("x509-free", free)
	hubC := e.mustProvision("x509-covered", x509Cred(covered, inter))
	hubF := e.mustProvision("x509-free", x509Cred(free))

	// Covered: the group signs the chain above the leaf's issuer; only the PEM chain proves it.
	r := request("ret-c", deprovision.IntentRetired, "x509-covered", 0)
	r.CertificatePEM = covered.ChainPEM
	op := e.submit(r)
	succeeded(t, op)
	if en := e.enrollment("x509-covered"); en == nil || en.ProvisioningStatus != dps.ProvisioningStatusDisabled {
		t.Fatalf("covered X.509 enrollment after retired: %+v (it must be disabled, not deleted)", en)
	}
	if !strings.Contains(op.Plan.Steps[0].Reason, "scn-root-group") {
		t.Errorf("the plan does not say which group covers the device: %s", op.Plan)
	}
	if e.device(hubC, "x509-covered") != nil {
		t.Fatal("hub identity left after retired")
	}
	e.mustNotProvision("x509-covered", x509Cred(covered, inter))

	// Not covered, and the verified chain ends at its own self-signed root: deleted.
	r = request("ret-f", deprovision.IntentRetired, "x509-free", 0)
	r.CertificatePEM = free.ChainPEM
	succeeded(t, e.submit(r))
	if e.enrollment("x509-free") != nil || e.device(hubF, "x509-free") != nil {
		t.Fatal("uncovered X.509 enrollment or identity left after retired")
	}
	e.mustNotProvision("x509-free", x509Cred(free))
}

// TestGroupMembers: the blocking enrollment for X.509 and symmetric-key group members.
func TestGroupMembers(t *testing.T) {
	e := newEnv(t)
	root := fake.NewCA("scn-member-root")
	e.groupX509("x-group", root)
	gkey := randomKey()
	e.groupSK("sk-group", gkey)
	withCert := root.Issue("xm-1", false)
	noCert := root.Issue("xm-2", false)
	skKey, _ := deprovision.DeriveDeviceKey(gkey, "skm-1")
	hubA := e.mustProvision("xm-1", x509Cred(withCert))
	hubB := e.mustProvision("xm-2", x509Cred(noCert))
	hubC := e.mustProvision("skm-1", skCred(skKey))

	// X.509 member, leaf certificate in the event: a disabled X.509 enrollment for it.
	r := request("xm1-lost", deprovision.IntentLost, "xm-1", 0)
	r.CertificatePEM = withCert.PEM
	succeeded(t, e.submit(r))
	en := e.enrollment("xm-1")
	if en == nil || en.ProvisioningStatus != dps.ProvisioningStatusDisabled || en.Attestation.Type != dps.AttestationTypeX509 {
		t.Fatalf("blocking enrollment of xm-1: %+v", en)
	}
	disabledIn(t, e, hubA, "xm-1", "lost")
	e.mustNotProvision("xm-1", x509Cred(withCert))
	if g := e.group("x-group"); g.ProvisioningStatus == dps.ProvisioningStatusDisabled {
		t.Fatal("the group was disabled for one member")
	}
	// recovered removes the block this system created.
	succeeded(t, e.submit(request("xm1-found", deprovision.IntentRecovered, "xm-1", time.Minute)))
	if e.enrollment("xm-1") != nil {
		t.Fatal("blocking enrollment left after recovered")
	}
	e.mustProvision("xm-1", x509Cred(withCert))

	// X.509 member without its certificate: a disabled symmetric-key enrollment on the id.
	succeeded(t, e.submit(request("xm2-stolen", deprovision.IntentStolen, "xm-2", 0)))
	if en := e.enrollment("xm-2"); en == nil || en.Attestation.Type != dps.AttestationTypeSymmetricKey || en.ProvisioningStatus != dps.ProvisioningStatusDisabled {
		t.Fatalf("blocking enrollment of xm-2: %+v", en)
	}
	disabledIn(t, e, hubB, "xm-2", "stolen")
	e.mustNotProvision("xm-2", x509Cred(noCert))

	// Symmetric-key member retired: blocked for good, record and identity gone.
	succeeded(t, e.submit(request("skm1-retired", deprovision.IntentRetired, "skm-1", 0)))
	if en := e.enrollment("skm-1"); en == nil || en.ProvisioningStatus != dps.ProvisioningStatusDisabled {
		t.Fatalf("blocking enrollment of skm-1: %+v", en)
	}
	if e.hasRegistration("skm-1") || e.device(hubC, "skm-1") != nil {
		t.Fatal("registration record or identity left after retired")
	}
	e.mustNotProvision("skm-1", skCred(skKey))
	// A later sold never deletes the block.
	succeeded(t, e.submit(request("skm1-sold", deprovision.IntentSold, "skm-1", time.Minute)))
	if e.enrollment("skm-1") == nil {
		t.Fatal("sold deleted a blocking enrollment")
	}
	e.mustNotProvision("skm-1", skCred(skKey))
}

// TestMoved: an individual enrollment is retargeted; a symmetric-key member gets its own
// enrollment on the target hub; the old identity stays until each re-provisions there, when
// DPS removes it.
func TestMoved(t *testing.T) {
	e := newEnv(t)
	key := randomKey()
	e.individualSK("mv-ind", key)
	gkey := randomKey()
	e.groupSK("mv-group", gkey)
	mkey, _ := deprovision.DeriveDeviceKey(gkey, "mv-member")
	for _, c := range []struct {
		rid   string
		cred  credential
		group string
	}{{"mv-ind", skCred(key), ""}, {"mv-member", skCred(mkey), "mv-group"}} {
		from := e.mustProvision(c.rid, c.cred)
		to := hub2
		if from == hub2 {
			to = hub1
		}
		r := request("move-"+c.rid, deprovision.IntentMoved, c.rid, 0)
		r.TargetHub, r.EnrollmentGroupID = to, c.group
		succeeded(t, e.submit(r))
		if e.device(from, c.rid) == nil {
			t.Fatalf("%s left its old hub before it moved", c.rid)
		}
		if got := e.mustProvision(c.rid, c.cred); got != to {
			t.Fatalf("%s re-provisioned to %s, want %s", c.rid, got, to)
		}
		if e.device(from, c.rid) != nil {
			t.Fatalf("%s still in its old hub after it moved", c.rid)
		}
	}
}

// TestDryRun: the plan is journaled and nothing changes.
func TestDryRun(t *testing.T) {
	e := newEnv(t)
	key := randomKey()
	e.individualSK("dry-1", key)
	hub := e.mustProvision("dry-1", skCred(key))
	r := request("dry", deprovision.IntentSold, "dry-1", 0)
	r.DryRun = true
	op := e.submit(r)
	if op.Status != deprovision.StatusPlanned || op.Plan == nil || len(op.Plan.Steps) != 3 {
		t.Fatalf("dry run: %s %v", op.Status, op.Plan)
	}
	stored, _, err := e.engine(nil).Operation(t.Context(), op.ID)
	if err != nil || stored.Plan == nil || stored.Plan.Path != op.Plan.Path {
		t.Fatalf("journaled dry run: %+v %v", stored, err)
	}
	if e.enrollment("dry-1") == nil || e.device(hub, "dry-1") == nil {
		t.Fatal("dry run changed DPS or the hub")
	}
	e.mustProvision("dry-1", skCred(key))
}
