package fleet_test

import (
	"context"
	"encoding/base64"
	"flag"
	"fmt"
	"sync"

	"dpsdeprov/deprovision"
	"dpsdeprov/internal/tpmdevice"
)

var flagTPMEvery = flag.Int("fleet.tpm-every", 1, "run TPM devices through DPS's TPM attestation on the TPM simulator in every Nth fleet (by seed); the others use the stand-in")

// TPM devices attest for real, with a TPM on Microsoft's reference simulator
// (internal/tpmdevice) going through DPS's TPM flow in the emulator, in every fleet by default.
// The simulator is one per process and a TPM registration costs about as much as the rest of
// a fleet, so the long run (make check-policy) runs them in every Nth fleet only and, in the
// others, asks the stand-in below. Without cgo there is no simulator, and every fleet does.

// tpms holds one simulated TPM per world and device id for the whole test binary: creating
// one takes longer than a fleet, and the emulator is reset between fleets, so a TPM carries no
// state from one fleet to the next but its keys. Worlds run fleets at the same time, and a
// TPM holds one imported key at a time, so each world has its own.
var tpms struct {
	mu     sync.Mutex
	m      map[string]*tpmdevice.Device
	broken error
}

// tpmFor returns the TPM of device id of world w, or nil when the simulator cannot run here.
func tpmFor(w *world, id string) *tpmdevice.Device {
	id = fmt.Sprintf("%p/%s", w, id)
	tpms.mu.Lock()
	defer tpms.mu.Unlock()
	if tpms.broken != nil {
		return nil
	}
	if d := tpms.m[id]; d != nil {
		return d
	}
	d, err := tpmdevice.New("fleet:" + id)
	if err != nil {
		tpms.broken = err
		return nil
	}
	if tpms.m == nil {
		tpms.m = map[string]*tpmdevice.Device{}
	}
	tpms.m[id] = d
	return d
}

// realTPM reports whether the TPM devices of case c attest for real.
func realTPM(c *Case) bool { return *flagTPMEvery <= 1 || c.Seed%uint64(*flagTPMEvery) == 0 }

// tpmEndorsementKey returns the endorsement key device i is enrolled with: its simulated
// TPM's, or, for the stand-in, random bytes no TPM holds.
func (f *fleet) tpmEndorsementKey(i int, random string) string {
	if realTPM(f.c) {
		if d := tpmFor(f.w, f.c.devID(i)); d != nil {
			f.tpm[i] = d
			return base64.StdEncoding.EncodeToString(d.EndorsementKey())
		}
	}
	return random
}

func (f *fleet) tpmCredential(i int) credential {
	if d := f.tpm[i]; d != nil {
		return credential{what: "its TPM", tpm: d}
	}
	return credential{what: "its TPM (stand-in)", stand: true}
}

// tpmStandIn answers for a TPM device registering without a simulated TPM: it applies DPS's
// documented lookup to what the service API shows (an individual enrollment of the
// registration id decides, and a TPM device has no other).
func (w *world) tpmStandIn(ctx context.Context, rid string) (registration, error) {
	en, err := w.en.GetEnrollment(ctx, rid)
	switch {
	case isNotFound(err):
		return registration{status: "no enrollment"}, nil
	case err != nil:
		return registration{}, err
	case en.Attestation != deprovision.AttestationTPM:
		return registration{status: "enrollment of attestation " + string(en.Attestation)}, nil
	case !en.Enabled:
		return registration{status: "disabled"}, nil
	}
	return registration{status: "assigned"}, nil
}
