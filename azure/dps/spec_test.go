package dps_test

import (
	"context"
	"slices"
	"testing"

	"dpsdeprov/azure/dps"
	"dpsdeprov/azure/internal/swaggercheck"
	"dpsdeprov/emulator"
	"dpsdeprov/internal/testenv"
)

// TestRequestsMatchSpec calls every method of the client once and checks that together they
// exercise every operation of the DPS service specification, each request valid against it
// (the per-request check also runs at the end of every other test).
func TestRequestsMatchSpec(t *testing.T) {
	e := newEnv(t, emulator.Options{})
	c, rec := e.client()
	ctx := context.Background()
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.em.Seed(emulator.SeedSpec{Prefix: "spec", Registrations: 3}); err != nil {
		t.Fatal(err)
	}
	en := symEnrollment("spec-e")
	must(c.CreateOrUpdateEnrollment(ctx, en, nil))
	must(c.GetEnrollment(ctx, "spec-e", nil))
	must(c.GetEnrollmentAttestationMechanism(ctx, "spec-e", nil))
	must(c.CreateOrUpdateEnrollment(ctx, en, &dps.CreateOrUpdateEnrollmentOptions{IfMatch: etag("*")}))
	must(c.NewQueryEnrollmentsPager("SELECT * FROM enrollments", &dps.QueryOptions{PageSize: 1}).NextPage(ctx))
	must(c.RunEnrollmentBulkOperation(ctx, dps.BulkEnrollmentOperation{Mode: dps.BulkOperationModeCreate, Enrollments: []dps.IndividualEnrollment{symEnrollment("spec-b")}}, nil))
	must(c.DeleteEnrollment(ctx, "spec-e", nil))
	g := dps.EnrollmentGroup{EnrollmentGroupID: "spec-grp", Attestation: en.Attestation, ProvisioningStatus: dps.ProvisioningStatusEnabled,
		ReprovisionPolicy: &dps.ReprovisionPolicy{UpdateHubAssignment: true}, AllocationPolicy: dps.AllocationPolicyStatic, IoTHubs: []string{e.info.Hubs[0].Host}}
	must(c.CreateOrUpdateEnrollmentGroup(ctx, g, nil))
	must(c.GetEnrollmentGroup(ctx, "spec-grp", nil))
	must(c.GetEnrollmentGroupAttestationMechanism(ctx, "spec-grp", nil))
	must(c.NewQueryEnrollmentGroupsPager("SELECT * FROM enrollmentGroups", nil).NextPage(ctx))
	must(c.RunEnrollmentGroupBulkOperation(ctx, dps.BulkEnrollmentGroupOperation{Mode: dps.BulkOperationModeDelete, EnrollmentGroups: []dps.EnrollmentGroup{g}}, nil))
	must(c.CreateOrUpdateEnrollmentGroup(ctx, g, nil))
	must(c.DeleteEnrollmentGroup(ctx, "spec-grp", nil))
	must(c.NewQueryRegistrationStatesPager("spec-g0", &dps.QueryOptions{PageSize: 2}).NextPage(ctx))
	must(c.GetRegistrationState(ctx, "spec-g0-d0", nil))
	must(c.DeleteRegistrationState(ctx, "spec-g0-d0", nil))

	spec, err := swaggercheck.Load(testenv.SharedReference(t, "specs", "dps-service.json"))
	if err != nil {
		t.Fatal(err)
	}
	var hit []string
	for _, r := range rec.Requests() {
		op, errs := spec.Check(r)
		for _, err := range errs {
			t.Error(err)
		}
		if !slices.Contains(hit, op) {
			hit = append(hit, op)
		}
	}
	for _, op := range spec.Operations() {
		if !slices.Contains(hit, op) {
			t.Errorf("no client method sends %s", op)
		}
	}
	t.Logf("%d operations exercised", len(hit))
}
