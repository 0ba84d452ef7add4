package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"

	"dpsdeprov/azure/dps"
	"dpsdeprov/azure/iothub"
	"dpsdeprov/deprovision"
	"dpsdeprov/emulator"
	"dpsdeprov/internal/dpsdevice"
	"dpsdeprov/internal/tpmdevice"
)

// device is one showcase device of the demo fleet.
type device struct {
	RegistrationID string
	// Kind says how it enrolls, e.g. "individual, TPM" or "group member, X.509".
	Kind string
	// Group is the enrollment group of a group member.
	Group string
	// Hub and DeviceID are where DPS assigned it.
	Hub, DeviceID string
	// Credentials: a derived or individual symmetric key, an X.509 leaf with its chain, or a
	// TPM (on the reference TPM simulator, in this process).
	key   string
	cert  *emulator.TestCert
	chain []*emulator.TestCert
	tpm   *tpmdevice.Device
}

// fleet is the demo's population and the clients that act on it.
type fleet struct {
	emu     emulator.Info
	caPEM   []byte
	dps     *dps.Client
	hubs    map[string]*iothub.Client // by host name
	devices map[string]*device
	order   []string
	bulk    emulator.SeededGroup
	bulkCA  *emulator.TestCert
}

// emulatorClient sends every connection to the emulator's port whatever the URL's host, trusts
// its CA, and presents cert when given (an X.509 device).
func emulatorClient(emu emulator.Info, caPEM []byte, cert *tls.Certificate) *http.Client {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	d := &net.Dialer{Timeout: 10 * time.Second}
	return &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, emu.Addr)
		},
		TLSClientConfig: cfg, MaxIdleConnsPerHost: 16,
	}}
}

func newFleet(emu emulator.Info) (*fleet, error) {
	caPEM, err := os.ReadFile(emu.CAFile)
	if err != nil {
		return nil, fmt.Errorf("reading the emulator's CA: %w", err)
	}
	f := &fleet{emu: emu, caPEM: caPEM, hubs: map[string]*iothub.Client{}, devices: map[string]*device{}}
	opts := azcore.ClientOptions{Transport: emulatorClient(emu, caPEM, nil)}
	if f.dps, err = dps.NewClientFromConnectionString(emu.DPS.ConnectionString, &dps.ClientOptions{ClientOptions: opts}); err != nil {
		return nil, err
	}
	for _, h := range emu.Hubs {
		c, err := iothub.NewClientFromConnectionString(h.ConnectionString, &iothub.ClientOptions{ClientOptions: opts})
		if err != nil {
			return nil, err
		}
		f.hubs[strings.ToLower(h.Host)] = c
	}
	return f, nil
}

// register provisions a device through the emulator's device registration API, as a device
// would (internal/dpsdevice): a SAS token, a TLS client certificate, or its TPM through DPS's
// TPM challenge. A refusal is a *dpsdevice.Refused: HTTP 401, or an operation that ended
// "disabled" because the device attested against a disabled entry.
func (f *fleet) register(ctx context.Context, d *device) error {
	var cert *tls.Certificate
	if d.cert != nil {
		tc := d.cert.TLSCertificate(d.chain...)
		cert = &tc
	}
	hc := emulatorClient(f.emu, f.caPEM, cert)
	defer hc.CloseIdleConnections()
	c := &dpsdevice.Client{HTTP: hc, Host: f.emu.DPS.DeviceHost, IDScope: f.emu.DPS.IDScope}
	var res *dpsdevice.Result
	var err error
	switch {
	case d.tpm != nil:
		res, err = c.RegisterTPM(ctx, d.RegistrationID, d.tpm)
	case d.cert != nil:
		res, err = c.RegisterX509(ctx, d.RegistrationID)
	default:
		res, err = c.RegisterSymmetricKey(ctx, d.RegistrationID, d.key)
	}
	if err != nil {
		return err
	}
	d.Hub, d.DeviceID = strings.ToLower(res.AssignedHub), res.DeviceID
	return nil
}

func (f *fleet) add(d *device) {
	f.devices[d.RegistrationID] = d
	f.order = append(f.order, d.RegistrationID)
}

