package scenario_test

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"dpsdeprov/azure/adapter"
	"dpsdeprov/azure/dps"
	"dpsdeprov/azure/iothub"
	"dpsdeprov/azure/journal"
	"dpsdeprov/deprovision"
	"dpsdeprov/deprovision/fake"
	"dpsdeprov/emulator"
	"dpsdeprov/internal/dpsdevice"
	"dpsdeprov/internal/testenv"
	"dpsdeprov/internal/tpmdevice"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"
)

func TestMain(m *testing.M) { testenv.Main(m) }

const (
	hub1 = "hub1.azure-devices.net"
	hub2 = "hub2.azure-devices.net"
)

// env is one emulator (DPS + hub1 + hub2), clients on it, and a journal on Azurite.
type env struct {
	t     *testing.T
	em    *emulator.Emulator
	info  emulator.Info
	dps   *dps.Client
	hubs  map[string]*iothub.Client
	ports deprovision.Deps
	tbl   *aztables.ServiceClient
	jopts journal.Options
	clock *clock
	// work is the GroupWork queue on Azurite (groupwork_test.go), poison its poison queue.
	work, poison *azqueue.QueueClient
}

// clock is a settable clock, so that a dead delivery's lease runs out without waiting.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time          { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Advance(d time.Duration) { c.mu.Lock(); defer c.mu.Unlock(); c.t = c.t.Add(d) }

func newEnv(t *testing.T) *env {
	t.Helper()
	em := testenv.StartEmulator(t, emulator.Options{Hubs: []string{"hub1", "hub2"}})
	info := em.Info()
	tr := testenv.LoopbackTransport(t, em)
	// Spare connections the transport opened but never used would hold the emulator's
	// shutdown for its full grace period.
	t.Cleanup(tr.CloseIdleConnections)
	co := azcore.ClientOptions{Transport: tr, Retry: policy.RetryOptions{MaxRetries: 2, RetryDelay: 10 * time.Millisecond, MaxRetryDelay: time.Second}}
	dc, err := dps.NewClientFromConnectionString(info.DPS.ConnectionString, &dps.ClientOptions{ClientOptions: co})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, em: em, info: info, dps: dc, hubs: map[string]*iothub.Client{}, clock: &clock{t: time.Now().UTC()}}
	for _, h := range info.Hubs {
		c, err := iothub.NewClientFromConnectionString(h.ConnectionString, &iothub.ClientOptions{ClientOptions: co})
		if err != nil {
			t.Fatal(err)
		}
		e.hubs[h.Host] = c
	}
	a := testenv.SharedAzurite(t)
	e.tbl, err = aztables.NewServiceClientFromConnectionString(a.ConnectionString(), nil)
	if err != nil {
		t.Fatal(err)
	}
	e.jopts = journal.Options{TablePrefix: testenv.UniqueName("s")}
	j, err := journal.New(context.Background(), e.tbl, e.jopts)
	if err != nil {
		t.Fatal(err)
	}
	da := adapter.NewDPS(dc)
	e.ports = deprovision.Deps{Enrollments: da, Registrations: da, Devices: adapter.NewHubDevices(e.hubs), Journal: j,
		Clock: e.clock, Logger: slog.New(slog.DiscardHandler)}
	e.openGroupWork()
	return e
}

// engine returns an engine on the environment's ports (wrap may change them).
// reopenJournal replaces the journal with a new instance on the same tables, as a restarted
// process would have.
func (e *env) reopenJournal() {
	e.t.Helper()
	j, err := journal.New(context.Background(), e.tbl, e.jopts)
	if err != nil {
		e.t.Fatal(err)
	}
	e.ports.Journal = j
}

// writes counts the successful writes DPS and the hubs served (enrollments, groups,
// registration records, devices, bulk calls).
func (e *env) writes() int64 {
	var n int64
	for op, s := range e.em.Stats().Operations {
		if !strings.HasSuffix(op, ".put") && !strings.HasSuffix(op, ".delete") && !strings.HasSuffix(op, ".bulk") {
			continue
		}
		for st, c := range s.Statuses {
			if strings.HasPrefix(st, "2") {
				n += c
			}
		}
	}
	return n
}

func (e *env) engine(wrap func(deprovision.Deps) deprovision.Deps) *deprovision.Engine {
	d := e.ports
	if wrap != nil {
		d = wrap(d)
	}
	return deprovision.NewEngine(d, deprovision.Config{LeaseDuration: time.Minute, GroupPageSize: 2})
}

// submit delivers r to an engine as the DeviceEvents function does; a group-wide operation
// then runs through the GroupWork queue and function (groupWork), and submit returns the
// operation as the journal holds it at the end.
func (e *env) submit(r deprovision.Request) *deprovision.Operation {
	e.t.Helper()
	return e.submitTo(e.engine(nil), r)
}

