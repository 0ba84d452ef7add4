package adapter_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"dpsdeprov/deprovision"
	"dpsdeprov/emulator"
)

// Blocking enrollments created in one bulk call: each item is answered on its own, and one
// whose registration id is taken (an individual enrollment exists) fails with ErrConflict
// while the others are created, disabled, with the attestation asked for.
func TestCreateEnrollmentsAnswersEachItem(t *testing.T) {
	e := newEnv(t, emulator.Options{})
	ctx := context.Background()
	if _, err := e.dps.PutEnrollment(ctx, &deprovision.Enrollment{RegistrationID: "taken-1", Attestation: deprovision.AttestationSymmetricKey, Enabled: true}, ""); err != nil {
		t.Fatal(err)
	}
	ca, err := emulator.NewTestCA("Bulk CA")
	if err != nil {
		t.Fatal(err)
	}
	var es []*deprovision.Enrollment
	for i := range 9 {
		rid := fmt.Sprintf("blk-%d", i)
		leaf, err := ca.Issue(rid, false)
		if err != nil {
			t.Fatal(err)
		}
		es = append(es, &deprovision.Enrollment{RegistrationID: rid, Attestation: deprovision.AttestationX509, CertificatePEM: string(leaf.CertPEM)})
	}
	es = append(es[:4], append([]*deprovision.Enrollment{{RegistrationID: "TAKEN-1", Attestation: deprovision.AttestationSymmetricKey}}, es[4:]...)...)
	errs, err := e.dps.CreateEnrollments(ctx, es)
	if err != nil || len(errs) != len(es) {
		t.Fatalf("%v, %d answers for %d items", err, len(errs), len(es))
	}
	for i, en := range es {
		if en.RegistrationID == "TAKEN-1" {
			if !errors.Is(errs[i], deprovision.ErrConflict) || deprovision.IsTransient(errs[i]) {
				t.Errorf("the taken id: %v, want ErrConflict", errs[i])
			}
			if status, code := deprovision.ServiceStatus(errs[i]); status != 409 || code != "409201" {
				t.Errorf("the taken id's answer: %d %q, want DPS's 409 409201", status, code)
			}
			continue
		}
		if errs[i] != nil {
			t.Errorf("%s: %v", en.RegistrationID, errs[i])
			continue
		}
		got, err := e.dps.GetEnrollment(ctx, en.RegistrationID)
		if err != nil || got.Enabled || got.Attestation != deprovision.AttestationX509 || len(got.ClientCerts) == 0 {
			t.Errorf("%s as created: %+v %v", en.RegistrationID, got, err)
		}
	}
	if got, _ := e.dps.GetEnrollment(ctx, "taken-1"); !got.Enabled {
		t.Error("the existing individual enrollment was changed")
	}
}
