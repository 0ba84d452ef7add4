package fleet_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"dpsdeprov/azure/adapter"
	"dpsdeprov/azure/dps"
	"dpsdeprov/azure/iothub"
	"dpsdeprov/deprovision"
	"dpsdeprov/deprovision/fake"
	"dpsdeprov/emulator"
	"dpsdeprov/internal/dpsdevice"
	"dpsdeprov/internal/tpmdevice"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
)

// world is one in-process emulator (DPS and three hubs) with the real clients and adapters
// on it; a worker runs its cases one after the other, resetting the emulator between them.
type world struct {
	// certs caches certificates by their path in a hierarchy ("ca-00/ca-01/dev-03"): a case's
	// structure decides its certificates, and key generation and signing would otherwise be
	// a fifth of a case's time. The emulator is reset between cases, so nothing else carries.
	certs map[string]*fake.Cert
	em    *emulator.Emulator
	dps   *dps.Client
	hubs  map[string]*iothub.Client
	en    *adapter.DPS
	dv    *adapter.HubDevices
	scope string
}

func newWorld(tb testing.TB) *world {
	tb.Helper()
	var names []string
	for _, h := range hubs {
		names = append(names, strings.TrimSuffix(h, ".azure-devices.net"))
	}
	em, err := emulator.Start(context.Background(), emulator.Options{Hubs: names})
	if err != nil {
		tb.Fatalf("starting the emulator: %v", err)
	}
	tb.Cleanup(func() { _ = em.Close() })
	info := em.Info()
	// The clients go straight to the emulator's handler, and fail at once: a generated
	// case makes no transient fault, so a retry would only hide one.
	co := azcore.ClientOptions{Transport: em.InProcessClient(), Retry: policy.RetryOptions{MaxRetries: -1}}
	dc, err := dps.NewClientFromConnectionString(info.DPS.ConnectionString, &dps.ClientOptions{ClientOptions: co})
	if err != nil {
		tb.Fatal(err)
	}
	w := &world{certs: map[string]*fake.Cert{}, em: em, dps: dc, hubs: map[string]*iothub.Client{}, en: adapter.NewDPS(dc), scope: info.DPS.IDScope}
	for _, h := range info.Hubs {
		c, err := iothub.NewClientFromConnectionString(h.ConnectionString, &iothub.ClientOptions{ClientOptions: co})
		if err != nil {
			tb.Fatal(err)
		}
		w.hubs[h.Host] = c
	}
	w.dv = adapter.NewHubDevices(w.hubs)
	return w
}

// fleet is a case set up in the emulator: its certificates and keys, and what a device holds.
type fleet struct {
	w      *world
	c      *Case
	cas    []*fake.Cert
	leaves map[int]*fake.Cert // X.509 devices
	keys   map[int]deprovision.SymmetricKeys
	gkeys  map[int]deprovision.SymmetricKeys // symmetric-key groups
	hubOf  map[int]string                    // where each provisioned device is
	tpm    map[int]*tpmdevice.Device         // TPM devices that attest for real (tpm_test.go)
}

// credential is one thing a device can present to DPS.
type credential struct {
	what  string
	key   string              // SAS, signed with this key
	chain []*x509.Certificate // X.509, leaf first
	tpm   dpsdevice.TPM       // TPM attestation (tpm.go)
	stand bool                // a TPM device checked by the stand-in of tpm.go
}

// credentials are every credential device i holds: its chain, its own keys or both keys
// derived from its group's (either derives a working SAS token), its TPM.
func (f *fleet) credentials(i int) []credential {
	dv := f.c.Devices[i]
	switch dv.Kind {
	case kX509Member, kX509:
		return []credential{{what: "its certificate chain", chain: f.chain(f.leaves[i])}}
	case kTPM:
		return []credential{f.tpmCredential(i)}
	}
	k := f.keys[i]
	return []credential{{what: "its primary key", key: k.Primary}, {what: "its secondary key", key: k.Secondary}}
}