// submitTo is submit with eng taking the delivery and the GroupWork messages.
func (e *env) submitTo(eng *deprovision.Engine, r deprovision.Request) *deprovision.Operation {
	e.t.Helper()
	op, err := eng.Submit(context.Background(), r)
	if err != nil {
		e.t.Fatalf("Submit %s %s: %v", r.Intent, r.EventID, err)
	}
	if op.Progress.FannedOut {
		e.groupWork(eng)
		if op, err = e.ports.Journal.GetOperation(context.Background(), op.ID); err != nil {
			e.t.Fatal(err)
		}
	}
	return op
}

// --- DPS setup through the service API, as an operator would have done it ---

func randomKey() string {
	b := make([]byte, 32)
	for i := range b {
		b[i] = byte(i*7 + 3)
	}
	return base64.StdEncoding.EncodeToString(b)
}

func (e *env) individualSK(rid, key string) {
	e.t.Helper()
	_, err := e.dps.CreateOrUpdateEnrollment(context.Background(), dps.IndividualEnrollment{RegistrationID: rid,
		Attestation:        &dps.AttestationMechanism{Type: dps.AttestationTypeSymmetricKey, SymmetricKey: &dps.SymmetricKeyAttestation{PrimaryKey: key, SecondaryKey: key}},
		ProvisioningStatus: dps.ProvisioningStatusEnabled}, nil)
	if err != nil {
		e.t.Fatalf("creating enrollment %s: %v", rid, err)
	}
}

// individualTPM enrolls rid with the endorsement key of a TPM of its own (on the simulator),
// assigned to hub1, and returns the TPM.
func (e *env) individualTPM(rid string) *tpmdevice.Device {
	e.t.Helper()
	tpm, err := tpmdevice.New(rid)
	if err != nil {
		e.t.Fatalf("the TPM of %s: %v", rid, err)
	}
	ek := base64.StdEncoding.EncodeToString(tpm.EndorsementKey())
	_, err = e.dps.CreateOrUpdateEnrollment(context.Background(), dps.IndividualEnrollment{RegistrationID: rid,
		Attestation:        &dps.AttestationMechanism{Type: dps.AttestationTypeTPM, TPM: &dps.TPMAttestation{EndorsementKey: ek}},
		ProvisioningStatus: dps.ProvisioningStatusEnabled, IoTHubs: []string{hub1}, AllocationPolicy: dps.AllocationPolicyStatic}, nil)
	if err != nil {
		e.t.Fatalf("creating TPM enrollment %s: %v", rid, err)
	}
	return tpm
}

func (e *env) individualX509(rid string, c *fake.Cert) {
	e.t.Helper()
	_, err := e.dps.CreateOrUpdateEnrollment(context.Background(), dps.IndividualEnrollment{RegistrationID: rid,
		Attestation: &dps.AttestationMechanism{Type: dps.AttestationTypeX509, X509: &dps.X509Attestation{
			ClientCertificates: &dps.X509Certificates{Primary: &dps.X509CertificateWithInfo{Certificate: c.PEM}}}},
		ProvisioningStatus: dps.ProvisioningStatusEnabled}, nil)
	if err != nil {
		e.t.Fatalf("creating X.509 enrollment %s: %v", rid, err)
	}
}

func (e *env) groupX509(id string, ca *fake.Cert) {
	e.t.Helper()
	_, err := e.dps.CreateOrUpdateEnrollmentGroup(context.Background(), dps.EnrollmentGroup{EnrollmentGroupID: id,
		Attestation: &dps.AttestationMechanism{Type: dps.AttestationTypeX509, X509: &dps.X509Attestation{
			SigningCertificates: &dps.X509Certificates{Primary: &dps.X509CertificateWithInfo{Certificate: ca.PEM}}}},
		ProvisioningStatus: dps.ProvisioningStatusEnabled}, nil)
	if err != nil {
		e.t.Fatalf("creating X.509 group %s: %v", id, err)
	}
}

func (e *env) groupSK(id, key string) {
	e.t.Helper()
	_, err := e.dps.CreateOrUpdateEnrollmentGroup(context.Background(), dps.EnrollmentGroup{EnrollmentGroupID: id,
		Attestation:        &dps.AttestationMechanism{Type: dps.AttestationTypeSymmetricKey, SymmetricKey: &dps.SymmetricKeyAttestation{PrimaryKey: key, SecondaryKey: key}},
		ProvisioningStatus: dps.ProvisioningStatusEnabled}, nil)
	if err != nil {
		e.t.Fatalf("creating symmetric-key group %s: %v", id, err)
	}
}

