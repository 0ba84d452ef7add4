package emulator

import (
	"fmt"
	"net/http"
	"strings"
	"time"
)

// SeedSpec describes a population to create at once, for benchmarks and large tests.
type SeedSpec struct {
	// Prefix starts every id; default "seed". Group i is "{prefix}-g{i}"; registration j of
	// it is "{prefix}-g{i}-d{j}".
	Prefix string `json:"prefix,omitempty"`
	// Groups is the number of enrollment groups (default 1).
	Groups int `json:"groups,omitempty"`
	// Registrations is the total number of registered devices, spread evenly over the groups.
	Registrations int `json:"registrations"`
	// Hubs restricts the hubs devices are hashed across (names); default all.
	Hubs []string `json:"hubs,omitempty"`
	// Attestation is "symmetricKey" (default) or "x509". X.509 groups get a generated signing
	// certificate, returned in [SeedResult.Groups] so tests can issue member certificates.
	Attestation string `json:"attestation,omitempty"`
}

// SeedResult reports what was seeded.
type SeedResult struct {
	Groups        []SeededGroup `json:"groups"`
	Registrations int           `json:"registrations"`
	Elapsed       Duration      `json:"elapsed"`
}

// SeededGroup is one seeded enrollment group with the secret a member needs.
type SeededGroup struct {
	ID            string `json:"id"`
	PrimaryKey    string `json:"primaryKey,omitempty"`  // symmetric-key groups
	SigningCert   string `json:"signingCert,omitempty"` // X.509 groups: certificate PEM
	SigningKey    string `json:"signingKey,omitempty"`  // X.509 groups: private key PEM
	Registrations int    `json:"registrations"`
}

// Seed creates enrollment groups, their registration states and the hub devices in one
// step, as if every device had provisioned. Existing items with the same ids are replaced.
func (e *Emulator) Seed(s SeedSpec) (*SeedResult, error) {
	start := time.Now()
	if s.Prefix == "" {
		s.Prefix = "seed"
	}
	if s.Groups <= 0 {
		s.Groups = 1
	}
	if s.Registrations < 0 {
		return nil, fmt.Errorf("registrations %d is negative", s.Registrations)
	}
	if s.Attestation == "" {
		s.Attestation = "symmetricKey"
	}
	if s.Attestation != "symmetricKey" && s.Attestation != "x509" {
		return nil, fmt.Errorf("attestation %q is not symmetricKey or x509", s.Attestation)
	}
	if err := validRegistrationID("prefix", s.Prefix); err != nil {
		return nil, err
	}
	hubs := e.hubList
	if len(s.Hubs) > 0 {
		hubs = nil
		for _, n := range s.Hubs {
			h := e.hubByName(n)
			if h == nil {
				return nil, fmt.Errorf("hub %q is not served by this emulator", n)
			}
			hubs = append(hubs, h)
		}
	}
	d := e.dps
	res := &SeedResult{}
	groups := make([]*enrollment, s.Groups)
	for i := range groups {
		id := fmt.Sprintf("%s-g%d", s.Prefix, i)
		enabled := "enabled"
		body := enrollmentJSON{EnrollmentGroupID: id, ProvisioningStatus: &enabled, AllocationPolicy: "hashed"}
		sg := SeededGroup{ID: id}
		if s.Attestation == "x509" {
			ca, err := NewTestCA(id + "-ca")
			if err != nil {
				return nil, err
			}
			body.Attestation = &attestation{Type: "x509", X509: &x509Attestation{SigningCertificates: &x509Certificates{
				Primary: &x509CertificateWithInfo{Certificate: string(ca.CertPEM)}}}}
			sg.SigningCert, sg.SigningKey = string(ca.CertPEM), string(ca.KeyPEM)
		} else {
			body.Attestation = &attestation{Type: "symmetricKey", SymmetricKey: &symmetricKey{PrimaryKey: newKey(), SecondaryKey: newKey()}}
			sg.PrimaryKey = body.Attestation.SymmetricKey.PrimaryKey
		}
		en, err := d.normalize(&body, true, nil)
		if err != nil {
			return nil, err
		}
		en.body.CreatedDateTimeUtc, en.body.LastUpdatedDateTimeUtc, en.body.Etag = nowUTC(), nowUTC(), newDPSEtag()
		groups[i] = en
		res.Groups = append(res.Groups, sg)
	}
	now := nowUTC()
	perHub := make([]map[string]*device, len(hubs))
	for i := range perHub {
		perHub[i] = make(map[string]*device, s.Registrations/len(hubs)+1)
	}
	regs := make(map[string]*registration, s.Registrations)
	for j := 0; j < s.Registrations; j++ {
		gi := j % s.Groups
		g := groups[gi]
		rid := fmt.Sprintf("%s-g%d-d%d", s.Prefix, gi, j/s.Groups)
		hi := hashIndex(rid, len(hubs))
		dev := &device{id: rid, status: "enabled", statusUpdated: now, generationID: newGenerationID(), etag: newDeviceEtag(), twinVersion: 1}
		if s.Attestation == "x509" {
			dev.authType = "certificateAuthority"
		} else {
			k := g.body.Attestation.SymmetricKey
			dev.authType = "sas"
			dev.primaryKey, _ = DeriveDeviceKey(k.PrimaryKey, rid)
			dev.secondaryKey, _ = DeriveDeviceKey(k.SecondaryKey, rid)
		}
		perHub[hi][rid] = dev
		regs[strings.ToLower(rid)] = &registration{groupID: g.body.EnrollmentGroupID, state: registrationState{
			RegistrationID: rid, CreatedDateTimeUtc: now, AssignedHub: hubs[hi].host, DeviceID: rid,
			Status: "assigned", Substatus: "initialAssignment", LastUpdatedDateTimeUtc: now, Etag: newDPSEtag()}}
		res.Groups[gi].Registrations++
	}
	d.mu.Lock()
	for _, g := range groups {
		d.groups[strings.ToLower(g.body.EnrollmentGroupID)] = g
	}
	for k, v := range regs {
		d.regs[k] = v
	}
	for i, h := range hubs {
		h.mu.Lock()
		for k, v := range perHub[i] {
			h.devices[k] = v
		}
		h.mu.Unlock()
	}
	d.mu.Unlock()
	res.Registrations = s.Registrations
	res.Elapsed = Duration(time.Since(start))
	return res, nil
}

