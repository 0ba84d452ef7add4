package dps_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"dpsdeprov/azure/dps"
	"dpsdeprov/azure/internal/swaggercheck"
	"dpsdeprov/azure/sas"
	"dpsdeprov/emulator"
	"dpsdeprov/internal/testenv"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
)

func key(b byte) string {
	return base64.StdEncoding.EncodeToString([]byte(strings.Repeat(string(rune('a'+b%26)), 32)))
}

func symEnrollment(id string) dps.IndividualEnrollment {
	return dps.IndividualEnrollment{
		RegistrationID:     id,
		Attestation:        &dps.AttestationMechanism{Type: dps.AttestationTypeSymmetricKey, SymmetricKey: &dps.SymmetricKeyAttestation{PrimaryKey: key(1), SecondaryKey: key(2)}},
		ProvisioningStatus: dps.ProvisioningStatusEnabled,
	}
}

func etag(s string) *azcore.ETag { e := azcore.ETag(s); return &e }

func TestEnrollmentLifecycle(t *testing.T) {
	e := newEnv(t, emulator.Options{})
	c, _ := e.client()
	ctx := context.Background()

	created, err := c.CreateOrUpdateEnrollment(ctx, symEnrollment("dev-1"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if created.ETag == "" || created.RegistrationID != "dev-1" {
		t.Fatalf("created %+v", created.IndividualEnrollment)
	}

	// Create-only a second time: 409 with the service's error code.
	_, err = c.CreateOrUpdateEnrollment(ctx, symEnrollment("dev-1"), nil)
	var re *azcore.ResponseError
	if !dps.IsConflict(err) || !errors.As(err, &re) || re.ErrorCode == "" {
		t.Fatalf("second create: %v, want a 409 ResponseError with an error code", err)
	}

	got, err := c.GetEnrollment(ctx, "dev-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got.Attestation.SymmetricKey != nil && got.Attestation.SymmetricKey.PrimaryKey != "" {
		t.Fatal("GET returned the symmetric key; the service blanks it")
	}
	am, err := c.GetEnrollmentAttestationMechanism(ctx, "dev-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if am.SymmetricKey == nil || am.SymmetricKey.PrimaryKey != key(1) {
		t.Fatalf("attestation mechanism %+v, want the stored keys", am.AttestationMechanism)
	}

	// Conditional update with the current etag, then with the now stale one.
	upd := got.IndividualEnrollment
	upd.Attestation = &am.AttestationMechanism
	upd.ProvisioningStatus = dps.ProvisioningStatusDisabled
	after, err := c.CreateOrUpdateEnrollment(ctx, upd, &dps.CreateOrUpdateEnrollmentOptions{IfMatch: etag(got.ETag)})
	if err != nil {
		t.Fatal(err)
	}
	if after.ProvisioningStatus != dps.ProvisioningStatusDisabled || after.ETag == got.ETag {
		t.Fatalf("update gave status %s etag %s (was %s)", after.ProvisioningStatus, after.ETag, got.ETag)
	}
	_, err = c.CreateOrUpdateEnrollment(ctx, upd, &dps.CreateOrUpdateEnrollmentOptions{IfMatch: etag(got.ETag)})
	if !dps.IsPreconditionFailed(err) {
		t.Fatalf("update with a stale etag: %v, want 412", err)
	}
	_, err = c.DeleteEnrollment(ctx, "dev-1", &dps.DeleteEnrollmentOptions{IfMatch: etag(got.ETag)})
	if !dps.IsPreconditionFailed(err) {
		t.Fatalf("delete with a stale etag: %v, want 412", err)
	}
	// Unconditional replace works whatever the etag.
	if _, err := c.CreateOrUpdateEnrollment(ctx, upd, &dps.CreateOrUpdateEnrollmentOptions{IfMatch: etag("*")}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DeleteEnrollment(ctx, "dev-1", nil); err != nil {
		t.Fatal(err)
	}
	_, err = c.GetEnrollment(ctx, "dev-1", nil)
	if !dps.IsNotFound(err) || !errors.As(err, &re) || re.ErrorCode == "" {
		t.Fatalf("get after delete: %v, want a 404 with an error code", err)
	}
	if _, err := c.DeleteEnrollment(ctx, "dev-1", nil); !dps.IsNotFound(err) {
		t.Fatalf("second delete: %v, want 404", err)
	}
}

func TestX509EnrollmentReturnsInfoNotCertificate(t *testing.T) {
	e := newEnv(t, emulator.Options{})
	c, _ := e.client()
	ctx := context.Background()
	ca, err := emulator.NewTestCA("test-root")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue("dev-x509", false)
	if err != nil {
		t.Fatal(err)
	}
	en := dps.IndividualEnrollment{
		RegistrationID:     "dev-x509",
		ProvisioningStatus: dps.ProvisioningStatusDisabled,
		Attestation: &dps.AttestationMechanism{Type: dps.AttestationTypeX509, X509: &dps.X509Attestation{
			ClientCertificates: &dps.X509Certificates{Primary: &dps.X509CertificateWithInfo{Certificate: string(leaf.CertPEM)}}}},
	}
	if _, err := c.CreateOrUpdateEnrollment(ctx, en, nil); err != nil {
		t.Fatal(err)
	}
	got, err := c.GetEnrollment(ctx, "dev-x509", nil)
	if err != nil {
		t.Fatal(err)
	}
	p := got.Attestation.X509.ClientCertificates.Primary
	if p.Certificate != "" || p.Info == nil {
		t.Fatalf("primary %+v: want info and no certificate", p)
	}
	if !strings.Contains(p.Info.SubjectName, "dev-x509") || !strings.Contains(p.Info.IssuerName, "test-root") || p.Info.SHA256Thumbprint == "" {
		t.Fatalf("info %+v does not describe the leaf", p.Info)
	}
	if !p.Info.NotAfterUTC.Equal(leaf.Cert.NotAfter.UTC()) {
		t.Fatalf("notAfter %s, want %s", p.Info.NotAfterUTC, leaf.Cert.NotAfter)
	}
	// Written back without the certificate (as read), the stored certificate stays.
	back := got.IndividualEnrollment
	back.ProvisioningStatus = dps.ProvisioningStatusEnabled
	upd, err := c.CreateOrUpdateEnrollment(ctx, back, &dps.CreateOrUpdateEnrollmentOptions{IfMatch: etag(got.ETag)})
	if err != nil {
		t.Fatal(err)
	}
	if upd.Attestation.X509.ClientCertificates.Primary.Info.SHA256Thumbprint != p.Info.SHA256Thumbprint {
		t.Fatal("the certificate changed on an update that did not send one")
	}
}

func TestEnrollmentGroupLifecycle(t *testing.T) {
	e := newEnv(t, emulator.Options{})
	c, _ := e.client()
	ctx := context.Background()
	g := dps.EnrollmentGroup{
		EnrollmentGroupID:  "grp-1",
		Attestation:        &dps.AttestationMechanism{Type: dps.AttestationTypeSymmetricKey, SymmetricKey: &dps.SymmetricKeyAttestation{PrimaryKey: key(3), SecondaryKey: key(4)}},
		ProvisioningStatus: dps.ProvisioningStatusEnabled,
		ReprovisionPolicy:  &dps.ReprovisionPolicy{UpdateHubAssignment: true, MigrateDeviceData: true},
		AllocationPolicy:   dps.AllocationPolicyHashed,
	}
	created, err := c.CreateOrUpdateEnrollmentGroup(ctx, g, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateOrUpdateEnrollmentGroup(ctx, g, nil); !dps.IsConflict(err) {
		t.Fatalf("second create: %v, want 409", err)
	}
	am, err := c.GetEnrollmentGroupAttestationMechanism(ctx, "grp-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if am.SymmetricKey == nil || am.SymmetricKey.PrimaryKey != key(3) {
		t.Fatalf("group keys %+v", am.SymmetricKey)
	}
	got, err := c.GetEnrollmentGroup(ctx, "grp-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got.ETag != created.ETag || got.ReprovisionPolicy == nil || !got.ReprovisionPolicy.UpdateHubAssignment {
		t.Fatalf("group read back as %+v", got.EnrollmentGroup)
	}
	upd := got.EnrollmentGroup
	upd.Attestation = &am.AttestationMechanism
	upd.ProvisioningStatus = dps.ProvisioningStatusDisabled
	if _, err := c.CreateOrUpdateEnrollmentGroup(ctx, upd, &dps.CreateOrUpdateEnrollmentGroupOptions{IfMatch: etag(got.ETag)}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateOrUpdateEnrollmentGroup(ctx, upd, &dps.CreateOrUpdateEnrollmentGroupOptions{IfMatch: etag(got.ETag)}); !dps.IsPreconditionFailed(err) {
		t.Fatalf("stale group update: %v, want 412", err)
	}
	if _, err := c.DeleteEnrollmentGroup(ctx, "grp-1", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetEnrollmentGroup(ctx, "grp-1", nil); !dps.IsNotFound(err) {
		t.Fatalf("get after delete: %v, want 404", err)
	}
}

func TestBulkEnrollmentOperationSurfacesItemErrors(t *testing.T) {
	e := newEnv(t, emulator.Options{})
	c, _ := e.client()
	ctx := context.Background()
	op := dps.BulkEnrollmentOperation{Mode: dps.BulkOperationModeCreate}
	for i := range 3 {
		op.Enrollments = append(op.Enrollments, symEnrollment(fmt.Sprintf("bulk-%d", i)))
	}
	r, err := c.RunEnrollmentBulkOperation(ctx, op, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !r.IsSuccessful || len(r.Errors) != 0 {
		t.Fatalf("first bulk create: %+v", r)
	}
	if _, err := c.GetEnrollment(ctx, "bulk-2", nil); err != nil {
		t.Fatalf("bulk-created enrollment missing: %v", err)
	}
	// bulk-0 is deleted, so creating all three again fails for bulk-1 and bulk-2 only.
	if _, err := c.DeleteEnrollment(ctx, "bulk-0", nil); err != nil {
		t.Fatal(err)
	}
	r, err = c.RunEnrollmentBulkOperation(ctx, op, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.IsSuccessful || len(r.Errors) != 2 {
		t.Fatalf("second bulk create: %+v, want two item errors", r)
	}
	for _, ie := range r.Errors {
		if ie.RegistrationID != "bulk-1" && ie.RegistrationID != "bulk-2" || ie.ErrorCode == 0 {
			t.Errorf("unexpected item error %+v", ie)
		}
	}
	// Too many items is refused before anything is sent.
	big := dps.BulkEnrollmentOperation{Mode: dps.BulkOperationModeDelete, Enrollments: make([]dps.IndividualEnrollment, dps.MaxBulkItems+1)}
	if _, err := c.RunEnrollmentBulkOperation(ctx, big, nil); err == nil || !strings.Contains(err.Error(), "1 to 10") {
		t.Fatalf("oversized bulk: %v", err)
	}
	gop := dps.BulkEnrollmentGroupOperation{Mode: dps.BulkOperationModeCreate, EnrollmentGroups: []dps.EnrollmentGroup{{
		EnrollmentGroupID: "bulk-grp", Attestation: &dps.AttestationMechanism{Type: dps.AttestationTypeSymmetricKey, SymmetricKey: &dps.SymmetricKeyAttestation{PrimaryKey: key(5), SecondaryKey: key(6)}}}}}
	gr, err := c.RunEnrollmentGroupBulkOperation(ctx, gop, nil)
	if err != nil || !gr.IsSuccessful {
		t.Fatalf("bulk group create: %+v %v", gr, err)
	}
	gr, err = c.RunEnrollmentGroupBulkOperation(ctx, gop, nil)
	if err != nil || gr.IsSuccessful || len(gr.Errors) != 1 || gr.Errors[0].EnrollmentGroupID != "bulk-grp" {
		t.Fatalf("repeated bulk group create: %+v %v", gr, err)
	}
}

func TestQueryPagers(t *testing.T) {
	e := newEnv(t, emulator.Options{Hubs: []string{"hub1", "hub2"}})
	c, rec := e.client()
	ctx := context.Background()
	for i := range 23 {
		if _, err := c.CreateOrUpdateEnrollment(ctx, symEnrollment(fmt.Sprintf("q-%02d", i)), nil); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]bool{}
	pages := 0
	var second string
	p := c.NewQueryEnrollmentsPager("SELECT * FROM enrollments", &dps.QueryOptions{PageSize: 5})
	for p.More() {
		page, err := p.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		if len(page.Enrollments) > 5 {
			t.Fatalf("page of %d, asked for 5", len(page.Enrollments))
		}
		if pages == 1 {
			second = page.ContinuationToken
		}
		for _, en := range page.Enrollments {
			if seen[en.RegistrationID] {
				t.Fatalf("%s seen twice", en.RegistrationID)
			}
			seen[en.RegistrationID] = true
		}
	}
	if len(seen) != 23 || pages != 5 {
		t.Fatalf("saw %d enrollments in %d pages, want 23 in 5", len(seen), pages)
	}
	if n := rec.Count(http.MethodPost, "/enrollments/query"); n != 5 {
		t.Fatalf("%d query calls, want 5", n)
	}
	// Resuming from the first page's token yields the other 18.
	rest := 0
	p = c.NewQueryEnrollmentsPager("SELECT * FROM enrollments", &dps.QueryOptions{PageSize: 5, ContinuationToken: second})
	for p.More() {
		page, err := p.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		rest += len(page.Enrollments)
	}
	if rest != 18 {
		t.Fatalf("resumed query gave %d, want 18", rest)
	}

	seed, err := e.em.Seed(emulator.SeedSpec{Prefix: "s", Groups: 2, Registrations: 40})
	if err != nil {
		t.Fatal(err)
	}
	groups := 0
	gp := c.NewQueryEnrollmentGroupsPager("SELECT * FROM enrollmentGroups", &dps.QueryOptions{PageSize: 1})
	for gp.More() {
		page, err := gp.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		groups += len(page.EnrollmentGroups)
	}
	if groups != 2 {
		t.Fatalf("%d groups, want 2", groups)
	}
	g0 := seed.Groups[0]
	regs, rpages := map[string]dps.DeviceRegistrationState{}, 0
	rp := c.NewQueryRegistrationStatesPager(g0.ID, &dps.QueryOptions{PageSize: 6})
	for rp.More() {
		page, err := rp.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		rpages++
		for _, r := range page.RegistrationStates {
			regs[r.RegistrationID] = r
		}
	}
	if len(regs) != g0.Registrations || rpages < 4 {
		t.Fatalf("%d registrations in %d pages, want %d in at least 4", len(regs), rpages, g0.Registrations)
	}
	for id, r := range regs {
		if r.AssignedHub == "" || r.Status != dps.RegistrationStatusAssigned {
			t.Fatalf("registration %s: %+v", id, r)
		}
	}
}

func TestRegistrationStates(t *testing.T) {
	e := newEnv(t, emulator.Options{})
	c, _ := e.client()
	ctx := context.Background()
	if _, err := e.em.Seed(emulator.SeedSpec{Prefix: "r", Registrations: 2}); err != nil {
		t.Fatal(err)
	}
	st, err := c.GetRegistrationState(ctx, "r-g0-d0", nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.AssignedHub != e.info.Hubs[0].Host || st.DeviceID != "r-g0-d0" || st.ETag == "" {
		t.Fatalf("registration %+v", st.DeviceRegistrationState)
	}
	if _, err := c.DeleteRegistrationState(ctx, "r-g0-d0", &dps.DeleteRegistrationStateOptions{IfMatch: etag(`"stale"`)}); !dps.IsPreconditionFailed(err) {
		t.Fatalf("stale delete: %v, want 412", err)
	}
	if _, err := c.DeleteRegistrationState(ctx, "r-g0-d0", &dps.DeleteRegistrationStateOptions{IfMatch: etag(st.ETag)}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetRegistrationState(ctx, "r-g0-d0", nil); !dps.IsNotFound(err) {
		t.Fatalf("get after delete: %v, want 404", err)
	}
}

// TestRetries checks what is retried: a throttled call of any kind is retried after the
// Retry-After delay and succeeds; a 500 is retried for an idempotent read but not for a
// create-only write, which returns the error after one attempt.
func TestRetries(t *testing.T) {
	e := newEnv(t, emulator.Options{})
	c, rec := e.client()
	ctx := context.Background()
	if _, err := c.CreateOrUpdateEnrollment(ctx, symEnrollment("r-1"), nil); err != nil {
		t.Fatal(err)
	}
	if err := e.em.AddFault(emulator.Fault{Op: "dps.enrollments.get", Status: 429, RetryAfter: 1, Count: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetEnrollment(ctx, "r-1", nil); err != nil {
		t.Fatalf("429 then success: %v", err)
	}
	if n := rec.Count(http.MethodGet, "/enrollments/r-1"); n != 2 {
		t.Fatalf("%d GET attempts, want 2", n)
	}

	if err := e.em.AddFault(emulator.Fault{Op: "dps.enrollments.put", Status: 429, Count: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateOrUpdateEnrollment(ctx, symEnrollment("r-2"), nil); err != nil {
		t.Fatalf("throttled create was not retried: %v", err)
	}
	if n := rec.Count(http.MethodPut, "/enrollments/r-2"); n != 2 {
		t.Fatalf("%d PUT attempts, want 2", n)
	}

	if err := e.em.AddFault(emulator.Fault{Op: "dps.enrollments.put", Status: 500, Count: 1}); err != nil {
		t.Fatal(err)
	}
	_, err := c.CreateOrUpdateEnrollment(ctx, symEnrollment("r-3"), nil)
	var re *azcore.ResponseError
	if !errors.As(err, &re) || re.StatusCode != 500 {
		t.Fatalf("create after a 500: %v, want the 500 back", err)
	}
	if n := rec.Count(http.MethodPut, "/enrollments/r-3"); n != 1 {
		t.Fatalf("create-only PUT sent %d times after a 500, want once", n)
	}

	if err := e.em.AddFault(emulator.Fault{Op: "dps.enrollments.get", Status: 500, Count: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetEnrollment(ctx, "r-2", nil); err != nil {
		t.Fatalf("GET after a 500 was not retried: %v", err)
	}

	// Throttled beyond the retries: IsThrottled.
	if err := e.em.AddFault(emulator.Fault{Op: "dps.registrations.get", Status: 429, RetryAfter: 1, Count: 10}); err != nil {
		t.Fatal(err)
	}
	o := e.options(nil)
	o.Retry.MaxRetries = 1
	c1, err := dps.NewClientFromConnectionString(e.info.DPS.ConnectionString, o)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c1.GetRegistrationState(ctx, "r-1", nil); !dps.IsThrottled(err) {
		t.Fatalf("persistent throttling: %v, want IsThrottled", err)
	}
}

// TestSASRefresh shows that the emulator rejects an expired token, and that a client whose
// tokens live two seconds keeps working past their expiry because it signs new ones.
func TestSASRefresh(t *testing.T) {
	e := newEnv(t, emulator.Options{})
	// The fixed token lives long enough for the first calls to reach the service however
	// loaded the machine is; the client's own tokens live 2 s.
	const fixedTTL = 10 * time.Second
	ctx := context.Background()
	cs, err := sas.ParseConnectionString(e.info.DPS.ConnectionString)
	if err != nil {
		t.Fatal(err)
	}
	fixed, err := sas.Sign(cs.HostName, cs.SharedAccessKeyName, cs.SharedAccessKey, time.Now().Add(fixedTTL))
	if err != nil {
		t.Fatal(err)
	}
	fixedClient, err := dps.NewClientFromConnectionString("HostName="+cs.HostName+";SharedAccessSignature="+fixed, e.options(nil))
	if err != nil {
		t.Fatal(err)
	}
	o := e.options(nil)
	o.SASTokenTTL = 2 * time.Second
	c, err := dps.NewClientFromConnectionString(e.info.DPS.ConnectionString, o)
	if err != nil {
		t.Fatal(err)
	}
	for _, cl := range []*dps.Client{fixedClient, c} {
		if _, err := cl.GetEnrollment(ctx, "nobody", nil); !dps.IsNotFound(err) {
			t.Fatalf("before expiry: %v, want 404 (authorized)", err)
		}
	}
	// The fixed token expires (the emulator's clock is the real one): wait for the 401 that
	// says so. The refreshing client has long since replaced its first token by then.
	testenv.Eventually(t, "the fixed token to be refused once expired", func() bool {
		_, err := fixedClient.GetEnrollment(ctx, "nobody", nil)
		var re *azcore.ResponseError
		if !dps.IsNotFound(err) && (!errors.As(err, &re) || re.StatusCode != http.StatusUnauthorized) {
			t.Fatalf("fixed token: %v, want 404 before its expiry and 401 after", err)
		}
		return err != nil && !dps.IsNotFound(err)
	})
	if _, err := c.GetEnrollment(ctx, "nobody", nil); !dps.IsNotFound(err) {
		t.Fatalf("after the first token expired: %v, want 404 (a fresh token)", err)
	}
}

// staticCredential hands out one bearer token and remembers the scopes asked for.
type staticCredential struct {
	token  string
	scopes []string
}

func (s *staticCredential) GetToken(_ context.Context, o policy.TokenRequestOptions) (azcore.AccessToken, error) {
	s.scopes = o.Scopes
	return azcore.AccessToken{Token: s.token, ExpiresOn: time.Now().Add(time.Hour)}, nil
}

func TestBearerCredential(t *testing.T) {
	bk := []byte("bearer-test-key-0123456789abcdef")
	e := newEnv(t, emulator.Options{AcceptBearer: true, BearerKey: bk})
	ctx := context.Background()
	cred := &staticCredential{token: emulator.TestBearerToken("https://azure-devices-provisioning.net", bk, time.Hour)}
	rec := &swaggercheck.Recorder{}
	c, err := dps.NewClient("https://"+e.info.DPS.Host, cred, e.options(rec))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateOrUpdateEnrollment(ctx, symEnrollment("b-1"), nil); err != nil {
		t.Fatal(err)
	}
	if len(cred.scopes) != 1 || cred.scopes[0] != dps.Scope {
		t.Fatalf("scopes %v, want [%s]", cred.scopes, dps.Scope)
	}
	for _, r := range rec.Requests() {
		if !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ") {
			t.Fatalf("request sent Authorization %q", r.Header.Get("Authorization"))
		}
	}
	// A token for the hub audience is refused by DPS.
	wrong := &staticCredential{token: emulator.TestBearerToken("https://iothubs.azure.net", bk, time.Hour)}
	cw, err := dps.NewClient("https://"+e.info.DPS.Host, wrong, e.options(nil))
	if err != nil {
		t.Fatal(err)
	}
	var re *azcore.ResponseError
	if _, err := cw.GetEnrollment(ctx, "b-1", nil); !errors.As(err, &re) || re.StatusCode != http.StatusUnauthorized {
		t.Fatalf("wrong audience: %v, want 401", err)
	}
}

func TestNewClientRejectsBadInput(t *testing.T) {
	for _, ep := range []string{"http://dps1.azure-devices-provisioning.net", "https://", "https://x/path", "dps1.azure-devices-provisioning.net"} {
		if _, err := dps.NewClient(ep, &staticCredential{}, nil); err == nil {
			t.Errorf("endpoint %q accepted", ep)
		}
	}
	if _, err := dps.NewClient("https://dps1.azure-devices-provisioning.net", nil, nil); err == nil {
		t.Error("nil credential accepted")
	}
	if _, err := dps.NewClientFromConnectionString("HostName=dps1.azure-devices-provisioning.net", nil); err == nil {
		t.Error("connection string without a key accepted")
	}
}
