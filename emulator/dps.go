package emulator

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
)

// dps is the emulated DPS instance: service API state and the device registrations.
type dps struct {
	e        *Emulator
	host     string
	idScope  string
	policies map[string]*policy

	mu          sync.RWMutex
	enrollments map[string]*enrollment   // by lower-case registration id
	groups      map[string]*enrollment   // by lower-case group id
	regs        map[string]*registration // by lower-case registration id
	ops         *opStore
	pager       *pager
	cas         caStore // CA certificates that caReferences groups name (cas.go)

	// opsBucket is the instance's budget of service operations and regBucket its budget of
	// device registrations, both per minute (see [Options.DPSOperationsPerMinute]).
	opsBucket *bucket
	regBucket *bucket
}

func newDPS(e *Emulator, host, idScope string) *dps {
	all := permServiceConfig | permEnrollmentRead | permEnrollmentWrite | permRegistrationRead | permRegistrationWrite
	return &dps{
		e:       e,
		host:    host,
		idScope: idScope,
		policies: map[string]*policy{
			"provisioningserviceowner": newPolicy("provisioningserviceowner", all),
			"enrollmentread":           newPolicy("enrollmentread", permEnrollmentRead|permRegistrationRead),
		},
		enrollments: map[string]*enrollment{},
		groups:      map[string]*enrollment{},
		regs:        map[string]*registration{},
		ops:         newOpStore(),
		pager:       newPager(),
		opsBucket:   newBucket(e.opts.DPSOperationsPerMinute),
		regBucket:   newBucket(e.opts.DPSRegistrationsPerMinute),
	}
}

func (d *dps) connectionString(policyName string) string {
	p := d.policies[policyName]
	if p == nil {
		return ""
	}
	return "HostName=" + d.host + ";SharedAccessKeyName=" + p.name + ";SharedAccessKey=" + p.primary
}

func (d *dps) reset() {
	d.mu.Lock()
	d.enrollments = map[string]*enrollment{}
	d.groups = map[string]*enrollment{}
	d.regs = map[string]*registration{}
	d.mu.Unlock()
	d.ops.reset()
	d.pager.reset()
}

const maxBody = 4 << 20

