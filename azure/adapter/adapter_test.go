package adapter_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"dpsdeprov/azure/adapter"
	"dpsdeprov/azure/dps"
	"dpsdeprov/azure/internal/swaggercheck"
	"dpsdeprov/azure/iothub"
	"dpsdeprov/deprovision"
	"dpsdeprov/emulator"
	"dpsdeprov/internal/testenv"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
)

func TestMain(m *testing.M) { testenv.Main(m) }

type env struct {
	em    *emulator.Emulator
	info  emulator.Info
	dpsC  *dps.Client
	dps   *adapter.DPS
	hubs  *adapter.HubDevices
	hubCs map[string]*iothub.Client
}

func newEnv(t *testing.T, o emulator.Options) *env { return newEnvTB(t, o) }

func newEnvTB(t testing.TB, o emulator.Options) *env {
	t.Helper()
	if len(o.Hubs) == 0 {
		o.Hubs = []string{"hub1", "hub2"}
	}
	em := testenv.StartEmulator(t, o)
	info := em.Info()
	tr := testenv.LoopbackTransport(t, em)
	// Every request the adapters make is checked against the services' specifications.
	dpsRec, hubRec := &swaggercheck.Recorder{}, &swaggercheck.Recorder{}
	swaggercheck.CheckAtEnd(t, dpsRec, "dps-service.json")
	swaggercheck.CheckAtEnd(t, hubRec, "iothub-service.json")
	co := azcore.ClientOptions{Transport: tr, Retry: policy.RetryOptions{MaxRetries: 1, RetryDelay: 10 * time.Millisecond, MaxRetryDelay: 2 * time.Second}}
	dco := co
	dco.PerRetryPolicies = []policy.Policy{dpsRec}
	co.PerRetryPolicies = []policy.Policy{hubRec}
	dc, err := dps.NewClientFromConnectionString(info.DPS.ConnectionString, &dps.ClientOptions{ClientOptions: dco})
	if err != nil {
		t.Fatal(err)
	}
	hubCs := map[string]*iothub.Client{}
	for _, h := range info.Hubs {
		c, err := iothub.NewClientFromConnectionString(h.ConnectionString, &iothub.ClientOptions{ClientOptions: co})
		if err != nil {
			t.Fatal(err)
		}
		hubCs[h.Host] = c
	}
	return &env{em: em, info: info, dpsC: dc, dps: adapter.NewDPS(dc), hubs: adapter.NewHubDevices(hubCs), hubCs: hubCs}
}