// Reset empties DPS and every hub, clears faults and stats, and restores the configured
// throttle. Keys and the CA stay.
func (e *Emulator) Reset() {
	e.dps.reset()
	e.dps.cas.reset()
	for _, h := range e.hubList {
		h.reset()
		h.bucket.set(e.opts.ThrottlePerMinute)
		h.qbucket.set(e.opts.QueryThrottlePerMinute)
	}
	e.dps.opsBucket.set(e.opts.DPSOperationsPerMinute)
	e.dps.regBucket.set(e.opts.DPSRegistrationsPerMinute)
	e.backlog.Store(int64(e.opts.ThrottleBacklog))
	e.ClearFaults()
	e.ResetStats()
}

// SetThrottle changes a hub's identity-registry and query budgets (operations per minute,
// 0 = unlimited) and refills its buckets. An empty hub name applies to every hub.
func (e *Emulator) SetThrottle(hubName string, perMinute, queriesPerMinute int) error {
	if perMinute < 0 || queriesPerMinute < 0 {
		return fmt.Errorf("throttle limits must not be negative")
	}
	hubs := e.hubList
	if hubName != "" {
		h := e.hubByName(hubName)
		if h == nil {
			return fmt.Errorf("hub %q is not served by this emulator", hubName)
		}
		hubs = []*hub{h}
	}
	for _, h := range hubs {
		h.bucket.set(perMinute)
		h.qbucket.set(queriesPerMinute)
	}
	return nil
}

// SetDPSThrottle changes the DPS instance's budgets of service operations and of device
// registrations (per minute, 0 = unlimited) and refills them.
func (e *Emulator) SetDPSThrottle(operationsPerMinute, registrationsPerMinute int) error {
	if operationsPerMinute < 0 || registrationsPerMinute < 0 {
		return fmt.Errorf("throttle limits must not be negative")
	}
	e.dps.opsBucket.set(operationsPerMinute)
	e.dps.regBucket.set(registrationsPerMinute)
	return nil
}