// hubDevice creates a hub identity directly, as if the device had registered.
func (e *env) hubDevice(hub, id string) {
	e.t.Helper()
	if _, err := e.hubs[hub].CreateOrUpdateDevice(context.Background(), iothub.Device{DeviceID: id, Status: iothub.DeviceStatusEnabled}, nil); err != nil {
		e.t.Fatalf("creating device %s in %s: %v", id, hub, err)
	}
}

// --- a device, registering through the DPS device API ---

// credential is what a device presents: a symmetric key, an X.509 certificate chain, or a TPM.
type credential struct {
	key  string
	cert *tls.Certificate
	tpm  *tpmdevice.Device
}

func skCred(key string) credential { return credential{key: key} }

func x509Cred(c *fake.Cert, chain ...*fake.Cert) credential {
	tc := tls.Certificate{Certificate: [][]byte{c.Cert.Raw}, PrivateKey: c.Key}
	for _, p := range chain {
		tc.Certificate = append(tc.Certificate, p.Cert.Raw)
	}
	return credential{cert: &tc}
}

func tpmCred(d *tpmdevice.Device) credential { return credential{tpm: d} }

// provision registers rid the way a device does (internal/dpsdevice) and returns its assigned
// hub, or the error saying why DPS refused it (a *dpsdevice.Refused) or why it could not ask.
func (e *env) provision(rid string, cred credential) (string, error) {
	hc := testenv.EmulatorHTTPClientWithCert(e.em, cred.cert)
	defer hc.CloseIdleConnections() // a device's connection must not hold the emulator's shutdown
	c := &dpsdevice.Client{HTTP: hc, IDScope: e.info.DPS.IDScope}
	ctx := context.Background()
	var res *dpsdevice.Result
	var err error
	switch {
	case cred.tpm != nil:
		res, err = c.RegisterTPM(ctx, rid, cred.tpm)
	case cred.key != "":
		res, err = c.RegisterSymmetricKey(ctx, rid, cred.key)
	default:
		res, err = c.RegisterX509(ctx, rid)
	}
	if err != nil {
		return "", err
	}
	return res.AssignedHub, nil
}

func (e *env) mustProvision(rid string, cred credential) string {
	e.t.Helper()
	hub, err := e.provision(rid, cred)
	if err != nil {
		e.t.Fatalf("device %s cannot provision: %v", rid, err)
	}
	return hub
}

// mustNotProvision checks that DPS refuses the device. An error that is not a refusal (the
// emulator unreachable, a malformed answer) fails the test: it says nothing about revocation.
func (e *env) mustNotProvision(rid string, cred credential) *dpsdevice.Refused {
	e.t.Helper()
	hub, err := e.provision(rid, cred)
	if err == nil {
		e.t.Fatalf("device %s provisioned (to %s) after it was revoked", rid, hub)
	}
	rf, ok := dpsdevice.AsRefused(err)
	if !ok {
		e.t.Fatalf("device %s: no answer from DPS to judge by: %v", rid, err)
	}
	return rf
}

// mustBeRefused checks that DPS refuses the device in the given way: "disabled" (it attests
// against a disabled entry), "http 401" (against none), or "refused" (either).
func (e *env) mustBeRefused(rid string, cred credential, kind string) {
	e.t.Helper()
	if rf := e.mustNotProvision(rid, cred); kind != "refused" && rf.Kind() != kind {
		e.t.Fatalf("device %s refused with %q (%v), want %q", rid, rf.Kind(), rf, kind)
	}
}

// --- observations ---

func (e *env) enrollment(rid string) *dps.IndividualEnrollment {
	r, err := e.dps.GetEnrollment(context.Background(), rid, nil)
	if err != nil {
		if dps.IsNotFound(err) {
			return nil
		}
		e.t.Fatal(err)
	}
	return &r.IndividualEnrollment
}

func (e *env) group(id string) *dps.EnrollmentGroup {
	r, err := e.dps.GetEnrollmentGroup(context.Background(), id, nil)
	if err != nil {
		if dps.IsNotFound(err) {
			return nil
		}
		e.t.Fatal(err)
	}
	return &r.EnrollmentGroup
}

func (e *env) hasRegistration(rid string) bool {
	_, err := e.dps.GetRegistrationState(context.Background(), rid, nil)
	if err != nil && !dps.IsNotFound(err) {
		e.t.Fatal(err)
	}
	return err == nil
}

// device returns the hub identity, nil when missing.
func (e *env) device(hub, id string) *iothub.Device {
	r, err := e.hubs[hub].GetDevice(context.Background(), id, nil)
	if err != nil {
		if iothub.IsNotFound(err) {
			return nil
		}
		e.t.Fatal(err)
	}
	return &r.Device
}
