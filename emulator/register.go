package emulator

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"
)

// Wire types of the DPS device registration API.

type deviceRegistrationResult struct {
	RegistrationID         string          `json:"registrationId"`
	CreatedDateTimeUtc     string          `json:"createdDateTimeUtc,omitempty"`
	AssignedHub            string          `json:"assignedHub,omitempty"`
	DeviceID               string          `json:"deviceId,omitempty"`
	Status                 string          `json:"status"`
	Substatus              string          `json:"substatus,omitempty"`
	LastUpdatedDateTimeUtc string          `json:"lastUpdatedDateTimeUtc,omitempty"`
	Etag                   string          `json:"etag,omitempty"`
	SymmetricKey           *groupAttRef    `json:"symmetricKey,omitempty"`
	X509                   *x509RegAtt     `json:"x509,omitempty"`
	TPM                    *tpmRegResult   `json:"tpm,omitempty"`
	Payload                json.RawMessage `json:"payload,omitempty"`
}

type groupAttRef struct {
	EnrollmentGroupID string `json:"enrollmentGroupId,omitempty"`
}

type x509RegAtt struct {
	EnrollmentGroupID      string               `json:"enrollmentGroupId,omitempty"`
	CertificateInfo        *x509CertificateInfo `json:"certificateInfo,omitempty"`
	SigningCertificateInfo *x509CertificateInfo `json:"signingCertificateInfo,omitempty"`
}

type registrationOperationStatus struct {
	OperationID       string                    `json:"operationId"`
	Status            string                    `json:"status"`
	RegistrationState *deviceRegistrationResult `json:"registrationState,omitempty"`
}

// operation is a finished registration, kept so that the device can poll its status.
type operation struct {
	regID   string
	created time.Time
	result  registrationOperationStatus
	// the credential that registered, checked again on every poll
	keys  []string
	thumb []byte
}

type opStore struct {
	mu sync.Mutex
	m  map[string]*operation
	// challenges are the keys issued to TPM devices, not yet used (register_tpm.go).
	challenges map[string][]tpmChallenge
}

func newOpStore() *opStore {
	return &opStore{m: map[string]*operation{}, challenges: map[string][]tpmChallenge{}}
}

const opTTL = 30 * time.Minute

func (s *opStore) put(id string, op *operation) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.m) > 10000 {
		for k, o := range s.m {
			if time.Since(o.created) > opTTL {
				delete(s.m, k)
			}
		}
	}
	s.m[id] = op
}

func (s *opStore) get(id string) *operation {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[id]
}

func (s *opStore) reset() {
	s.mu.Lock()
	s.m = map[string]*operation{}
	s.challenges = map[string][]tpmChallenge{}
	s.mu.Unlock()
}

// credential is what a device presented.
type credential struct {
	sas   *sasToken
	certs []*x509.Certificate
}

func (d *dps) deviceCredential(r *http.Request, regID string) (*credential, string) {
	if h := r.Header.Get("Authorization"); h != "" {
		t, err := parseSAS(h)
		if err != nil {
			return nil, err.Error()
		}
		if !t.coversResource(d.idScope + "/registrations/" + regID) {
			return nil, fmt.Sprintf("SAS token resource %q does not cover %s/registrations/%s", t.sr, d.idScope, regID)
		}
		return &credential{sas: t}, ""
	}
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		return &credential{certs: r.TLS.PeerCertificates}, ""
	}
	return nil, "the device presented neither a SAS token nor a TLS client certificate"
}

// serveDevice serves the device registration API and returns the operation name.
func (d *dps) serveDevice(w http.ResponseWriter, r *http.Request) string {
	segs := pathSegments(r.URL)
	n := len(segs)
	switch {
	case n == 4 && strings.EqualFold(segs[1], "registrations") && strings.EqualFold(segs[3], "register") && r.Method == http.MethodPut:
		op := "dps.device.register"
		if !d.e.injectFault(w, r, op, "", false) {
			d.register(w, r, segs[0], segs[2])
		}
		return op
	case n == 5 && strings.EqualFold(segs[1], "registrations") && strings.EqualFold(segs[3], "operations") && r.Method == http.MethodGet:
		op := "dps.device.operation"
		if !d.e.injectFault(w, r, op, "", false) {
			d.operationStatus(w, r, segs[0], segs[2], segs[4])
		}
		return op
	}
	dpsError(w, http.StatusNotFound, 0, "no DPS device operation %s %s", r.Method, r.URL.Path)
	return "dps.invalid"
}