// SetThrottleBacklog changes how long the hubs hold calls over their budget before they
// answer 429 (0: at once). See [Options.ThrottleBacklog].
func (e *Emulator) SetThrottleBacklog(d time.Duration) error {
	if d < 0 {
		return fmt.Errorf("throttle backlog %v is negative", d)
	}
	e.backlog.Store(int64(d))
	return nil
}

// serveAdmin serves the /_emulator/ control endpoints (documented in docs/emulator.md).
func (e *Emulator) serveAdmin(w http.ResponseWriter, r *http.Request) {
	fail := func(status int, err error) {
		writeJSON(w, status, map[string]string{"error": err.Error()})
	}
	p := strings.TrimPrefix(r.URL.Path, "/_emulator/")
	if e.serveCAAdmin(w, r, p) {
		return
	}
	switch {
	case p == "info" && r.Method == http.MethodGet:
		writeJSON(w, http.StatusOK, e.Info())
	case p == "seed" && r.Method == http.MethodPost:
		var s SeedSpec
		if err := readJSON(r, &s); err != nil {
			fail(http.StatusBadRequest, err)
			return
		}
		res, err := e.Seed(s)
		if err != nil {
			fail(http.StatusBadRequest, err)
			return
		}
		writeJSON(w, http.StatusOK, res)
	case p == "faults" && r.Method == http.MethodGet:
		writeJSON(w, http.StatusOK, e.Faults())
	case p == "faults" && r.Method == http.MethodPost:
		var f Fault
		if err := readJSON(r, &f); err != nil {
			fail(http.StatusBadRequest, err)
			return
		}
		if err := e.AddFault(f); err != nil {
			fail(http.StatusBadRequest, err)
			return
		}
		writeJSON(w, http.StatusOK, e.Faults())
	case p == "faults" && r.Method == http.MethodDelete:
		e.ClearFaults()
		w.WriteHeader(http.StatusNoContent)
	case p == "throttle" && r.Method == http.MethodPut:
		var t struct {
			Hub              string `json:"hub"`
			PerMinute        int    `json:"perMinute"`
			QueriesPerMinute int    `json:"queriesPerMinute"`
			// The DPS budgets and the hubs' backlog change only when given.
			DPSOperationsPerMinute    *int      `json:"dpsOperationsPerMinute"`
			DPSRegistrationsPerMinute *int      `json:"dpsRegistrationsPerMinute"`
			Backlog                   *Duration `json:"backlog"`
		}
		if err := readJSON(r, &t); err != nil {
			fail(http.StatusBadRequest, err)
			return
		}
		if err := e.SetThrottle(t.Hub, t.PerMinute, t.QueriesPerMinute); err != nil {
			fail(http.StatusBadRequest, err)
			return
		}
		if t.DPSOperationsPerMinute != nil || t.DPSRegistrationsPerMinute != nil {
			ops, regs := e.dps.opsBucket.limit(), e.dps.regBucket.limit()
			if t.DPSOperationsPerMinute != nil {
				ops = *t.DPSOperationsPerMinute
			}
			if t.DPSRegistrationsPerMinute != nil {
				regs = *t.DPSRegistrationsPerMinute
			}
			if err := e.SetDPSThrottle(ops, regs); err != nil {
				fail(http.StatusBadRequest, err)
				return
			}
		}
		if t.Backlog != nil {
			if err := e.SetThrottleBacklog(time.Duration(*t.Backlog)); err != nil {
				fail(http.StatusBadRequest, err)
				return
			}
		}
		w.WriteHeader(http.StatusNoContent)
	case p == "latency" && r.Method == http.MethodPut:
		var l struct {
			Latency Duration `json:"latency"`
		}
		if err := readJSON(r, &l); err != nil {
			fail(http.StatusBadRequest, err)
			return
		}
		e.SetLatency(time.Duration(l.Latency))
		w.WriteHeader(http.StatusNoContent)
	case p == "stats" && r.Method == http.MethodGet:
		writeJSON(w, http.StatusOK, e.Stats())
	case p == "stats" && r.Method == http.MethodDelete:
		e.ResetStats()
		w.WriteHeader(http.StatusNoContent)
	case p == "reset" && r.Method == http.MethodPost:
		e.Reset()
		w.WriteHeader(http.StatusNoContent)
	case e.serveActivity(w, r, p):
	default:
		fail(http.StatusNotFound, fmt.Errorf("no admin endpoint %s %s", r.Method, r.URL.Path))
	}
}