// path names certificate cn issued under CA i by its place in the hierarchy.
func (c *Case) path(i int, cn string) string {
	p := cn
	for ; i >= 0; i = c.CAs[i].Parent {
		p = c.caName(i) + "/" + p
	}
	return p
}

// issue returns certificate cn: a CA (ca) or a leaf issued by CA i (a root when cn is CA i
// itself), from the world's cache.
func (f *fleet) issue(i int, cn string, ca bool) *fake.Cert {
	parent := i
	if ca {
		parent = f.c.CAs[i].Parent
	}
	key := f.c.path(parent, cn)
	if cert := f.w.certs[key]; cert != nil {
		return cert
	}
	var cert *fake.Cert
	switch {
	case parent < 0:
		cert = fake.NewCA(cn)
	default:
		cert = f.issue(parent, f.c.caName(parent), true).Issue(cn, ca)
	}
	f.w.certs[key] = cert
	return cert
}

// forge returns a certificate for cn signed by CA i that is not the device's own: what
// anyone holding the CA's key can make.
func (f *fleet) forge(i int, cn string) *fake.Cert {
	key := "forged/" + f.c.path(i, cn)
	if cert := f.w.certs[key]; cert != nil {
		return cert
	}
	cert := f.issue(i, f.c.caName(i), true).Issue(cn, false)
	f.w.certs[key] = cert
	return cert
}

// chain is a leaf with every CA certificate above it.
func (f *fleet) chain(leaf *fake.Cert) []*x509.Certificate {
	out := []*x509.Certificate{leaf.Cert}
	for c := leaf.Cert; ; {
		var up *fake.Cert
		for _, ca := range f.cas {
			if bytes.Equal(ca.Cert.RawSubject, c.RawIssuer) && !bytes.Equal(ca.Cert.Raw, c.Raw) {
				up = ca
			}
		}
		if up == nil {
			return out
		}
		out = append(out, up.Cert)
		if bytes.Equal(up.Cert.RawIssuer, up.Cert.RawSubject) {
			return out
		}
		c = up.Cert
	}
}

func keyFrom(r *rand.Rand) string {
	b := make([]byte, 32)
	for i := range b {
		b[i] = byte(r.UintN(256))
	}
	return base64.StdEncoding.EncodeToString(b)
}