func (d *dps) register(w http.ResponseWriter, r *http.Request, scope, regID string) {
	if r.URL.Query().Get("api-version") == "" {
		dpsError(w, http.StatusBadRequest, 0, "the api-version query parameter is required")
		return
	}
	if !strings.EqualFold(scope, d.idScope) {
		dpsError(w, http.StatusUnauthorized, 401002, "id scope %s is not served here", scope)
		return
	}
	if err := validRegistrationID("registrationId", regID); err != nil {
		dpsError(w, http.StatusBadRequest, 400004, "%v", err)
		return
	}
	var body struct {
		RegistrationID string          `json:"registrationId"`
		TPM            *tpmAttestation `json:"tpm"`
		Payload        json.RawMessage `json:"payload"`
	}
	raw, err := io.ReadAll(io.LimitReader(r.Body, maxBody))
	if err != nil {
		dpsError(w, http.StatusBadRequest, 0, "reading the request body: %v", err)
		return
	}
	if len(bytes.TrimSpace(raw)) > 0 {
		if err := json.Unmarshal(raw, &body); err != nil {
			dpsError(w, http.StatusBadRequest, 0, "the request body is not a DeviceRegistration: %v", err)
			return
		}
	}
	if body.RegistrationID != "" && !strings.EqualFold(body.RegistrationID, regID) {
		dpsError(w, http.StatusBadRequest, 400004, "registrationId %q in the body differs from %q in the path", body.RegistrationID, regID)
		return
	}
	if body.TPM != nil {
		d.registerTPM(w, r, regID, body.TPM, body.Payload)
		return
	}
	cred, reason := d.deviceCredential(r, regID)
	if cred == nil {
		dpsError(w, http.StatusUnauthorized, 401002, "unauthorized: %s", reason)
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	en, op, status, reason := d.match(cred, regID)
	if en == nil {
		dpsError(w, status, 401002, "unauthorized: %s", reason)
		return
	}
	if !en.enabled() {
		d.completeDisabled(w, op, regID)
		return
	}
	res := d.assign(en, regID, cred, body.Payload)
	d.completeAssigned(w, op, regID, res)
}

// match finds the enrollment the device attests against, as DPS does: an individual
// enrollment with the registration id wins over every group (so a disabled one blocks a group
// member, whatever its attestation type); otherwise the group whose key signed the SAS token
// or whose signing certificate is nearest the device's leaf in its chain. The winner is
// returned enabled or not: a device that attests against a disabled entry completes with
// status "disabled" (register_outcome.go); one whose credential does not attest against the
// winner (for instance a group member blocked by a disabled symmetric-key enrollment with
// random keys) is refused with 401. The caller holds d.mu.
func (d *dps) match(cred *credential, regID string) (*enrollment, *operation, int, string) {
	// An X.509 device's registration id is its certificate's common name, for individual
	// enrollments and groups alike.
	if cred.certs != nil && cred.certs[0].Subject.CommonName != regID {
		return nil, nil, http.StatusUnauthorized, fmt.Sprintf("the certificate common name %q is not the registration id %q", cred.certs[0].Subject.CommonName, regID)
	}
	if en := d.enrollments[strings.ToLower(regID)]; en != nil {
		a := en.body.Attestation
		switch {
		case cred.sas != nil && a.Type == "symmetricKey":
			for _, k := range en.keys() {
				if cred.sas.verify(k, time.Now()) == nil {
					return en, &operation{keys: en.keys()}, 0, ""
				}
			}
			return nil, nil, http.StatusUnauthorized, "the SAS token is not signed with the enrollment's key, or has expired"
		case cred.certs != nil && a.Type == "x509":
			leaf := cred.certs[0]
			for _, c := range en.certs {
				if c != nil && bytes.Equal(c.Raw, leaf.Raw) {
					return en, &operation{thumb: leaf.Raw}, 0, ""
				}
			}
			return nil, nil, http.StatusUnauthorized, "the client certificate is not the enrollment's certificate"
		default:
			return nil, nil, http.StatusUnauthorized, "the credential does not match the attestation type of enrollment " + regID
		}
	}
	ids := make([]string, 0, len(d.groups))
	for k := range d.groups {
		ids = append(ids, k)
	}
	sort.Strings(ids)
	if cred.sas != nil {
		for _, id := range ids {
			g := d.groups[id]
			if g.body.Attestation.Type != "symmetricKey" {
				continue
			}
			var derived []string
			for _, gk := range g.keys() {
				dk, err := DeriveDeviceKey(gk, regID)
				if err == nil {
					derived = append(derived, dk)
				}
			}
			for _, k := range derived {
				if cred.sas.verify(k, time.Now()) == nil {
					return g, &operation{keys: derived}, 0, ""
				}
			}
		}
		return nil, nil, http.StatusUnauthorized, "no enrollment admits this SAS token"
	}
	leaf := cred.certs[0]
	best := d.nearestGroup(ids, leaf, cred.certs[1:]) // inline signing certificates and caReferences (cas.go)
	if best == nil {
		return nil, nil, http.StatusUnauthorized, "no enrollment group's signing certificate is in the device's chain"
	}
	return best, &operation{thumb: leaf.Raw}, 0, ""
}

// hubFor picks the hub for a registration: the enrollment's iotHubs (static: the first;
// otherwise hashed among them), else iotHubHostName, else hashed across every linked hub.
func (d *dps) hubFor(en *enrollment, regID string) *hub {
	var cands []*hub
	for _, hn := range en.body.IotHubs {
		if h := d.e.hubByHost(hn); h != nil {
			cands = append(cands, h)
		}
	}
	if len(cands) == 0 && en.body.IotHubHostName != "" {
		if h := d.e.hubByHost(en.body.IotHubHostName); h != nil {
			cands = append(cands, h)
		}
	}
	if len(cands) == 0 {
		cands = d.e.hubList
	}
	if en.body.AllocationPolicy == "static" || len(cands) == 1 {
		return cands[0]
	}
	return cands[hashIndex(regID, len(cands))]
}

func hashIndex(id string, n int) int {
	f := fnv.New32a()
	f.Write([]byte(strings.ToLower(id)))
	return int(f.Sum32() % uint32(n))
}

// assign creates or updates the device in its hub and records the registration state.
// The caller holds d.mu.
func (d *dps) assign(en *enrollment, regID string, cred *credential, payload json.RawMessage) *deviceRegistrationResult {
	key := strings.ToLower(regID)
	prev := d.regs[key]
	target, substatus, migrated := d.reprovision(en, regID, prev) // reprovision.go
	deviceID := en.body.DeviceID
	if deviceID == "" {
		deviceID = regID
	}
	if migrated != nil {
		deviceID = migrated.id // the device id migrates with the twin
	}
	dev := &device{id: deviceID}
	a := en.body.Attestation
	switch {
	case a.Type == "symmetricKey" && !en.group:
		dev.authType, dev.primaryKey, dev.secondaryKey = "sas", a.SymmetricKey.PrimaryKey, a.SymmetricKey.SecondaryKey
	case a.Type == "symmetricKey":
		dev.authType = "sas"
		dev.primaryKey, _ = DeriveDeviceKey(a.SymmetricKey.PrimaryKey, regID)
		dev.secondaryKey, _ = DeriveDeviceKey(a.SymmetricKey.SecondaryKey, regID)
	case a.Type == "x509" && en.group:
		dev.authType = "certificateAuthority"
	case a.Type == "x509":
		dev.authType = "selfSigned"
		if en.certs[0] != nil {
			dev.primaryThumb = thumbprintSHA1(en.certs[0])
		}
		if en.certs[1] != nil {
			dev.secondaryThumb = thumbprintSHA1(en.certs[1])
		}
	default:
		dev.authType = "sas"
		dev.primaryKey, dev.secondaryKey = newKey(), newKey()
	}
	if en.body.Capabilities != nil {
		dev.iotEdge = en.body.Capabilities.IotEdge
	}
	if migrated != nil {
		dev.iotEdge = migrated.iotEdge
	}
	target.mu.Lock()
	if old := target.devices[deviceID]; old != nil {
		// Re-provisioning refreshes the credential and keeps status and twin.
		cur := *old
		cur.authType, cur.primaryKey, cur.secondaryKey = dev.authType, dev.primaryKey, dev.secondaryKey
		cur.primaryThumb, cur.secondaryThumb = dev.primaryThumb, dev.secondaryThumb
		cur.iotEdge = dev.iotEdge
		cur.etag = newDeviceEtag()
		target.devices[deviceID] = &cur
	} else {
		dev.status = "enabled"
		dev.statusUpdated = nowUTC()
		dev.generationID = newGenerationID()
		dev.etag = newDeviceEtag()
		dev.twinVersion = 1
		if migrated != nil {
			dev.tags, dev.desired, dev.reported, dev.twinVersion = migrated.tags, migrated.desired, migrated.reported, migrated.twinVersion
		} else if it := en.body.InitialTwin; it != nil {
			dev.tags = it.Tags
			if it.Properties != nil {
				dev.desired = it.Properties.Desired
			}
		}
		target.devices[deviceID] = dev
	}
	target.mu.Unlock()

	now := nowUTC()
	rg := &registration{state: registrationState{
		RegistrationID:         regID,
		CreatedDateTimeUtc:     now,
		AssignedHub:            target.host,
		DeviceID:               deviceID,
		Status:                 "assigned",
		Substatus:              substatus,
		LastUpdatedDateTimeUtc: now,
		Etag:                   newDPSEtag(),
	}}
	if prev != nil {
		rg.state.CreatedDateTimeUtc = prev.state.CreatedDateTimeUtc
		rg.state.RegistrationID = prev.state.RegistrationID
	}
	if en.group {
		rg.groupID = en.body.EnrollmentGroupID
	}
	d.regs[key] = rg
	s := rg.state
	res := &deviceRegistrationResult{
		RegistrationID: s.RegistrationID, CreatedDateTimeUtc: s.CreatedDateTimeUtc, AssignedHub: s.AssignedHub,
		DeviceID: s.DeviceID, Status: s.Status, Substatus: s.Substatus, LastUpdatedDateTimeUtc: s.LastUpdatedDateTimeUtc,
		Etag: s.Etag, Payload: payload,
	}
	switch a.Type {
	case "symmetricKey":
		res.SymmetricKey = &groupAttRef{EnrollmentGroupID: rg.groupID}
	case "x509":
		res.X509 = &x509RegAtt{EnrollmentGroupID: rg.groupID, CertificateInfo: certInfo(cred.certs[0])}
	}
	return res
}

func (d *dps) operationStatus(w http.ResponseWriter, r *http.Request, scope, regID, opID string) {
	if !strings.EqualFold(scope, d.idScope) {
		dpsError(w, http.StatusUnauthorized, 401002, "id scope %s is not served here", scope)
		return
	}
	cred, reason := d.deviceCredential(r, regID)
	if cred == nil {
		dpsError(w, http.StatusUnauthorized, 401002, "unauthorized: %s", reason)
		return
	}
	op := d.ops.get(opID)
	if op == nil || op.regID != strings.ToLower(regID) {
		dpsError(w, http.StatusNotFound, 404203, "operation %s of registration %s does not exist", opID, regID)
		return
	}
	ok := false
	if cred.sas != nil {
		for _, k := range op.keys {
			if cred.sas.verify(k, time.Now()) == nil {
				ok = true
			}
		}
	} else if op.thumb != nil {
		ok = bytes.Equal(op.thumb, cred.certs[0].Raw)
	}
	if !ok {
		dpsError(w, http.StatusUnauthorized, 401002, "unauthorized: the credential is not the one that registered")
		return
	}
	writeJSON(w, http.StatusOK, op.result)
}