func TestEnrollmentErrorMapping(t *testing.T) {
	e := newEnv(t, emulator.Options{})
	ctx := context.Background()
	_, err := e.dps.GetEnrollment(ctx, "nobody")
	var re *azcore.ResponseError
	if !errors.Is(err, deprovision.ErrNotFound) || !errors.As(err, &re) || re.StatusCode != 404 || !strings.Contains(err.Error(), "nobody") {
		t.Fatalf("missing enrollment: %v; want ErrNotFound wrapping the 404 and naming the id", err)
	}
	block := &deprovision.Enrollment{RegistrationID: "blk-1", Attestation: deprovision.AttestationSymmetricKey}
	created, err := e.dps.PutEnrollment(ctx, block, "")
	if err != nil {
		t.Fatal(err)
	}
	if created.Enabled || created.ETag == "" || created.Attestation != deprovision.AttestationSymmetricKey {
		t.Fatalf("blocking enrollment %+v: want disabled, symmetric key, with an etag", created)
	}
	if _, err := e.dps.PutEnrollment(ctx, block, ""); !errors.Is(err, deprovision.ErrConflict) {
		t.Fatalf("second create: %v, want ErrConflict", err)
	}
	// A conditional update keeps the random keys the create generated.
	keys1, err := e.dpsC.GetEnrollmentAttestationMechanism(ctx, "blk-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	enabled := *created
	enabled.Enabled = true
	upd, err := e.dps.PutEnrollment(ctx, &enabled, created.ETag)
	if err != nil {
		t.Fatal(err)
	}
	keys2, _ := e.dpsC.GetEnrollmentAttestationMechanism(ctx, "blk-1", nil)
	if !upd.Enabled || keys2.SymmetricKey == nil || keys2.SymmetricKey.PrimaryKey != keys1.SymmetricKey.PrimaryKey {
		t.Fatalf("update: enabled=%v, keys kept=%v", upd.Enabled, keys2.SymmetricKey != nil && keys2.SymmetricKey.PrimaryKey == keys1.SymmetricKey.PrimaryKey)
	}
	if _, err := e.dps.PutEnrollment(ctx, &enabled, created.ETag); !errors.Is(err, deprovision.ErrPreconditionFailed) {
		t.Fatalf("stale update: %v, want ErrPreconditionFailed", err)
	}
	if err := e.dps.DeleteEnrollment(ctx, "blk-1", created.ETag); !errors.Is(err, deprovision.ErrPreconditionFailed) {
		t.Fatalf("stale delete: %v, want ErrPreconditionFailed", err)
	}
	if _, err := e.dps.PutEnrollment(ctx, &enabled, "*"); err != nil {
		t.Fatalf("unconditional update: %v", err)
	}
	if err := e.dps.DeleteEnrollment(ctx, "blk-1", ""); err != nil {
		t.Fatal(err)
	}
	if err := e.dps.DeleteEnrollment(ctx, "blk-1", ""); !errors.Is(err, deprovision.ErrNotFound) {
		t.Fatalf("delete of a missing enrollment: %v, want ErrNotFound", err)
	}
}

func TestTransientErrors(t *testing.T) {
	e := newEnv(t, emulator.Options{})
	ctx := context.Background()
	for _, f := range []emulator.Fault{
		{Op: "dps.enrollments.get", Status: 429, RetryAfter: 1, Count: 5},
		{Op: "dps.enrollments.get", Status: 503, RetryAfter: 1, Count: 5},
		{Op: "dps.enrollments.get", Status: 500, Count: 5},
		{Op: "dps.enrollments.get", Action: "drop", Count: 5},
	} {
		e.em.ClearFaults()
		if err := e.em.AddFault(f); err != nil {
			t.Fatal(err)
		}
		_, err := e.dps.GetEnrollment(ctx, "x")
		if !deprovision.IsTransient(err) {
			t.Errorf("fault %s %d: %v, want a transient error", f.Action, f.Status, err)
		}
	}
	e.em.ClearFaults()
	if err := e.em.AddFault(emulator.Fault{Op: "dps.registrations.get", Action: "slow", Delay: emulator.Duration(5 * time.Second), Count: 1}); err != nil {
		t.Fatal(err)
	}
	tctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if _, err := e.dps.GetRegistration(tctx, "x"); !deprovision.IsTransient(err) {
		t.Errorf("timeout: %v, want a transient error", err)
	}
	e.em.ClearFaults()
	if err := e.em.AddFault(emulator.Fault{Op: "hub.devices.get", Status: 400, Count: 1}); err != nil {
		t.Fatal(err)
	}
	_, err := e.hubs.GetDevice(ctx, e.info.Hubs[0].Host, "x")
	if err == nil || deprovision.IsTransient(err) || errors.Is(err, deprovision.ErrNotFound) {
		t.Fatalf("400: %v, want a permanent error", err)
	}
}

func TestX509BlockingEnrollmentAndMove(t *testing.T) {
	e := newEnv(t, emulator.Options{})
	ctx := context.Background()
	ca, _ := emulator.NewTestCA("adapter-root")
	leaf, _ := ca.Issue("cam-7", false)
	en, err := e.dps.PutEnrollment(ctx, &deprovision.Enrollment{RegistrationID: "cam-7", Attestation: deprovision.AttestationX509, CertificatePEM: string(leaf.CertPEM)}, "")
	if err != nil {
		t.Fatal(err)
	}
	if en.Enabled || len(en.ClientCerts) != 1 || !strings.Contains(en.ClientCerts[0].SubjectName, "cam-7") || !strings.Contains(en.ClientCerts[0].IssuerName, "adapter-root") {
		t.Fatalf("X.509 blocking enrollment %+v", en)
	}
	if en.ClientCerts[0].NotAfter.IsZero() || en.ClientCerts[0].SHA256Thumbprint == "" {
		t.Fatalf("cert info incomplete: %+v", en.ClientCerts[0])
	}
	if _, err := e.dps.PutEnrollment(ctx, &deprovision.Enrollment{RegistrationID: "k", Attestation: deprovision.AttestationX509, CertificatePEM: string(leaf.KeyPEM)}, ""); err == nil {
		t.Fatal("a private key was accepted as the certificate")
	}
	// Move: enabled, static to hub2, re-provisioning moves the device; the certificate stays.
	target := e.info.Hubs[1].Host
	mv := *en
	mv.Enabled, mv.IoTHubs, mv.AllocationPolicy = true, []string{target}, "static"
	moved, err := e.dps.PutEnrollment(ctx, &mv, en.ETag)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := e.dpsC.GetEnrollment(ctx, "cam-7", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !moved.Enabled || raw.AllocationPolicy != dps.AllocationPolicyStatic || len(raw.IoTHubs) != 1 || raw.IoTHubs[0] != target ||
		raw.ReprovisionPolicy == nil || !raw.ReprovisionPolicy.UpdateHubAssignment {
		t.Fatalf("moved enrollment %+v", raw.IndividualEnrollment)
	}
	if raw.Attestation.X509.ClientCertificates.Primary.Info.SHA256Thumbprint != en.ClientCerts[0].SHA256Thumbprint {
		t.Fatal("the certificate changed on the move")
	}
	// Disabling the moved enrollment leaves its allocation and re-provisioning policy alone.
	custom := raw.IndividualEnrollment
	custom.ReprovisionPolicy = &dps.ReprovisionPolicy{UpdateHubAssignment: false, MigrateDeviceData: false}
	cur, err := e.dpsC.CreateOrUpdateEnrollment(ctx, custom, &dps.CreateOrUpdateEnrollmentOptions{IfMatch: etag(raw.ETag)})
	if err != nil {
		t.Fatal(err)
	}
	dom := enrollmentOf(t, e, "cam-7")
	dom.Enabled = false
	if _, err := e.dps.PutEnrollment(ctx, dom, cur.ETag); err != nil {
		t.Fatal(err)
	}
	raw, _ = e.dpsC.GetEnrollment(ctx, "cam-7", nil)
	if raw.ProvisioningStatus != dps.ProvisioningStatusDisabled || raw.ReprovisionPolicy == nil || raw.ReprovisionPolicy.UpdateHubAssignment || raw.IoTHubs[0] != target {
		t.Fatalf("after disable: %+v", raw.IndividualEnrollment)
	}
}

func TestGroupsAndRegistrations(t *testing.T) {
	e := newEnv(t, emulator.Options{})
	ctx := context.Background()
	seed, err := e.em.Seed(emulator.SeedSpec{Prefix: "ad", Groups: 3, Registrations: 30})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for g, err := range e.dps.Groups(ctx) {
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, g.ID)
		if !g.Enabled || g.Attestation != deprovision.AttestationSymmetricKey || g.ETag == "" {
			t.Fatalf("group %+v", g)
		}
	}
	if len(ids) != 3 {
		t.Fatalf("groups %v, want 3", ids)
	}
	g0 := seed.Groups[0]
	keys, err := e.dps.GroupKeys(ctx, g0.ID)
	if err != nil || keys.Primary != g0.PrimaryKey || keys.Secondary == "" || keys.Secondary == keys.Primary {
		t.Fatalf("group keys: %v (primary matches=%v)", err, keys.Primary == g0.PrimaryKey)
	}
	key := keys.Primary
	// The derived device key is what the hub holds for a member.
	devKey, _ := deprovision.DeriveDeviceKey(key, "ad-g0-d0")
	reg, err := e.dps.GetRegistration(ctx, "ad-g0-d0")
	if err != nil {
		t.Fatal(err)
	}
	hd, err := e.hubCs[reg.AssignedHub].GetDevice(ctx, reg.DeviceID, nil)
	if err != nil || hd.Authentication.SymmetricKey.PrimaryKey != devKey {
		t.Fatalf("member device key does not match the derived key: %v", err)
	}

	// Pages, resumable from any page's token.
	var pages []deprovision.RegistrationPage
	for p, err := range e.dps.GroupRegistrations(ctx, g0.ID, "", 3) {
		if err != nil {
			t.Fatal(err)
		}
		pages = append(pages, p)
	}
	total := 0
	for _, p := range pages {
		total += len(p.Items)
	}
	if total != g0.Registrations || len(pages) < 4 || pages[len(pages)-1].Next != "" {
		t.Fatalf("%d registrations in %d pages, want %d in at least 4 ending with no token", total, len(pages), g0.Registrations)
	}
	resumed := 0
	for p, err := range e.dps.GroupRegistrations(ctx, g0.ID, pages[1].Next, 3) {
		if err != nil {
			t.Fatal(err)
		}
		resumed += len(p.Items)
	}
	if resumed != total-len(pages[0].Items)-len(pages[1].Items) {
		t.Fatalf("resumed after page 2: %d, want %d", resumed, total-len(pages[0].Items)-len(pages[1].Items))
	}

	// Disable the group: keys survive.
	g, err := e.dps.GetGroup(ctx, g0.ID)
	if err != nil {
		t.Fatal(err)
	}
	g.Enabled = false
	dg, err := e.dps.PutGroup(ctx, g, g.ETag)
	if err != nil || dg.Enabled {
		t.Fatalf("disable group: %+v %v", dg, err)
	}
	if k, _ := e.dps.GroupKeys(ctx, g0.ID); k != keys {
		t.Fatal("the group keys changed when the group was disabled")
	}
	if _, err := e.dps.PutGroup(ctx, g, g.ETag); !errors.Is(err, deprovision.ErrPreconditionFailed) {
		t.Fatalf("stale group update: %v", err)
	}
	if err := e.dps.DeleteRegistration(ctx, "ad-g0-d0", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := e.dps.GetRegistration(ctx, "ad-g0-d0"); !errors.Is(err, deprovision.ErrNotFound) {
		t.Fatalf("deleted registration: %v", err)
	}
	if err := e.dps.DeleteGroup(ctx, g0.ID, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := e.dps.GetGroup(ctx, g0.ID); !errors.Is(err, deprovision.ErrNotFound) {
		t.Fatalf("deleted group: %v", err)
	}
}

func TestDevices(t *testing.T) {
	e := newEnv(t, emulator.Options{})
	ctx := context.Background()
	hub := e.info.Hubs[0].Host
	if _, err := e.hubs.GetDevice(ctx, "nohub.azure-devices.net", "d"); err == nil || deprovision.IsTransient(err) {
		t.Fatalf("unknown hub: %v", err)
	}
	d, err := e.hubs.PutDevice(ctx, &deprovision.Device{Hub: hub, DeviceID: "dev-1", Enabled: true}, "")
	if err != nil {
		t.Fatal(err)
	}
	if d.AuthType != "sas" || !d.Enabled || d.Hub != hub {
		t.Fatalf("created %+v", d)
	}
	key1, _ := e.hubCs[hub].GetDevice(ctx, "dev-1", nil)
	// By bare name too.
	got, err := e.hubs.GetDevice(ctx, "hub1", "dev-1")
	if err != nil {
		t.Fatal(err)
	}
	got.Enabled, got.StatusReason = false, "stolen"
	dis, err := e.hubs.PutDevice(ctx, got, got.ETag)
	if err != nil || dis.Enabled || dis.StatusReason != "stolen" {
		t.Fatalf("disable: %+v %v", dis, err)
	}
	key2, _ := e.hubCs[hub].GetDevice(ctx, "dev-1", nil)
	if key2.Authentication.SymmetricKey.PrimaryKey != key1.Authentication.SymmetricKey.PrimaryKey {
		t.Fatal("disabling the device changed its keys")
	}
	if _, err := e.hubs.PutDevice(ctx, got, got.ETag); !errors.Is(err, deprovision.ErrPreconditionFailed) {
		t.Fatalf("stale update: %v", err)
	}
	if _, err := e.hubs.PutDevice(ctx, got, ""); !errors.Is(err, deprovision.ErrConflict) {
		t.Fatalf("create of an existing device: %v", err)
	}
	got.StatusReason = strings.Repeat("x", 129)
	if _, err := e.hubs.PutDevice(ctx, got, "*"); err == nil {
		t.Fatal("a 129-byte status reason was sent")
	}
	if err := e.hubs.DeleteDevice(ctx, hub, "dev-1", ""); err != nil {
		t.Fatal(err)
	}
	if err := e.hubs.DeleteDevice(ctx, hub, "dev-1", ""); !errors.Is(err, deprovision.ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
}

func TestBulk(t *testing.T) {
	e := newEnv(t, emulator.Options{})
	ctx := context.Background()
	if _, err := e.em.Seed(emulator.SeedSpec{Prefix: "bk", Registrations: 10, Hubs: []string{"hub1"}}); err != nil {
		t.Fatal(err)
	}
	hub := e.info.Hubs[0].Host
	var ids []string
	for i := range 6 {
		ids = append(ids, fmt.Sprintf("bk-g0-d%d", i))
	}
	// One query reads them, without keys; a device that does not exist is left out.
	found, err := e.hubs.Identities(ctx, hub, append(ids, "ghost"))
	if err != nil || len(found) != 6 {
		t.Fatalf("identities: %d, %v", len(found), err)
	}
	for _, d := range found {
		if d.AuthType != "sas" || d.Keys.Primary != "" || d.ETag == "" || !d.Enabled {
			t.Fatalf("identity from the query %+v", d)
		}
	}
	// A SAS identity without its keys is refused: the hub would give it new ones.
	if _, err := e.hubs.Bulk(ctx, hub, deprovision.BulkDisable, []deprovision.BulkItem{{DeviceID: found[0].DeviceID, Device: found[0]}}); err == nil {
		t.Fatal("a SAS identity without keys was written back")
	}
	var items []deprovision.BulkItem
	before := map[string]deprovision.SymmetricKeys{}
	for _, id := range ids {
		d, err := e.hubs.GetDevice(ctx, hub, id)
		if err != nil {
			t.Fatal(err)
		}
		before[id] = d.Keys
		items = append(items, deprovision.BulkItem{DeviceID: id, StatusReason: "group compromised", Device: d})
	}
	res, err := e.hubs.Bulk(ctx, hub, deprovision.BulkDisable, items)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if r.DeviceID != items[i].DeviceID || r.Err != nil {
			t.Fatalf("result %d: %s %v", i, r.DeviceID, r.Err)
		}
		d, err := e.hubs.GetDevice(ctx, hub, r.DeviceID)
		if err != nil || d.Enabled || d.StatusReason != "group compromised" || d.AuthType != "sas" || d.Keys != before[r.DeviceID] {
			t.Fatalf("%s after bulk disable: enabled=%v reason=%q keys kept=%v %v", r.DeviceID, d.Enabled, d.StatusReason, d.Keys == before[r.DeviceID], err)
		}
	}
	// The same items again carry stale etags: each fails its precondition, to be read again.
	res, err = e.hubs.Bulk(ctx, hub, deprovision.BulkDisable, items)
	if err != nil || !errors.Is(res[0].Err, deprovision.ErrPreconditionFailed) {
		t.Fatalf("stale bulk disable: %v %v", err, res)
	}
	items = append(items, deprovision.BulkItem{DeviceID: "ghost"})
	// Delete, with a device already gone: success for every item.
	res, err = e.hubs.Bulk(ctx, hub, deprovision.BulkDelete, items)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		if r.Err != nil {
			t.Fatalf("bulk delete %s: %v", r.DeviceID, r.Err)
		}
	}
	if _, err := e.hubs.GetDevice(ctx, hub, "bk-g0-d0"); !errors.Is(err, deprovision.ErrNotFound) {
		t.Fatalf("deleted device: %v", err)
	}
	// The hub's throttle counts each device: beyond it, the call is transient.
	if err := e.em.SetThrottle("hub1", 3, 0); err != nil {
		t.Fatal(err)
	}
	// (A full budget admits one call larger than itself, leaving the hub in debt.)
	if _, err := e.hubs.Bulk(ctx, hub, deprovision.BulkDelete, []deprovision.BulkItem{{DeviceID: "bk-g0-d6"}, {DeviceID: "bk-g0-d7"}, {DeviceID: "bk-g0-d8"}, {DeviceID: "bk-g0-d9"}}); err != nil {
		t.Fatal(err)
	}
	_, err = e.hubs.Bulk(ctx, hub, deprovision.BulkDelete, []deprovision.BulkItem{{DeviceID: "bk-g0-d6"}})
	if !deprovision.IsTransient(err) {
		t.Fatalf("bulk over the throttle: %v, want transient", err)
	}
	if _, err := e.hubs.Bulk(ctx, hub, "melt", items[:1]); err == nil {
		t.Fatal("unknown mode accepted")
	}
}

func etag(s string) *azcore.ETag { x := azcore.ETag(s); return &x }

func enrollmentOf(t *testing.T, e *env, id string) *deprovision.Enrollment {
	t.Helper()
	en, err := e.dps.GetEnrollment(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return en
}

func TestGroupCreateAndNonSymmetricKey(t *testing.T) {
	e := newEnv(t, emulator.Options{})
	ctx := context.Background()
	seed, err := e.em.Seed(emulator.SeedSpec{Prefix: "xg", Attestation: "x509", Registrations: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.dps.GroupKeys(ctx, seed.Groups[0].ID); err == nil || !strings.Contains(err.Error(), "not a symmetric key") {
		t.Fatalf("key of an X.509 group: %v", err)
	}
	g, err := e.dps.GetGroup(ctx, seed.Groups[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	if g.Attestation != deprovision.AttestationX509 || len(g.SigningCerts) != 1 || !strings.Contains(g.SigningCerts[0].SubjectName, "xg-g0-ca") {
		t.Fatalf("X.509 group %+v", g)
	}
	// Disabling keeps the signing certificate.
	g.Enabled = false
	dg, err := e.dps.PutGroup(ctx, g, "*")
	if err != nil || dg.Enabled || len(dg.SigningCerts) != 1 || dg.SigningCerts[0].SHA256Thumbprint != g.SigningCerts[0].SHA256Thumbprint {
		t.Fatalf("disabled X.509 group %+v %v", dg, err)
	}
	ng, err := e.dps.PutGroup(ctx, &deprovision.Group{ID: "new-sym", Attestation: deprovision.AttestationSymmetricKey, Enabled: true}, "")
	if err != nil || !ng.Enabled || ng.ETag == "" {
		t.Fatalf("new group %+v %v", ng, err)
	}
	if k, err := e.dps.GroupKeys(ctx, "new-sym"); err != nil || k.Primary == "" || k.Secondary == "" {
		t.Fatalf("new group key: %v", err)
	}
	if _, err := e.dps.PutGroup(ctx, &deprovision.Group{ID: "new-x", Attestation: deprovision.AttestationX509}, ""); err == nil {
		t.Fatal("an X.509 group without certificate or CA reference was created")
	}
}

func TestTPMEnrollmentSurvivesDisable(t *testing.T) {
	e := newEnv(t, emulator.Options{})
	ctx := context.Background()
	ek := "AToAAQALAAMAsgAgg3GXZ0SEs/gakMyNRqXXJP1S124GUgtk8qHaGzMUaaoABgCAAEMAEAgAAAAAAAEAxsj2gUScTk1UjuioeTlfGYZrrimExB+bScH75adUMRIi2UOMxG1kw4y+9RW/IVoMl4e620VxZad0ARX2gUqVjYO7KPVt3dyKhZS3dkcvfBisBhP1XH9B33VqHG9SHnbnQXdBUaCgKAfxome8UmBKfe+naTsE5fkvjGt5ex6OvY3dtQlbozW2g9mqovsIYGCjLJiJsGSEjpoWdRdBrbfpCIa4fOC/KGRwBIrPJwYzXtAKoYKCq5YdX1qJ3GFOyc3bPA6z72+/C5gFOthnMAbz+Dd1ER2kwC6bGjmkPDOqfCbCa0hL1yJlS1H1p8mBxGEQMDOvxp+3kaW/qYu4Cg4gUQ=="
	_, err := e.dpsC.CreateOrUpdateEnrollment(ctx, dps.IndividualEnrollment{RegistrationID: "tpm-1", ProvisioningStatus: dps.ProvisioningStatusEnabled,
		Attestation: &dps.AttestationMechanism{Type: dps.AttestationTypeTPM, TPM: &dps.TPMAttestation{EndorsementKey: ek}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	en := enrollmentOf(t, e, "tpm-1")
	if en.Attestation != deprovision.AttestationTPM {
		t.Fatalf("attestation %s", en.Attestation)
	}
	en.Enabled = false
	if _, err := e.dps.PutEnrollment(ctx, en, en.ETag); err != nil {
		t.Fatal(err)
	}
	am, err := e.dpsC.GetEnrollmentAttestationMechanism(ctx, "tpm-1", nil)
	if err != nil || am.TPM == nil || am.TPM.EndorsementKey != ek {
		t.Fatalf("the endorsement key did not survive the disable: %+v %v", am.TPM, err)
	}
}

// A device written back as GetDevice returned it costs the write alone (the identity it
// carries is written, keys included, guarded by its etag); any other update reads first. The
// counts are the emulator's registry operations, as the hub charges them.
func TestDeviceUpdateRegistryOperations(t *testing.T) {
	e := newEnv(t, emulator.Options{})
	ctx := context.Background()
	hub := e.info.Hubs[0].Host
	ops := func() int64 {
		var n int64
		for _, h := range e.em.Stats().Hubs {
			n += h.RegistryOps
		}
		return n
	}
	if _, err := e.hubs.PutDevice(ctx, &deprovision.Device{Hub: hub, DeviceID: "dev-2", Enabled: true}, ""); err != nil {
		t.Fatal(err)
	}
	before, _ := e.hubCs[hub].GetDevice(ctx, "dev-2", nil)

	got, err := e.hubs.GetDevice(ctx, hub, "dev-2")
	if err != nil || got.Identity == nil {
		t.Fatalf("read %+v %v: the device must carry its identity", got, err)
	}
	if s := fmt.Sprintf("%+v %v", *got, got); strings.Contains(s, before.Authentication.SymmetricKey.PrimaryKey) {
		t.Fatalf("printing a device shows its key: %s", s)
	}
	if deprovision.PutDeviceReads(got, got.ETag) {
		t.Fatal("an update of the device as read with its own etag is said to read it again")
	}
	got.Enabled, got.StatusReason = false, "stolen"
	e.em.ResetStats()
	dis, err := e.hubs.PutDevice(ctx, got, got.ETag)
	if err != nil || dis.Enabled || dis.StatusReason != "stolen" {
		t.Fatalf("disable as read: %+v %v", dis, err)
	}
	if n := ops(); n != 1 {
		t.Fatalf("an update of the device as read cost %d registry operations, want 1", n)
	}
	after, _ := e.hubCs[hub].GetDevice(ctx, "dev-2", nil)
	if after.Authentication.SymmetricKey.PrimaryKey != before.Authentication.SymmetricKey.PrimaryKey ||
		after.Authentication.SymmetricKey.SecondaryKey != before.Authentication.SymmetricKey.SecondaryKey {
		t.Fatal("writing the device back as read changed its keys")
	}

	// The read is stale now: 412, and nothing written.
	got.Enabled = true
	e.em.ResetStats()
	if _, err := e.hubs.PutDevice(ctx, got, got.ETag); !errors.Is(err, deprovision.ErrPreconditionFailed) {
		t.Fatalf("update of a stale read: %v, want ErrPreconditionFailed", err)
	}
	if now, _ := e.hubCs[hub].GetDevice(ctx, "dev-2", nil); now.Status != iothub.DeviceStatusDisabled || ops() != 2 {
		t.Fatalf("after a stale update: status %s, %d registry operations (want disabled, the write and this read)", now.Status, ops())
	}

	// Without the identity as read (built by hand, or "*"), an update reads first: two.
	for _, c := range []struct {
		name string
		d    *deprovision.Device
		etag string
	}{
		{"no identity", &deprovision.Device{Hub: hub, DeviceID: "dev-2", Enabled: true}, after.ETag},
		{"unconditional", dis, "*"},
	} {
		e.em.ResetStats()
		_, err := e.hubs.PutDevice(ctx, c.d, c.etag)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if n := ops(); n != 2 {
			t.Fatalf("%s: %d registry operations, want 2 (read, write)", c.name, n)
		}
		after, _ = e.hubCs[hub].GetDevice(ctx, "dev-2", nil)
		if after.Authentication.SymmetricKey.PrimaryKey != before.Authentication.SymmetricKey.PrimaryKey {
			t.Fatalf("%s: the update changed the keys", c.name)
		}
	}

	e.em.ResetStats()
	if err := e.hubs.DeleteDevice(ctx, hub, "dev-2", "*"); err != nil || ops() != 1 {
		t.Fatalf("unconditional delete: %v, %d registry operations", err, ops())
	}
	if err := e.hubs.DeleteDevice(ctx, hub, "dev-2", "*"); !errors.Is(err, deprovision.ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
}

// An X.509 identity is disabled from the query alone (no read a device): its type and
// thumbprints, capabilities and scope survive.
func TestBulkDisableKeepsX509Identity(t *testing.T) {
	e := newEnv(t, emulator.Options{})
	ctx := context.Background()
	hub := e.info.Hubs[0].Host
	hc := e.hubCs[hub]
	thumb := "0123456789ABCDEF0123456789ABCDEF01234567"
	for _, d := range []iothub.Device{
		{DeviceID: "x-ca", Authentication: &iothub.AuthenticationMechanism{Type: iothub.AuthenticationTypeCertificateAuthority},
			Capabilities: &iothub.DeviceCapabilities{IoTEdge: true}},
		{DeviceID: "x-ss", Authentication: &iothub.AuthenticationMechanism{Type: iothub.AuthenticationTypeSelfSigned,
			X509Thumbprint: &iothub.X509Thumbprint{PrimaryThumbprint: thumb}}, DeviceScope: "ms-azure-iot-edge://gw-1"},
	} {
		if _, err := hc.CreateOrUpdateDevice(ctx, d, nil); err != nil {
			t.Fatal(err)
		}
	}
	found, err := e.hubs.Identities(ctx, hub, []string{"x-ca", "x-ss"})
	if err != nil || len(found) != 2 {
		t.Fatalf("%d %v", len(found), err)
	}
	var items []deprovision.BulkItem
	for _, d := range found {
		items = append(items, deprovision.BulkItem{DeviceID: d.DeviceID, StatusReason: "r", Device: d})
	}
	res, err := e.hubs.Bulk(ctx, hub, deprovision.BulkDisable, items)
	if err != nil || res[0].Err != nil || res[1].Err != nil {
		t.Fatalf("%v %v", err, res)
	}
	ca, _ := hc.GetDevice(ctx, "x-ca", nil)
	ss, _ := hc.GetDevice(ctx, "x-ss", nil)
	if ca.Status != iothub.DeviceStatusDisabled || ca.Authentication.Type != iothub.AuthenticationTypeCertificateAuthority || ca.Capabilities == nil || !ca.Capabilities.IoTEdge {
		t.Fatalf("certificateAuthority identity after disable: %+v", ca.Device)
	}
	if ss.Status != iothub.DeviceStatusDisabled || ss.Authentication.Type != iothub.AuthenticationTypeSelfSigned ||
		ss.Authentication.X509Thumbprint == nil || ss.Authentication.X509Thumbprint.PrimaryThumbprint != thumb || ss.DeviceScope != "ms-azure-iot-edge://gw-1" {
		t.Fatalf("selfSigned identity after disable: %+v", ss.Device)
	}
}