// setup builds case c in the emulator, reset first: groups and enrollments through the DPS
// service API, devices provisioned through the device registration API, twins and scopes
// through the hub registry, the operator's own moves and blocks, then disabled groups.
func (w *world) setup(ctx context.Context, c *Case) (*fleet, error) {
	w.em.Reset()
	r := rand.New(rand.NewPCG(c.Seed, 0x5eed))
	f := &fleet{c: c, leaves: map[int]*fake.Cert{}, keys: map[int]deprovision.SymmetricKeys{},
		gkeys: map[int]deprovision.SymmetricKeys{}, hubOf: map[int]string{}, tpm: map[int]*tpmdevice.Device{}}
	f.w = w
	for i := range c.CAs {
		f.cas = append(f.cas, f.issue(i, c.caName(i), true))
	}
	for i, g := range c.Groups {
		body := dps.EnrollmentGroup{EnrollmentGroupID: c.groupID(i), ProvisioningStatus: dps.ProvisioningStatusEnabled,
			Capabilities: &dps.DeviceCapabilities{IoTEdge: g.Edge}}
		switch g.Kind {
		case gInline:
			body.Attestation = &dps.AttestationMechanism{Type: dps.AttestationTypeX509, X509: &dps.X509Attestation{
				SigningCertificates: &dps.X509Certificates{Primary: &dps.X509CertificateWithInfo{Certificate: f.cas[g.CA].PEM}}}}
		case gRef:
			if _, err := w.em.PutCACertificate(emulator.CACertificate{Name: c.caName(g.CA), Certificate: f.cas[g.CA].PEM, IsVerified: true}); err != nil {
				return nil, err
			}
			body.Attestation = &dps.AttestationMechanism{Type: dps.AttestationTypeX509, X509: &dps.X509Attestation{
				CAReferences: &dps.X509CAReferences{Primary: c.caName(g.CA)}}}
		case gSK:
			k := deprovision.SymmetricKeys{Primary: keyFrom(r), Secondary: keyFrom(r)}
			f.gkeys[i] = k
			body.Attestation = &dps.AttestationMechanism{Type: dps.AttestationTypeSymmetricKey,
				SymmetricKey: &dps.SymmetricKeyAttestation{PrimaryKey: k.Primary, SecondaryKey: k.Secondary}}
		}
		if _, err := w.dps.CreateOrUpdateEnrollmentGroup(ctx, body, nil); err != nil {
			return nil, fmt.Errorf("creating %s: %w", c.groupID(i), err)
		}
	}
	for i, dv := range c.Devices {
		id := c.devID(i)
		switch dv.Kind {
		case kX509Member, kX509:
			f.leaves[i] = f.issue(dv.CA, id, false)
		case kSKMember:
			k, err := deprovision.DerivedKeys(f.gkeys[dv.Group], id)
			if err != nil {
				return nil, err
			}
			f.keys[i] = k
		case kSK:
			f.keys[i] = deprovision.SymmetricKeys{Primary: keyFrom(r), Secondary: keyFrom(r)}
		}
		var att *dps.AttestationMechanism
		switch dv.Kind {
		case kX509:
			att = x509Attestation(f.leaves[i])
		case kSK:
			att = skAttestation(f.keys[i])
		case kTPM:
			att = &dps.AttestationMechanism{Type: dps.AttestationTypeTPM, TPM: &dps.TPMAttestation{EndorsementKey: f.tpmEndorsementKey(i, keyFrom(r))}}
		default:
			continue
		}
		if err := w.enroll(ctx, id, att, hubs[dv.Hub], true); err != nil {
			return nil, err
		}
	}
	for i, dv := range c.Devices {
		if dv.Kind == kTPM && f.tpm[i] == nil {
			continue // the stand-in's devices never provision (tpm_test.go)
		}
		res, err := w.register(ctx, c.devID(i), f.credentials(i)[0])
		if err != nil {
			return nil, err
		}
		if res.status != "assigned" {
			return nil, fmt.Errorf("setting up: %s could not provision: %s", c.devID(i), res.status)
		}
		f.hubOf[i] = res.hub
	}
	for i, dv := range c.Devices {
		if err := w.decorate(ctx, c, f, i, dv); err != nil {
			return nil, err
		}
	}
	for i, g := range c.Groups {
		if g.Enabled {
			continue
		}
		cur, err := w.en.GetGroup(ctx, c.groupID(i))
		if err != nil {
			return nil, err
		}
		cur.Enabled = false
		if _, err := w.en.PutGroup(ctx, cur, cur.ETag); err != nil {
			return nil, fmt.Errorf("disabling %s: %w", c.groupID(i), err)
		}
	}
	return f, nil
}