// seed creates the demo fleet: individual enrollments (TPM, X.509, symmetric key), an X.509
// group and a symmetric-key group whose members provision through the device API across both
// hubs, and a bulk X.509 group of n members seeded in one step.
func (f *fleet) seed(ctx context.Context, n int, say func(string, ...any)) error {
	hubHosts := make([]string, 0, len(f.emu.Hubs))
	for _, h := range f.emu.Hubs {
		hubHosts = append(hubHosts, h.Host)
	}
	// Symmetric-key group: members' keys are derived from the group key.
	groupKey := deprovision.NewSymmetricKey()
	if _, err := f.dps.CreateOrUpdateEnrollmentGroup(ctx, dps.EnrollmentGroup{
		EnrollmentGroupID: "field-sensors",
		Attestation:       &dps.AttestationMechanism{Type: dps.AttestationTypeSymmetricKey, SymmetricKey: &dps.SymmetricKeyAttestation{PrimaryKey: groupKey, SecondaryKey: deprovision.NewSymmetricKey()}},
		AllocationPolicy:  dps.AllocationPolicyHashed, IoTHubs: hubHosts, ProvisioningStatus: dps.ProvisioningStatusEnabled,
	}, nil); err != nil {
		return fmt.Errorf("creating group field-sensors: %w", err)
	}
	for i := 1; i <= 6; i++ {
		rid := fmt.Sprintf("field-sensor-%02d", i)
		k, err := emulator.DeriveDeviceKey(groupKey, rid)
		if err != nil {
			return err
		}
		f.add(&device{RegistrationID: rid, Kind: "group member, symmetric key", Group: "field-sensors", key: k})
	}
	// X.509 group: members present leaf certificates signed by the group's certificate.
	factoryCA, err := emulator.NewTestCA("Contoso Factory Cameras CA")
	if err != nil {
		return err
	}
	if _, err := f.dps.CreateOrUpdateEnrollmentGroup(ctx, dps.EnrollmentGroup{
		EnrollmentGroupID: "factory-cameras",
		Attestation: &dps.AttestationMechanism{Type: dps.AttestationTypeX509, X509: &dps.X509Attestation{
			SigningCertificates: &dps.X509Certificates{Primary: &dps.X509CertificateWithInfo{Certificate: string(factoryCA.CertPEM)}}}},
		AllocationPolicy: dps.AllocationPolicyHashed, IoTHubs: hubHosts, ProvisioningStatus: dps.ProvisioningStatusEnabled,
	}, nil); err != nil {
		return fmt.Errorf("creating group factory-cameras: %w", err)
	}
	for i := 1; i <= 6; i++ {
		rid := fmt.Sprintf("factory-cam-%02d", i)
		leaf, err := factoryCA.Issue(rid, false)
		if err != nil {
			return err
		}
		f.add(&device{RegistrationID: rid, Kind: "group member, X.509", Group: "factory-cameras", cert: leaf, chain: []*emulator.TestCert{factoryCA}})
	}
	// Individual enrollments.
	meterKey := deprovision.NewSymmetricKey()
	if _, err := f.dps.CreateOrUpdateEnrollment(ctx, dps.IndividualEnrollment{
		RegistrationID: "meter-07", DeviceID: "meter-07",
		Attestation:        &dps.AttestationMechanism{Type: dps.AttestationTypeSymmetricKey, SymmetricKey: &dps.SymmetricKeyAttestation{PrimaryKey: meterKey, SecondaryKey: deprovision.NewSymmetricKey()}},
		ProvisioningStatus: dps.ProvisioningStatusEnabled,
	}, nil); err != nil {
		return fmt.Errorf("creating enrollment meter-07: %w", err)
	}
	f.add(&device{RegistrationID: "meter-07", Kind: "individual, symmetric key", key: meterKey})
	gwCA, err := emulator.NewTestCA("Contoso Gateways CA")
	if err != nil {
		return err
	}
	gw, err := gwCA.Issue("gateway-03", false)
	if err != nil {
		return err
	}
	if _, err := f.dps.CreateOrUpdateEnrollment(ctx, dps.IndividualEnrollment{
		RegistrationID: "gateway-03", DeviceID: "gateway-03",
		Attestation: &dps.AttestationMechanism{Type: dps.AttestationTypeX509, X509: &dps.X509Attestation{
			ClientCertificates: &dps.X509Certificates{Primary: &dps.X509CertificateWithInfo{Certificate: string(gw.CertPEM)}}}},
		ProvisioningStatus: dps.ProvisioningStatusEnabled,
	}, nil); err != nil {
		return fmt.Errorf("creating enrollment gateway-03: %w", err)
	}
	f.add(&device{RegistrationID: "gateway-03", Kind: "individual, X.509", cert: gw, chain: []*emulator.TestCert{gwCA}})
	// TPM: the kiosk's TPM is the reference TPM simulator; it attests through DPS's TPM
	// challenge like the others through theirs.
	kiosk, err := tpmdevice.New("kiosk-01")
	if err != nil {
		return fmt.Errorf("the TPM of kiosk-01: %w", err)
	}
	if _, err := f.dps.CreateOrUpdateEnrollment(ctx, dps.IndividualEnrollment{
		RegistrationID: "kiosk-01", DeviceID: "kiosk-01",
		Attestation:      &dps.AttestationMechanism{Type: dps.AttestationTypeTPM, TPM: &dps.TPMAttestation{EndorsementKey: base64.StdEncoding.EncodeToString(kiosk.EndorsementKey())}},
		AllocationPolicy: dps.AllocationPolicyStatic, IoTHubs: hubHosts[:1],
		ProvisioningStatus: dps.ProvisioningStatusEnabled,
	}, nil); err != nil {
		return fmt.Errorf("creating enrollment kiosk-01: %w", err)
	}
	f.add(&device{RegistrationID: "kiosk-01", Kind: "individual, TPM", tpm: kiosk})
	for _, rid := range f.order {
		if err := f.register(ctx, f.devices[rid]); err != nil {
			return fmt.Errorf("provisioning %s: %w", rid, err)
		}
	}
	say("provisioned %d showcase devices through the DPS device API", len(f.order))

	// The bulk group, seeded in one step (as if its members had provisioned).
	res, err := f.seedBulk(ctx, n)
	if err != nil {
		return err
	}
	f.bulk = res
	say("seeded enrollment group %s with %d members across %d hubs", res.ID, res.Registrations, len(hubHosts))
	return nil
}

