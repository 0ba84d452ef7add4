package scenario_test

import (
	"fmt"
	"testing"
	"time"

	"dpsdeprov/azure/dps"
	"dpsdeprov/azure/iothub"
	"dpsdeprov/deprovision"
	"dpsdeprov/deprovision/fake"
)

// deviceKind sets up one kind of device of the policy matrix in a fresh environment, provisions
// it, and returns how it authenticates (a TPM device has a TPM of its own on the simulator) and
// how its requests must be completed.
type deviceKind struct {
	name  string
	setup func(e *env, rid string) (cred *credential, hub string, complete func(*deprovision.Request))
	// enrollment after a revoking intent: "disabled", "deleted" (sold/retired only), or the
	// attestation type of a blocking enrollment ("x509", "symmetricKey").
	revoked, removed string
	// moved: "retarget" (the enrollment points at the target), "create" (a new enabled
	// enrollment does), or "" when a move is refused.
	moved string
}

// refusal is how DPS refuses the device after a revoking intent: "disabled" when its
// credential attests against an entry that is now disabled (its own enrollment, or a blocking
// X.509 enrollment holding its certificate), "http 401" when nothing is left to attest
// against, "refused" where either holds (a blocking symmetric-key enrollment: whether the
// device holds its keys is the policy's choice).
func (k deviceKind) refusal(intent deprovision.Intent) string {
	state := k.revoked
	if intent == deprovision.IntentSold || intent == deprovision.IntentRetired {
		state = k.removed
	}
	switch state {
	case "disabled", "x509":
		return "disabled"
	case "deleted":
		return "http 401"
	}
	return "refused"
}

func kinds() []deviceKind {
	none := func(*deprovision.Request) {}
	return []deviceKind{
		{name: "individual symmetric key", revoked: "disabled", removed: "deleted", moved: "retarget",
			setup: func(e *env, rid string) (*credential, string, func(*deprovision.Request)) {
				key := randomKey()
				e.individualSK(rid, key)
				c := skCred(key)
				return &c, e.mustProvision(rid, c), none
			}},
		{name: "individual TPM", revoked: "disabled", removed: "deleted", moved: "retarget",
			setup: func(e *env, rid string) (*credential, string, func(*deprovision.Request)) {
				c := tpmCred(e.individualTPM(rid))
				return &c, e.mustProvision(rid, c), none
			}},
		{name: "individual X.509, no group", revoked: "disabled", removed: "deleted", moved: "retarget",
			setup: func(e *env, rid string) (*credential, string, func(*deprovision.Request)) {
				c := fake.NewCA(rid+"-ca").Issue(rid, false)
				e.individualX509(rid, c)
				cr := x509Cred(c)
				return &cr, e.mustProvision(rid, cr), none
			}},
		{name: "individual X.509 under an enabled group", revoked: "disabled", removed: "disabled", moved: "retarget",
			setup: func(e *env, rid string) (*credential, string, func(*deprovision.Request)) {
				ca := fake.NewCA(rid + "-ca")
				e.groupX509(rid+"-group", ca)
				c := ca.Issue(rid, false)
				e.individualX509(rid, c)
				cr := x509Cred(c)
				return &cr, e.mustProvision(rid, cr), none
			}},
		{name: "X.509 group member, certificate in the event", revoked: "x509", removed: "x509", moved: "create",
			setup: func(e *env, rid string) (*credential, string, func(*deprovision.Request)) {
				ca := fake.NewCA(rid + "-ca")
				e.groupX509(rid+"-group", ca)
				c := ca.Issue(rid, false)
				cr := x509Cred(c)
				return &cr, e.mustProvision(rid, cr), func(r *deprovision.Request) { r.CertificatePEM = c.PEM }
			}},
		{name: "X.509 group member, no certificate", revoked: "symmetricKey", removed: "symmetricKey", moved: "",
			setup: func(e *env, rid string) (*credential, string, func(*deprovision.Request)) {
				ca := fake.NewCA(rid + "-ca")
				e.groupX509(rid+"-group", ca)
				c := ca.Issue(rid, false)
				cr := x509Cred(c)
				return &cr, e.mustProvision(rid, cr), none
			}},
		{name: "symmetric-key group member", revoked: "symmetricKey", removed: "symmetricKey", moved: "create",
			setup: func(e *env, rid string) (*credential, string, func(*deprovision.Request)) {
				gkey := randomKey()
				e.groupSK(rid+"-group", gkey)
				k, _ := deprovision.DeriveDeviceKey(gkey, rid)
				cr := skCred(k)
				return &cr, e.mustProvision(rid, cr), func(r *deprovision.Request) { r.EnrollmentGroupID = rid + "-group" }
			}},
	}
}