// serveService serves the DPS service API and returns the operation name. The operations and
// their paths are the DPS service spec's (azure-rest-api-specs,
// specification/deviceprovisioningservices/data-plane, 2021-10-01).
func (d *dps) serveService(w http.ResponseWriter, r *http.Request) string {
	segs := pathSegments(r.URL)
	if segs == nil {
		dpsError(w, http.StatusBadRequest, 0, "the request path is not correctly escaped")
		return "dps.invalid"
	}
	var op string
	var need perm
	var handler func()
	cost := 1
	n := len(segs)
	// Resource names in paths are case-insensitive: the Node SDK sends /enrollmentgroups/
	// for some calls and /enrollmentGroups/ for others.
	lower := make([]string, n)
	for i, s := range segs {
		if i != 1 {
			lower[i] = strings.ToLower(s)
		}
	}
	switch {
	case n >= 1 && (lower[0] == "enrollments" || lower[0] == "enrollmentgroups"):
		group := lower[0] == "enrollmentgroups"
		kind := "enrollments"
		if group {
			kind = "groups"
		}
		switch {
		case n == 1 && r.Method == http.MethodPost:
			op, need = "dps."+kind+".bulk", permEnrollmentWrite
			var body bulkBody
			if err := readJSON(r, &body); err != nil {
				handler = func() { dpsError(w, http.StatusBadRequest, 0, "%v", err) }
				break
			}
			if !d.e.opts.DPSBulkPerCall {
				cost = max(1, len(body.Enrollments)+len(body.EnrollmentGroups))
			}
			handler = func() { d.bulk(w, &body, group) }
		case n == 2 && strings.EqualFold(segs[1], "query") && r.Method == http.MethodPost:
			op, need, handler = "dps."+kind+".query", permEnrollmentRead, func() { d.queryEnrollments(w, r, group) }
		case n == 2 && r.Method == http.MethodGet:
			op, need, handler = "dps."+kind+".get", permEnrollmentRead, func() { d.getEnrollment(w, segs[1], group) }
		case n == 2 && r.Method == http.MethodPut:
			op, need, handler = "dps."+kind+".put", permEnrollmentWrite, func() { d.putEnrollment(w, r, segs[1], group) }
		case n == 2 && r.Method == http.MethodDelete:
			op, need, handler = "dps."+kind+".delete", permEnrollmentWrite, func() { d.deleteEnrollment(w, r, segs[1], group) }
		case n == 3 && lower[2] == "attestationmechanism" && r.Method == http.MethodPost:
			op, need, handler = "dps."+kind+".attestation", permEnrollmentRead|permEnrollmentWrite, func() { d.attestationMechanism(w, segs[1], group) }
		}
	case n >= 1 && lower[0] == "registrations":
		switch {
		case n == 2 && r.Method == http.MethodGet:
			op, need, handler = "dps.registrations.get", permRegistrationRead, func() { d.getRegistration(w, segs[1]) }
		case n == 2 && r.Method == http.MethodDelete:
			op, need, handler = "dps.registrations.delete", permRegistrationWrite, func() { d.deleteRegistration(w, r, segs[1]) }
		case n == 3 && lower[2] == "query" && r.Method == http.MethodPost:
			op, need, handler = "dps.registrations.query", permRegistrationRead, func() { d.queryRegistrations(w, r, segs[1]) }
		}
	}
	if handler == nil {
		// "405: a rest operation is missing the enrollment or registration ID parameters"
		// (how-to-troubleshoot-dps.md, "Common error codes").
		if n == 1 && (lower[0] == "enrollments" || lower[0] == "enrollmentgroups" || lower[0] == "registrations") && r.Method != http.MethodPost {
			dpsError(w, http.StatusMethodNotAllowed, 0, "%s %s needs an id in the path", r.Method, r.URL.Path)
			return "dps.invalid"
		}
		dpsError(w, http.StatusNotFound, 0, "no DPS operation %s %s", r.Method, r.URL.Path)
		return "dps.invalid"
	}
	if d.e.injectFault(w, r, op, "", false) {
		return op
	}
	if _, err := checkAPIVersion(r); err != nil {
		dpsError(w, http.StatusBadRequest, 0, "%v", err)
		return op
	}
	// Shared access policies and their permissions: how-to-control-access.md (DPS); 401002 is
	// the code seen in the wild for a refused credential (azure-iot-sdk-node #532).
	if reason, ok := d.e.authorize(r, d.host, DPSAudience, d.policies, need); !ok {
		dpsError(w, http.StatusUnauthorized, 401002, "unauthorized: %s", reason)
		return op
	}
	// Every service API call is one billable operation of the instance's budget
	// (about-iot-dps.md, "Billable service operations"; iot-dps-limits.md: 1,000 a minute
	// per instance). A bulk call counts each of its items: whether DPS counts it once is
	// UNCONFIRMED, and counting every item is the reading that never overstates capacity.
	if wait := d.opsBucket.take(cost); wait > 0 {
		d.throttled(w, wait, "%s needs %d operations and the instance allows %d a minute", op, cost, d.opsBucket.limit())
		return op
	}
	d.e.stats.chargeDPS(cost, 0)
	handler()
	return op
}

// throttled answers 429 as DPS does: the documented status (how-to-troubleshoot-dps.md,
// "429: Operations are being throttled by the service") with a Retry-After header in
// seconds, which the official device SDKs read from DPS answers (azure-iot-sdk-node
// provisioning/transport/http, "retry-after"; azure-iot-sdk-c PR #1703). Whether the service
// API's 429 carries Retry-After too, and its six-digit code, are UNCONFIRMED: the emulator
// sends Retry-After (the reading that lets clients wait no longer than needed) and 429001.
func (d *dps) throttled(w http.ResponseWriter, wait int, format string, args ...any) {
	w.Header().Set("Retry-After", strconv.Itoa(wait))
	dpsError(w, http.StatusTooManyRequests, 429001, "throttled: "+format, args...)
}

// pathSegments splits the escaped path into unescaped segments, so that an id holding an
// escaped "/" stays one segment. It returns nil for a badly escaped path.
func pathSegments(u *url.URL) []string {
	p := strings.Trim(u.EscapedPath(), "/")
	if p == "" {
		return []string{}
	}
	parts := strings.Split(p, "/")
	for i, s := range parts {
		v, err := url.PathUnescape(s)
		if err != nil {
			return nil
		}
		parts[i] = v
	}
	return parts
}

func readJSON(r *http.Request, v any) error {
	b, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		return fmt.Errorf("reading the request body: %w", err)
	}
	if len(b) > maxBody {
		return fmt.Errorf("the request body is larger than %d bytes", maxBody)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("the request body is not valid JSON for this operation: %w", err)
	}
	return nil
}