// decorate gives device i what an operator's history gave it: twin tags, a device scope, a
// move made by hand (it then provisions into the other hub), a block made by hand.
func (w *world) decorate(ctx context.Context, c *Case, f *fleet, i int, dv devSpec) error {
	id, hub := c.devID(i), f.hubOf[i]
	if hub == "" {
		return nil
	}
	hc := w.hubs[hub]
	if dv.Tags {
		if _, err := hc.BulkUpdate(ctx, []iothub.ExportImportDevice{{ID: id, ImportMode: iothub.ImportModeUpdateTwin,
			Tags: map[string]any{"site": fmt.Sprintf("site-%d", i), "owner": "fleet"}}}, nil); err != nil {
			return fmt.Errorf("tagging %s: %w", id, err)
		}
	}
	if dv.Scope {
		cur, err := hc.GetDevice(ctx, id, nil)
		if err != nil {
			return err
		}
		body := cur.Device
		body.DeviceScope = "ms-azure-iot-edge://gateway-" + id
		body.ParentScopes = []string{body.DeviceScope}
		etag := azcore.ETag(cur.ETag)
		if _, err := hc.CreateOrUpdateDevice(ctx, body, &iothub.CreateOrUpdateDeviceOptions{IfMatch: &etag}); err != nil {
			return fmt.Errorf("scoping %s: %w", id, err)
		}
	}
	var att *dps.AttestationMechanism
	switch {
	case dv.Kind == kX509Member:
		att = x509Attestation(f.leaves[i])
	case dv.Kind == kSKMember:
		att = skAttestation(f.keys[i]) // a move keeps the keys the device holds
	}
	switch {
	case dv.Block != "":
		if dv.Block == "sk" {
			// "The keys don't matter for this scenario" (the recipe): random ones.
			r := rand.New(rand.NewPCG(c.Seed, uint64(i)))
			att = skAttestation(deprovision.SymmetricKeys{Primary: keyFrom(r), Secondary: keyFrom(r)})
		}
		return w.enroll(ctx, id, att, "", false)
	case dv.Moved >= 0:
		target := hubs[dv.Moved]
		if target == hub {
			target = hubs[(dv.Moved+1)%len(hubs)]
		}
		if err := w.enroll(ctx, id, att, target, true); err != nil {
			return err
		}
		res, err := w.register(ctx, id, f.credentials(i)[0])
		if err != nil {
			return err
		}
		if res.status != "assigned" || res.hub != target {
			return fmt.Errorf("setting up: %s moved by hand landed in %q (%s), want %s", id, res.hub, res.status, target)
		}
		f.hubOf[i] = res.hub
	}
	return nil
}

func x509Attestation(leaf *fake.Cert) *dps.AttestationMechanism {
	return &dps.AttestationMechanism{Type: dps.AttestationTypeX509, X509: &dps.X509Attestation{
		ClientCertificates: &dps.X509Certificates{Primary: &dps.X509CertificateWithInfo{Certificate: leaf.PEM}}}}
}

func skAttestation(k deprovision.SymmetricKeys) *dps.AttestationMechanism {
	return &dps.AttestationMechanism{Type: dps.AttestationTypeSymmetricKey,
		SymmetricKey: &dps.SymmetricKeyAttestation{PrimaryKey: k.Primary, SecondaryKey: k.Secondary}}
}

// enroll creates an individual enrollment: enabled and statically on hub, or disabled.
func (w *world) enroll(ctx context.Context, id string, att *dps.AttestationMechanism, hub string, enabled bool) error {
	body := dps.IndividualEnrollment{RegistrationID: id, Attestation: att, ProvisioningStatus: dps.ProvisioningStatusDisabled}
	if enabled {
		body.ProvisioningStatus = dps.ProvisioningStatusEnabled
	}
	if hub != "" {
		body.IoTHubs, body.AllocationPolicy = []string{hub}, dps.AllocationPolicyStatic
		body.ReprovisionPolicy = &dps.ReprovisionPolicy{UpdateHubAssignment: true, MigrateDeviceData: true}
	}
	if _, err := w.dps.CreateOrUpdateEnrollment(ctx, body, nil); err != nil {
		return fmt.Errorf("enrolling %s: %w", id, err)
	}
	return nil
}

// registration is the device API's final answer to a registration attempt.
type registration struct {
	status string // "assigned", or what refused it: "disabled", "failed", "http 401", …
	hub    string
}

// register runs the device registration flow as a device does (internal/dpsdevice), with
// one credential, and returns DPS's final answer.
func (w *world) register(ctx context.Context, rid string, cr credential) (registration, error) {
	dc := &dpsdevice.Client{HTTP: w.em.InProcessClient(cr.chain...), IDScope: w.scope}
	var res *dpsdevice.Result
	var err error
	switch {
	case cr.stand:
		return w.tpmStandIn(ctx, rid)
	case cr.tpm != nil:
		res, err = dc.RegisterTPM(ctx, rid, cr.tpm)
	case cr.key != "":
		res, err = dc.RegisterSymmetricKey(ctx, rid, cr.key)
	default:
		res, err = dc.RegisterX509(ctx, rid)
	}
	if r, ok := dpsdevice.AsRefused(err); ok {
		return registration{status: r.Kind()}, nil
	}
	if err != nil {
		return registration{}, fmt.Errorf("registering %s with %s: %w", rid, cr.what, err)
	}
	return registration{status: "assigned", hub: res.AssignedHub}, nil
}