// TestPolicyMatrixOnEmulator runs every device row of docs/policy.md against the emulator and
// the Table journal on Azurite, and checks DPS, the hub, and whether the device can provision.
func TestPolicyMatrixOnEmulator(t *testing.T) {
	intents := []deprovision.Intent{deprovision.IntentLost, deprovision.IntentStolen, deprovision.IntentCompromised,
		deprovision.IntentSold, deprovision.IntentRetired, deprovision.IntentMoved, deprovision.IntentRecovered}
	for ki, k := range kinds() {
		for ii, intent := range intents {
			t.Run(k.name+"/"+string(intent), func(t *testing.T) {
				e := newEnv(t)
				rid := fmt.Sprintf("mx-%d-%d", ki, ii)
				cred, hub, complete := k.setup(e, rid)
				other := hub2
				if hub == hub2 {
					other = hub1
				}
				req := request(string(intent), intent, rid, time.Minute)
				complete(&req)
				if intent == deprovision.IntentRecovered {
					lost := request("lost", deprovision.IntentLost, rid, 0)
					complete(&lost)
					succeeded(t, e.submit(lost))
				}
				if intent == deprovision.IntentMoved {
					req.TargetHub = other
				}
				op := e.submit(req)
				if intent == deprovision.IntentMoved && k.moved == "" {
					rejected(t, op, "needs its leaf certificate")
					return
				}
				succeeded(t, op)

				en := e.enrollment(rid)
				dev := e.device(hub, rid)
				switch intent {
				case deprovision.IntentLost, deprovision.IntentStolen, deprovision.IntentCompromised:
					checkEnrollment(t, en, k.revoked)
					if dev == nil || dev.Status != iothub.DeviceStatusDisabled {
						t.Fatalf("hub identity %+v, want disabled", dev)
					}
					if !e.hasRegistration(rid) {
						t.Fatal("a temporary revocation deleted the registration record")
					}
				case deprovision.IntentSold, deprovision.IntentRetired:
					checkEnrollment(t, en, k.removed)
					if dev != nil || e.hasRegistration(rid) {
						t.Fatalf("identity %+v or registration record left after %s", dev, intent)
					}
				case deprovision.IntentMoved:
					if en == nil || en.ProvisioningStatus == dps.ProvisioningStatusDisabled || len(en.IoTHubs) != 1 || en.IoTHubs[0] != other {
						t.Fatalf("enrollment after moved: %+v, want enabled and pointed at %s", en, other)
					}
					if dev == nil || dev.Status != iothub.DeviceStatusEnabled {
						t.Fatalf("the old identity must wait for the device to move: %+v", dev)
					}
				case deprovision.IntentRecovered:
					if dev == nil || dev.Status != iothub.DeviceStatusEnabled {
						t.Fatalf("hub identity after recovered: %+v", dev)
					}
					if k.revoked == "disabled" {
						if en == nil || en.ProvisioningStatus != dps.ProvisioningStatusEnabled {
							t.Fatalf("enrollment after recovered: %+v", en)
						}
					} else if en != nil {
						t.Fatal("blocking enrollment left after recovered")
					}
				}
				switch intent {
				case deprovision.IntentMoved:
					if got := e.mustProvision(rid, *cred); got != other {
						t.Fatalf("moved device provisioned to %s, want %s", got, other)
					}
					if e.device(hub, rid) != nil {
						t.Fatal("DPS left the old identity after the device moved (migrateDeviceData)")
					}
				case deprovision.IntentRecovered:
					e.mustProvision(rid, *cred)
				default:
					e.mustBeRefused(rid, *cred, k.refusal(intent))
				}
			})
		}
	}
}

func checkEnrollment(t *testing.T, en *dps.IndividualEnrollment, want string) {
	t.Helper()
	switch want {
	case "deleted":
		if en != nil {
			t.Fatalf("enrollment %+v, want deleted", en)
		}
	case "disabled":
		if en == nil || en.ProvisioningStatus != dps.ProvisioningStatusDisabled {
			t.Fatalf("enrollment %+v, want disabled", en)
		}
	default: // a blocking enrollment of this attestation
		if en == nil || en.ProvisioningStatus != dps.ProvisioningStatusDisabled || string(en.Attestation.Type) != want {
			t.Fatalf("enrollment %+v, want a disabled %s blocking enrollment", en, want)
		}
	}
}