// newDPSEtag returns an etag in the service's form: base64 of a quoted Cosmos DB etag, such as
// "ImIwMDI3ODhhLTAwMDAtMDgwMC0wMDAwLTY0NWFhZDgyMDAwMCI=" (every enrollment, group and
// registration etag in the recordings of Azure/azure-sdk-for-python,
// sdk/deviceprovisioningservices/azure-iot-deviceprovisioning/tests/recordings). Clients send
// it back in If-Match as received (Python) or quoted (C# ContractApiHttp.InsertIfMatch); both
// match.
func newDPSEtag() string {
	h := randomHex(12)
	return base64.StdEncoding.EncodeToString([]byte(`"` + h[:8] + "-0000-0800-0000-" + h[8:] + randomHex(4) + `"`))
}

func uuidLike() string {
	h := randomHex(16)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func (d *dps) table(group bool) map[string]*enrollment {
	if group {
		return d.groups
	}
	return d.enrollments
}

// notFoundCode is the six-digit code of a missing enrollment or group. 404201 and 404202 are
// seen in the wild for two not-found cases (MicrosoftDocs/azure-docs #57082) without saying
// which; 404201 for an enrollment and the others are the emulator's choice (UNCONFIRMED, and
// clients branch on the status, not on these).
func notFoundCode(group bool) (int, string) {
	if group {
		return 404204, "enrollment group"
	}
	return 404201, "enrollment"
}

// conflictCode is the answer to creating an enrollment or group that exists, as recorded in
// bulk results (test_individual_enrollment_bulk_operations and
// test_enrollment_group_bulk_operations at bb00d3a6: 409201 "Enrollment already exists.",
// 409202 "EnrollmentGroup already exists."). A PUT without If-Match meets the same condition
// and is given the same code (UNCONFIRMED).
func conflictCode(group bool) (int, string) {
	if group {
		return 409202, "EnrollmentGroup already exists."
	}
	return 409201, "Enrollment already exists."
}

// getEnrollment serves GET /enrollments/{id} and /enrollmentGroups/{id}.
func (d *dps) getEnrollment(w http.ResponseWriter, id string, group bool) {
	d.mu.RLock()
	en := d.table(group)[strings.ToLower(id)]
	var out enrollmentJSON
	if en != nil {
		out = en.public(viewGet, d.regState(en))
	}
	d.mu.RUnlock()
	if en == nil {
		code, kind := notFoundCode(group)
		dpsError(w, http.StatusNotFound, code, "%s %s does not exist", kind, id)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// regState returns a copy of an individual enrollment's registration state, if any: only a
// device registered through that individual enrollment, not a group member that happens to
// have the same id. The caller holds d.mu.
func (d *dps) regState(en *enrollment) *registrationState {
	if en.group {
		return nil
	}
	if rg := d.regs[strings.ToLower(en.body.RegistrationID)]; rg != nil && rg.groupID == "" {
		s := rg.state
		return &s
	}
	return nil
}

func (d *dps) putEnrollment(w http.ResponseWriter, r *http.Request, id string, group bool) {
	var body enrollmentJSON
	if err := readJSON(r, &body); err != nil {
		dpsError(w, http.StatusBadRequest, 0, "%v", err)
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	status, code, err := d.upsert(id, &body, group, parseIfMatch(r.Header.Get("If-Match")))
	if err != nil {
		dpsError(w, status, code, "%v", err)
		return
	}
	en := d.table(group)[strings.ToLower(id)]
	writeJSON(w, http.StatusOK, en.public(viewWrite, nil))
}

// upsert validates body and stores it under id with the If-Match rules of DPS: no If-Match
// creates only, 409 if the id exists (azure-iot-sdk-csharp #3076, azure-sdk-for-python
// #35187); "*" creates or replaces (az CLI's update path, azure-iot-cli-extension
// azext_iot/operations/dps.py); an etag replaces only that version, 412 otherwise ("412: The
// ETag in the request does not match", how-to-troubleshoot-dps.md), also for an id that does
// not exist (UNCONFIRMED: nothing can match). A body id differing from the path's is refused
// with 400 (UNCONFIRMED; clients build the path from the body's id). The caller holds d.mu
// for writing.
func (d *dps) upsert(id string, body *enrollmentJSON, group bool, im ifMatch) (int, int, error) {
	kind := "registrationId"
	bodyID := &body.RegistrationID
	if group {
		kind, bodyID = "enrollmentGroupId", &body.EnrollmentGroupID
	}
	if err := validRegistrationID(kind, id); err != nil {
		return http.StatusBadRequest, 400004, err
	}
	if *bodyID == "" {
		*bodyID = id
	} else if !strings.EqualFold(*bodyID, id) {
		return http.StatusBadRequest, 400004, fmt.Errorf("%s %q in the body differs from %q in the path", kind, *bodyID, id)
	}
	key := strings.ToLower(id)
	old := d.table(group)[key]
	switch {
	case !im.present && old != nil:
		code, msg := conflictCode(group)
		return http.StatusConflict, code, fmt.Errorf("%s", msg)
	case im.present && !im.wildcard && old == nil:
		_, what := notFoundCode(group)
		return http.StatusPreconditionFailed, 412001, fmt.Errorf("%s %s does not exist, so etag %s cannot match", what, id, im.value)
	case im.present && !im.wildcard && old.body.Etag != im.value:
		return http.StatusPreconditionFailed, 412001, fmt.Errorf("etag %s does not match the current etag of %s", im.value, id)
	}
	en, err := d.normalize(body, group, old)
	if err != nil {
		return http.StatusBadRequest, 400004, err
	}
	if old != nil {
		en.body.CreatedDateTimeUtc = old.body.CreatedDateTimeUtc
		*bodyID = old.id() // the id keeps the case it was created with
	} else {
		en.body.CreatedDateTimeUtc = nowUTC()
	}
	en.body.LastUpdatedDateTimeUtc = nowUTC()
	en.body.Etag = newDPSEtag()
	en.body.RegistrationState = nil
	d.table(group)[key] = en
	return 0, 0, nil
}

// normalize validates an enrollment body against the DPS spec's models (the enums of
// provisioningStatus, allocationPolicy and attestation type; required fields) and keeps
// secrets the client did not resend: GET never returns them, so a GET-modify-PUT omits
// them, as az CLI's enrollment update does (it PUTs back the record whose attestation holds
// only certificate info, and the service keeps the certificate). Nothing is defaulted; see
// the enrollmentJSON comment.
func (d *dps) normalize(body *enrollmentJSON, group bool, old *enrollment) (*enrollment, error) {
	en := &enrollment{body: *body, group: group}
	b := &en.body
	if group && (body.DeviceID != "" || body.RegistrationID != "") {
		return nil, fmt.Errorf("an enrollment group has no registrationId or deviceId")
	}
	if b.DeviceID != "" {
		if err := validDeviceID(b.DeviceID); err != nil {
			return nil, err
		}
	}
	if ps := b.ProvisioningStatus; ps != nil && *ps != "enabled" && *ps != "disabled" {
		return nil, fmt.Errorf("provisioningStatus %q is not enabled or disabled", *ps)
	}
	switch b.AllocationPolicy {
	case "", "hashed", "geoLatency", "static", "custom":
	default:
		return nil, fmt.Errorf("allocationPolicy %q is not hashed, geoLatency, static or custom", b.AllocationPolicy)
	}
	// iotHubs are "a subset of the linked hubs" (DPS spec, IndividualEnrollment.iotHubs);
	// the status of a refusal is UNCONFIRMED (400, the body is the caller's mistake).
	for _, h := range b.IotHubs {
		if d.e.hubByHost(h) == nil {
			return nil, fmt.Errorf("iotHubs names %q, which is not a hub linked to this DPS", h)
		}
	}
	if b.IotHubHostName != "" && d.e.hubByHost(b.IotHubHostName) == nil {
		return nil, fmt.Errorf("iotHubHostName %q is not a hub linked to this DPS", b.IotHubHostName)
	}
	a := b.Attestation
	if a == nil {
		return nil, fmt.Errorf("attestation is required")
	}
	ac := *a
	b.Attestation = &ac
	a = &ac
	var oldA *attestation
	if old != nil {
		oldA = old.body.Attestation
	}
	switch a.Type {
	case "symmetricKey":
		// Keys are generated when none are sent (recorded: the PUT of sym_enrollment2 in
		// test_enrollment_symmetrickey_lifecycle), kept when a GET-modify-PUT sends none,
		// and must be base64 of 16 to 64 bytes (concepts-symmetric-key-attestation.md).
		a.X509, a.TPM = nil, nil
		sk := symmetricKey{}
		if a.SymmetricKey != nil {
			sk = *a.SymmetricKey
		}
		if sk.PrimaryKey == "" && sk.SecondaryKey == "" && oldA != nil && oldA.Type == "symmetricKey" {
			sk = *oldA.SymmetricKey
		}
		if sk.PrimaryKey == "" {
			sk.PrimaryKey = newKey()
		}
		if sk.SecondaryKey == "" {
			sk.SecondaryKey = newKey()
		}
		for _, k := range []string{sk.PrimaryKey, sk.SecondaryKey} {
			raw, err := base64.StdEncoding.DecodeString(k)
			if err != nil || len(raw) < 16 || len(raw) > 64 {
				return nil, fmt.Errorf("symmetric keys must be base64 of 16 to 64 bytes")
			}
		}
		a.SymmetricKey = &sk
	case "x509":
		a.SymmetricKey, a.TPM = nil, nil
		if a.X509 == nil {
			return nil, fmt.Errorf("attestation type x509 needs attestation.x509")
		}
		xc := *a.X509
		a.X509 = &xc
		var oldX *x509Attestation
		if oldA != nil && oldA.Type == "x509" {
			oldX = oldA.X509
		}
		if group {
			if xc.ClientCertificates != nil {
				return nil, fmt.Errorf("an enrollment group takes signingCertificates or caReferences, not clientCertificates")
			}
			if xc.SigningCertificates == nil && (xc.CAReferences == nil || xc.CAReferences.Primary == "") {
				return nil, fmt.Errorf("an X.509 enrollment group needs signingCertificates.primary or caReferences.primary")
			}
			if xc.SigningCertificates != nil {
				var prev *x509Certificates
				if oldX != nil {
					prev = oldX.SigningCertificates
				}
				certs, parsed, err := checkCerts("signingCertificates", xc.SigningCertificates, prev, old)
				if err != nil {
					return nil, err
				}
				xc.SigningCertificates, en.certs = certs, parsed
			}
		} else {
			if xc.SigningCertificates != nil || xc.CAReferences != nil {
				return nil, fmt.Errorf("an individual enrollment takes clientCertificates, not signingCertificates or caReferences")
			}
			if xc.ClientCertificates == nil {
				return nil, fmt.Errorf("an X.509 individual enrollment needs clientCertificates.primary")
			}
			var prev *x509Certificates
			if oldX != nil {
				prev = oldX.ClientCertificates
			}
			certs, parsed, err := checkCerts("clientCertificates", xc.ClientCertificates, prev, old)
			if err != nil {
				return nil, err
			}
			xc.ClientCertificates, en.certs = certs, parsed
		}
	case "tpm":
		// TPM attestation is for individual enrollments only (concepts-service.md,
		// "Enrollment group"); the endorsement key is echoed in every answer (recorded:
		// test_enrollment_tpm_lifecycle).
		if group {
			return nil, fmt.Errorf("an enrollment group cannot use TPM attestation")
		}
		a.SymmetricKey, a.X509 = nil, nil
		if a.TPM == nil || a.TPM.EndorsementKey == "" {
			return nil, fmt.Errorf("attestation type tpm needs tpm.endorsementKey")
		}
	case "none":
	default:
		return nil, fmt.Errorf("attestation type %q is not x509, symmetricKey, tpm or none", a.Type)
	}
	return en, nil
}

// checkCerts parses the primary (required, "Only the primary is mandatory": C#
// X509Attestation.cs) and secondary certificates and computes their info, as DPS "will
// process the provided certificates, but will never return it back" (same file) and answers
// with their info. A slot sent without certificate text keeps the stored certificate of that
// slot.
func checkCerts(field string, in, prev *x509Certificates, old *enrollment) (*x509Certificates, [2]*x509.Certificate, error) {
	var parsed [2]*x509.Certificate
	out := &x509Certificates{}
	slots := []struct {
		name string
		in   *x509CertificateWithInfo
		prev *x509CertificateWithInfo
		out  **x509CertificateWithInfo
	}{{"primary", in.Primary, nil, &out.Primary}, {"secondary", in.Secondary, nil, &out.Secondary}}
	if prev != nil {
		slots[0].prev, slots[1].prev = prev.Primary, prev.Secondary
	}
	for i, s := range slots {
		if s.in == nil {
			if i == 0 {
				return nil, parsed, fmt.Errorf("%s.primary is required", field)
			}
			continue
		}
		text := s.in.Certificate
		if text == "" {
			if s.prev == nil || s.prev.Certificate == "" {
				if i == 1 {
					// A secondary never written is answered with the primary's info; sent
					// back unchanged (GET-modify-PUT) it is that echo, not a new slot.
					continue
				}
				return nil, parsed, fmt.Errorf("%s.%s.certificate is required", field, s.name)
			}
			text = s.prev.Certificate
		}
		c, err := parseCertificate(text)
		if err != nil {
			return nil, parsed, fmt.Errorf("%s.%s.certificate: %w", field, s.name, err)
		}
		parsed[i] = c
		*s.out = &x509CertificateWithInfo{Certificate: text, Info: certInfo(c)}
	}
	return out, parsed, nil
}

// deleteEnrollment deletes an enrollment or group: without If-Match unconditionally ("It will
// delete the enrollment regardless the eTag", C# ProvisioningServiceClient docs), with a
// stale etag 412. The registration states stay ("deleting an enrollment group does not
// delete the registration records", how-to-unprovision-devices.md).
func (d *dps) deleteEnrollment(w http.ResponseWriter, r *http.Request, id string, group bool) {
	im := parseIfMatch(r.Header.Get("If-Match"))
	d.mu.Lock()
	defer d.mu.Unlock()
	key := strings.ToLower(id)
	en := d.table(group)[key]
	if en == nil {
		code, kind := notFoundCode(group)
		dpsError(w, http.StatusNotFound, code, "%s %s does not exist", kind, id)
		return
	}
	if im.present && !im.wildcard && en.body.Etag != im.value {
		dpsError(w, http.StatusPreconditionFailed, 412001, "etag %s does not match the current etag of %s", im.value, id)
		return
	}
	delete(d.table(group), key)
	w.WriteHeader(http.StatusNoContent)
}

// attestationMechanism serves POST …/attestationmechanism, the one answer besides a PUT's
// that carries symmetric keys (recorded: test_enrollment_symmetrickey_lifecycle,
// test_enrollment_group_symmetrickey_lifecycle; the CLI reads keys through it).
func (d *dps) attestationMechanism(w http.ResponseWriter, id string, group bool) {
	d.mu.RLock()
	en := d.table(group)[strings.ToLower(id)]
	var a attestation
	if en != nil {
		// Keys are returned here, which is how clients read them (recorded:
		// test_enrollment_symmetrickey_lifecycle, test_enrollment_tpm_lifecycle);
		// certificates still only as info.
		a = *en.public(viewWrite, nil).Attestation
	}
	d.mu.RUnlock()
	if en == nil {
		code, kind := notFoundCode(group)
		dpsError(w, http.StatusNotFound, code, "%s %s does not exist", kind, id)
		return
	}
	writeJSON(w, http.StatusOK, a)
}

// bulkBody is BulkEnrollmentOperation and BulkEnrollmentGroupOperation.
type bulkBody struct {
	Mode             string           `json:"mode"`
	Enrollments      []enrollmentJSON `json:"enrollments"`
	EnrollmentGroups []enrollmentJSON `json:"enrollmentGroups"`
}

type bulkError struct {
	RegistrationID    string `json:"registrationId,omitempty"`
	EnrollmentGroupID string `json:"enrollmentGroupId,omitempty"`
	ErrorCode         int    `json:"errorCode"`
	ErrorStatus       string `json:"errorStatus"`
}

type bulkResult struct {
	IsSuccessful bool        `json:"isSuccessful"`
	Errors       []bulkError `json:"errors"`
}

// maxBulkEnrollments is the most items one bulk operation takes ("maximum of 10" in the
// DPS spec's BulkEnrollmentOperation description).
const maxBulkEnrollments = 10

// bulk serves POST /enrollments and /enrollmentGroups. A malformed call (unknown mode, no
// items, more than 10, an id listed twice) is refused whole with 400, as the official Node
// sample run_bulk_operation.js expects for a duplicate (Azure/azure-iot-sdk-node,
// provisioning/service/samples, e940876e); otherwise the answer is 200 and each item that
// failed is reported in errors, an invalid item included (the same sample's TPM enrollment
// without an endorsement key).
func (d *dps) bulk(w http.ResponseWriter, body *bulkBody, group bool) {
	items, field := body.Enrollments, "enrollments"
	if group {
		items, field = body.EnrollmentGroups, "enrollmentGroups"
	}
	switch strings.ToLower(body.Mode) {
	case "create", "update", "delete":
		body.Mode = strings.ToLower(body.Mode)
	case "updateifmatchetag":
		body.Mode = "updateIfMatchETag"
	default:
		dpsError(w, http.StatusBadRequest, 0, "mode %q is not create, update, updateIfMatchETag or delete", body.Mode)
		return
	}
	if len(items) == 0 {
		dpsError(w, http.StatusBadRequest, 0, "%s is empty", field)
		return
	}
	if len(items) > maxBulkEnrollments {
		dpsError(w, http.StatusBadRequest, 0, "a bulk operation takes at most %d %s, got %d", maxBulkEnrollments, field, len(items))
		return
	}
	seen := map[string]bool{}
	for _, it := range items {
		id := it.RegistrationID
		if group {
			id = it.EnrollmentGroupID
		}
		if seen[strings.ToLower(id)] {
			dpsError(w, http.StatusBadRequest, 0, "%s lists %q more than once", field, id)
			return
		}
		seen[strings.ToLower(id)] = true
	}
	res := bulkResult{IsSuccessful: true, Errors: []bulkError{}}
	d.mu.Lock()
	for i := range items {
		it := &items[i]
		id := it.RegistrationID
		if group {
			id = it.EnrollmentGroupID
		}
		status, code, err := d.bulkItem(body.Mode, id, it, group)
		if err != nil {
			if code == 0 {
				code = status*1000 + 1
			}
			be := bulkError{ErrorCode: code, ErrorStatus: err.Error()}
			if group {
				be.EnrollmentGroupID = id
			} else {
				be.RegistrationID = id
			}
			res.Errors = append(res.Errors, be)
			res.IsSuccessful = false
		}
	}
	d.mu.Unlock()
	writeJSON(w, http.StatusOK, res)
}

// bulkItem applies one item of a bulk operation:
//   - create fails on an existing id (409201/409202);
//   - update writes as a PUT whose If-Match is the item's etag: without one it creates only,
//     so an existing id fails with 409201/409202 as recorded
//     (test_individual_enrollment_bulk_operations, test_enrollment_group_bulk_operations: the
//     items of a create, sent again with mode update and no etag, fail "already exists");
//     with the etag of the stored version it replaces it, as the C# SDK's e2e test does with
//     enrollments read back by GET (Azure/azure-iot-sdk-csharp previews/v2,
//     e2e/Tests/provisioning/ProvisioningServiceIndividualEnrollmentTests.cs,
//     SymmetricKey_BulkOperation_Ok); a stale etag fails with 412;
//   - updateIfMatchETag is update with the etag required;
//   - delete removes the item whatever its etag (the recordings delete items without one) and
//     fails per item on a missing id.
//
// The caller holds d.mu.
func (d *dps) bulkItem(mode, id string, it *enrollmentJSON, group bool) (int, int, error) {
	if id == "" {
		return http.StatusBadRequest, 400004, fmt.Errorf("the item has no id")
	}
	switch mode {
	case "create":
		return d.upsert(id, it, group, ifMatch{})
	case "update":
		return d.upsert(id, it, group, parseIfMatch(it.Etag))
	case "updateIfMatchETag":
		if it.Etag == "" {
			return http.StatusBadRequest, 400004, fmt.Errorf("mode updateIfMatchETag needs the item's etag")
		}
		return d.upsert(id, it, group, parseIfMatch(it.Etag))
	default: // delete
		key := strings.ToLower(id)
		if d.table(group)[key] == nil {
			code, kind := notFoundCode(group)
			return http.StatusNotFound, code, fmt.Errorf("%s %s does not exist", kind, id)
		}
		delete(d.table(group), key)
		return 0, 0, nil
	}
}

// querySpec is QuerySpecification.
type querySpec struct {
	Query string `json:"query"`
}

// dpsSelectAllRe is every query text official clients send to the three DPS queries:
// "SELECT *" (the Python SDK's tests; the az CLI), "select *" (the Python paging test),
// "SELECT * FROM enrollments" / "SELECT * FROM enrollmentGroups" (the C# samples and e2e
// tests of Azure/azure-iot-sdk-csharp) and "*" (the Node sample
// provisioning/service/samples/query.js of Azure/azure-iot-sdk-node, for all three queries).
var dpsSelectAllRe = regexp.MustCompile(`(?is)^\s*(\*|select\s+\*(\s+from\s+[a-z_][a-z0-9_]*)?)\s*$`)

// checkDPSQuery reads a QuerySpecification. Whether DPS filters on a WHERE clause is not
// documented (it stays UNCONFIRMED), so a query that asks for more than "all"
// is refused with 400 rather than answered with everything, which a caller relying on the
// filter would take for a filtered answer. The registrations query may have no body: the
// spec defines none and the Python SDK sends none (test_device_registration_lifecycle).
func checkDPSQuery(r *http.Request, required bool) error {
	b, err := io.ReadAll(io.LimitReader(r.Body, maxBody))
	if err != nil {
		return fmt.Errorf("reading the request body: %w", err)
	}
	if len(strings.TrimSpace(string(b))) == 0 {
		if required {
			return fmt.Errorf("the body must be a QuerySpecification {\"query\": ...}")
		}
		return nil
	}
	var q querySpec
	if err := json.Unmarshal(b, &q); err != nil {
		return fmt.Errorf("the body is not a QuerySpecification: %w", err)
	}
	if q.Query == "" {
		if required {
			return fmt.Errorf("the QuerySpecification has no query")
		}
		return nil
	}
	if !dpsSelectAllRe.MatchString(q.Query) {
		return fmt.Errorf("query %q: the emulator serves only queries for everything (\"*\" or \"SELECT * [FROM x]\"), since DPS does not document filtering", q.Query)
	}
	return nil
}

// queryEnrollments serves POST /enrollments/query and /enrollmentGroups/query; the answers
// are items as viewQuery shows them, x-ms-item-type "Enrollment" or "EnrollmentGroup"
// (recorded in every lifecycle recording).
func (d *dps) queryEnrollments(w http.ResponseWriter, r *http.Request, group bool) {
	if err := checkDPSQuery(r, true); err != nil {
		dpsError(w, http.StatusBadRequest, 0, "%v", err)
		return
	}
	size, err := pageSize(r)
	if err != nil {
		dpsError(w, http.StatusBadRequest, 0, "%v", err)
		return
	}
	keys, next, err := d.pager.page(r.Header.Get("x-ms-continuation"), size, func() []string {
		d.mu.RLock()
		defer d.mu.RUnlock()
		t := d.table(group)
		out := make([]string, 0, len(t))
		for k := range t {
			out = append(out, k)
		}
		return out
	})
	if err != nil {
		dpsError(w, http.StatusBadRequest, 0, "%v", err)
		return
	}
	items := make([]enrollmentJSON, 0, len(keys))
	d.mu.RLock()
	for _, k := range keys {
		if en := d.table(group)[k]; en != nil {
			items = append(items, en.public(viewQuery, nil))
		}
	}
	d.mu.RUnlock()
	itemType := "Enrollment"
	if group {
		itemType = "EnrollmentGroup"
	}
	writePage(w, itemType, next, items)
}

// writePage writes one page of a query: the items, x-ms-item-type, and x-ms-continuation only
// when more pages remain. Neither service answers with x-ms-max-item-count, asked for or not
// (recorded: test_individual_enrollment_paging at 1551a4dd, and the hub's query answers in
// DevicesClient_Query_GetTwins.json).
func writePage(w http.ResponseWriter, itemType string, next string, items any) {
	w.Header().Set("x-ms-item-type", itemType)
	if next != "" {
		w.Header().Set("x-ms-continuation", next)
	}
	writeJSON(w, http.StatusOK, items)
}

// getRegistration serves GET /registrations/{id} (recorded: test_device_registration_lifecycle).
func (d *dps) getRegistration(w http.ResponseWriter, id string) {
	d.mu.RLock()
	rg := d.regs[strings.ToLower(id)]
	var out registrationState
	if rg != nil {
		out = rg.state
	}
	d.mu.RUnlock()
	if rg == nil {
		dpsError(w, http.StatusNotFound, 404202, "registration %s does not exist", id)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// deleteRegistration serves DELETE /registrations/{id}, with the If-Match rules of the other
// deletes (recorded without If-Match: test_device_registration_lifecycle). It does not touch
// the hub's identity (how-to-unprovision-devices.md: the two steps are separate).
func (d *dps) deleteRegistration(w http.ResponseWriter, r *http.Request, id string) {
	im := parseIfMatch(r.Header.Get("If-Match"))
	d.mu.Lock()
	defer d.mu.Unlock()
	key := strings.ToLower(id)
	rg := d.regs[key]
	if rg == nil {
		dpsError(w, http.StatusNotFound, 404202, "registration %s does not exist", id)
		return
	}
	if im.present && !im.wildcard && rg.state.Etag != im.value {
		dpsError(w, http.StatusPreconditionFailed, 412001, "etag %s does not match the current etag of registration %s", im.value, id)
		return
	}
	delete(d.regs, key)
	w.WriteHeader(http.StatusNoContent)
}

// queryRegistrations serves POST /registrations/{groupId}/query: the registration states of
// the group's devices ([] for a group with none, recorded in
// test_device_registration_lifecycle; a group that does not exist answers the same,
// UNCONFIRMED).
func (d *dps) queryRegistrations(w http.ResponseWriter, r *http.Request, groupID string) {
	if err := checkDPSQuery(r, false); err != nil {
		dpsError(w, http.StatusBadRequest, 0, "%v", err)
		return
	}
	size, err := pageSize(r)
	if err != nil {
		dpsError(w, http.StatusBadRequest, 0, "%v", err)
		return
	}
	keys, next, err := d.pager.page(r.Header.Get("x-ms-continuation"), size, func() []string {
		d.mu.RLock()
		defer d.mu.RUnlock()
		var out []string
		for k, rg := range d.regs {
			if strings.EqualFold(rg.groupID, groupID) {
				out = append(out, k)
			}
		}
		return out
	})
	if err != nil {
		dpsError(w, http.StatusBadRequest, 0, "%v", err)
		return
	}
	items := make([]registrationState, 0, len(keys))
	d.mu.RLock()
	for _, k := range keys {
		if rg := d.regs[k]; rg != nil && strings.EqualFold(rg.groupID, groupID) {
			items = append(items, rg.state)
		}
	}
	d.mu.RUnlock()
	writePage(w, "DeviceRegistration", next, items)
}