// identity is what the registry shows of a device, secrets included: what a disable keeps.
type identity struct {
	Status, Reason       string
	Auth                 string
	Keys                 [2]string
	Thumbs               [2]string
	Edge                 bool
	Scope, Parents, Tags string
}

func (a identity) diff(b identity) string {
	var out []string
	if a.Auth != b.Auth {
		out = append(out, fmt.Sprintf("authentication %s → %s", a.Auth, b.Auth))
	}
	if a.Keys != b.Keys {
		out = append(out, "symmetric keys changed")
	}
	if a.Thumbs != b.Thumbs {
		out = append(out, fmt.Sprintf("thumbprints %v → %v", a.Thumbs, b.Thumbs))
	}
	if a.Edge != b.Edge {
		out = append(out, fmt.Sprintf("iotEdge %v → %v", a.Edge, b.Edge))
	}
	if a.Scope != b.Scope || a.Parents != b.Parents {
		out = append(out, fmt.Sprintf("scopes %q %s → %q %s", a.Scope, a.Parents, b.Scope, b.Parents))
	}
	if a.Tags != b.Tags {
		out = append(out, fmt.Sprintf("tags %s → %s", a.Tags, b.Tags))
	}
	return strings.Join(out, "; ")
}

// registry reads every identity of every hub: the query for twins (tags, scopes), and each
// identity for its keys.
func (w *world) registry(ctx context.Context) (map[string]identity, error) {
	out := map[string]identity{}
	for host, hc := range w.hubs {
		p := hc.NewQueryDevicesPager("SELECT * FROM devices", &iothub.QueryDevicesOptions{PageSize: 100})
		for p.More() {
			page, err := p.NextPage(ctx)
			if err != nil {
				return nil, err
			}
			for _, t := range page.Twins {
				id := identity{Status: string(t.Status), Reason: t.StatusReason, Auth: string(t.AuthenticationType),
					Scope: t.DeviceScope, Parents: strings.Join(t.ParentScopes, ","), Tags: canonical(t.Tags)}
				if x := t.X509Thumbprint; x != nil {
					id.Thumbs = [2]string{x.PrimaryThumbprint, x.SecondaryThumbprint}
				}
				if t.Capabilities != nil {
					id.Edge = t.Capabilities.IoTEdge
				}
				if t.AuthenticationType == iothub.AuthenticationTypeSAS {
					// The twin shows no keys: read the identity for them.
					d, err := hc.GetDevice(ctx, t.DeviceID, nil)
					if err != nil {
						return nil, err
					}
					if a := d.Authentication; a != nil && a.SymmetricKey != nil {
						id.Keys = [2]string{a.SymmetricKey.PrimaryKey, a.SymmetricKey.SecondaryKey}
					}
				}
				out[host+"/"+t.DeviceID] = id
			}
		}
	}
	return out, nil
}

func canonical(m map[string]any) string {
	if len(m) == 0 {
		return "{}"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%v;", k, m[k])
	}
	return b.String()
}

// clock is the engine's clock: a moment after every event of a case, moving a second a read.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Second)
	return c.t
}

// engine is the app's engine over the emulator; its group-wide work goes to q, which the
// caller delivers as the GroupWork function would (fake.Queue.DeliverAll).
func (w *world) engine(j deprovision.Journal, clk deprovision.Clock, q *fake.Queue) *deprovision.Engine {
	return deprovision.NewEngine(deprovision.Deps{Enrollments: w.en, Registrations: w.en, Devices: w.dv, Journal: j,
		Work: q, Clock: clk, Logger: slog.New(slog.DiscardHandler)}, deprovision.Config{LeaseDuration: time.Minute, Hubs: hubs})
}

func isNotFound(err error) bool { return errors.Is(err, deprovision.ErrNotFound) }
