package fleet_test

import (
	"context"

	"dpsdeprov/deprovision"
)

// tpmRegister stands in for a TPM device registering, until the emulator runs the TPM
// attestation flow (the device side of issue 13, landing separately): it applies DPS's
// documented lookup to what the service API shows, an individual enrollment of the
// registration id decides, and a TPM device has no other. It is the one seam of the
// generated fleets: when the emulator attests TPM devices, this becomes a real
// registration with the device's TPM, and TPM devices provision in setup like the others.
func (w *world) tpmRegister(ctx context.Context, rid string) (registration, error) {
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