// seedBulk seeds an X.509 group of n members through the emulator's admin endpoint.
func (f *fleet) seedBulk(ctx context.Context, n int) (emulator.SeededGroup, error) {
	body, _ := json.Marshal(emulator.SeedSpec{Prefix: "plant", Groups: 1, Registrations: n, Attestation: "x509"})
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+f.emu.DPS.Host+"/_emulator/seed", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := emulatorClient(f.emu, f.caPEM, nil).Do(req)
	if err != nil {
		return emulator.SeededGroup{}, fmt.Errorf("seeding the bulk group: %w", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return emulator.SeededGroup{}, fmt.Errorf("seeding the bulk group: %d %s", resp.StatusCode, b)
	}
	var res emulator.SeedResult
	if err := json.Unmarshal(b, &res); err != nil || len(res.Groups) != 1 {
		return emulator.SeededGroup{}, fmt.Errorf("seeding the bulk group: unexpected answer %s", b)
	}
	g := res.Groups[0]
	ca, err := parseTestCert(g.SigningCert, g.SigningKey)
	if err != nil {
		return emulator.SeededGroup{}, fmt.Errorf("bulk group signing certificate: %w", err)
	}
	f.bulkCA = ca
	return g, nil
}

// parseTestCert reads a certificate and its private key from PEM.
func parseTestCert(certPEM, keyPEM string) (*emulator.TestCert, error) {
	tc, err := tls.X509KeyPair([]byte(certPEM), []byte(keyPEM))
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(tc.Certificate[0])
	if err != nil {
		return nil, err
	}
	s, ok := tc.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("key type %T cannot sign", tc.PrivateKey)
	}
	return &emulator.TestCert{Cert: leaf, Key: s, CertPEM: []byte(certPEM), KeyPEM: []byte(keyPEM)}, nil
}
