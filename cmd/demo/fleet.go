package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
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
	"dpsdeprov/emulator"
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
	// Credentials: a derived or individual symmetric key, or an X.509 leaf with its chain.
	key   string
	cert  *emulator.TestCert
	chain []*emulator.TestCert
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

func randomKey() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

// registrationRefused is a registration DPS refused, with its status.
type registrationRefused struct {
	Status  int
	Message string
}

func (e *registrationRefused) Error() string {
	return fmt.Sprintf("DPS refused the registration (%d): %s", e.Status, e.Message)
}

// register provisions a device through the emulator's device registration API, as a device
// would: PUT …/registrations/{id}/register with a SAS token or a TLS client certificate, then
// poll the operation until DPS has assigned it.
func (f *fleet) register(ctx context.Context, d *device) error {
	var client *http.Client
	var auth string
	if d.cert != nil {
		tc := d.cert.TLSCertificate(d.chain...)
		client = emulatorClient(f.emu, f.caPEM, &tc)
	} else {
		client = emulatorClient(f.emu, f.caPEM, nil)
		tok, err := emulator.SASToken(f.emu.DPS.IDScope+"/registrations/"+d.RegistrationID, d.key, "", time.Hour)
		if err != nil {
			return err
		}
		auth = tok
	}
	base := "https://" + f.emu.DPS.DeviceHost + "/" + f.emu.DPS.IDScope + "/registrations/" + d.RegistrationID
	body, _ := json.Marshal(map[string]string{"registrationId": d.RegistrationID})
	do := func(method, url string, body []byte) (int, []byte, error) {
		req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
		if err != nil {
			return 0, nil, err
		}
		req.Header.Set("Content-Type", "application/json")
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, nil, err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b, nil
	}
	status, b, err := do(http.MethodPut, base+"/register?api-version=2021-06-01", body)
	if err != nil {
		return fmt.Errorf("registering %s: %w", d.RegistrationID, err)
	}
	if status != http.StatusAccepted && status != http.StatusOK {
		var e struct {
			Message string `json:"message"`
		}
		_ = json.Unmarshal(b, &e)
		return &registrationRefused{Status: status, Message: e.Message}
	}
	var op struct {
		OperationID       string `json:"operationId"`
		Status            string `json:"status"`
		RegistrationState struct {
			AssignedHub string `json:"assignedHub"`
			DeviceID    string `json:"deviceId"`
		} `json:"registrationState"`
	}
	if err := json.Unmarshal(b, &op); err != nil {
		return fmt.Errorf("registering %s: %w", d.RegistrationID, err)
	}
	for i := 0; op.Status == "assigning" || op.Status == "unassigned"; i++ {
		if i > 100 {
			return fmt.Errorf("registering %s: still %s", d.RegistrationID, op.Status)
		}
		time.Sleep(50 * time.Millisecond)
		status, b, err = do(http.MethodGet, base+"/operations/"+op.OperationID+"?api-version=2021-06-01", nil)
		if err != nil {
			return err
		}
		if status != http.StatusOK {
			return &registrationRefused{Status: status, Message: string(b)}
		}
		if err := json.Unmarshal(b, &op); err != nil {
			return err
		}
	}
	if op.Status != "assigned" {
		return fmt.Errorf("registering %s: status %s", d.RegistrationID, op.Status)
	}
	d.Hub, d.DeviceID = strings.ToLower(op.RegistrationState.AssignedHub), op.RegistrationState.DeviceID
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
	groupKey := randomKey()
	if _, err := f.dps.CreateOrUpdateEnrollmentGroup(ctx, dps.EnrollmentGroup{
		EnrollmentGroupID: "field-sensors",
		Attestation:       &dps.AttestationMechanism{Type: dps.AttestationTypeSymmetricKey, SymmetricKey: &dps.SymmetricKeyAttestation{PrimaryKey: groupKey, SecondaryKey: randomKey()}},
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
	meterKey := randomKey()
	if _, err := f.dps.CreateOrUpdateEnrollment(ctx, dps.IndividualEnrollment{
		RegistrationID: "meter-07", DeviceID: "meter-07",
		Attestation:        &dps.AttestationMechanism{Type: dps.AttestationTypeSymmetricKey, SymmetricKey: &dps.SymmetricKeyAttestation{PrimaryKey: meterKey, SecondaryKey: randomKey()}},
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
	for _, rid := range f.order {
		if err := f.register(ctx, f.devices[rid]); err != nil {
			return fmt.Errorf("provisioning %s: %w", rid, err)
		}
	}
	// TPM: the emulator's device API does not run the TPM challenge, so the kiosk is enrolled
	// through the service API and its hub identity created as DPS would have created it.
	ek := base64.StdEncoding.EncodeToString([]byte("demo endorsement key of kiosk-01, not a real TPM key"))
	if _, err := f.dps.CreateOrUpdateEnrollment(ctx, dps.IndividualEnrollment{
		RegistrationID: "kiosk-01", DeviceID: "kiosk-01",
		Attestation:      &dps.AttestationMechanism{Type: dps.AttestationTypeTPM, TPM: &dps.TPMAttestation{EndorsementKey: ek}},
		AllocationPolicy: dps.AllocationPolicyStatic, IoTHubs: hubHosts[:1],
		ProvisioningStatus: dps.ProvisioningStatusEnabled,
	}, nil); err != nil {
		return fmt.Errorf("creating enrollment kiosk-01: %w", err)
	}
	kioskHub := strings.ToLower(hubHosts[0])
	if _, err := f.hubs[kioskHub].CreateOrUpdateDevice(ctx, iothub.Device{DeviceID: "kiosk-01", Status: "enabled"}, nil); err != nil {
		return fmt.Errorf("creating kiosk-01 in %s: %w", kioskHub, err)
	}
	f.add(&device{RegistrationID: "kiosk-01", Kind: "individual, TPM", Hub: kioskHub, DeviceID: "kiosk-01"})
	say("provisioned %d showcase devices through the DPS device API", len(f.order)-1)

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
