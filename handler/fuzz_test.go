package handler

// Fuzz targets for everything that reads untrusted input: the host's envelopes (each
// trigger's), both event schemas, and the request normaliser. Seed corpora are in
// testdata/fuzz/<Target>/; scripts/fuzz.sh runs each target for minutes (not in CI, where
// `go test` runs the seeds only). docs/reliability.md records the runs and their findings.

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"dpsdeprov/deprovision"
)

var fuzzNow = time.Date(2024, 5, 1, 12, 0, 1, 0, time.UTC)

// FuzzEnvelope posts arbitrary invocation bodies to every function. Properties: no panic
// (a recovered one answers 500 "internal error", which fails here too), the answer is the
// host's JSON shape, and every event the engine was not asked to run was journaled as rejected
// with a non-empty reason.
func FuzzEnvelope(f *testing.F) {
	for _, name := range []string{"eventgrid.json", "cloudevent.json", "queue.json", "timer.json", "http-get.json", "http-post.json"} {
		f.Add(fixture(f, name))
	}
	f.Add([]byte(`{"Data":{"event":"{\"specversion\":\"1.0\"}"},"Metadata":{}}`))
	f.Add([]byte(`{"Data":{"event":[{"id":"a"},{"eventType":1}]}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		eng := newFakeEngine()
		h, err := New(Options{Engine: eng, GroupWorker: &recordingWorker{}, Cleaner: &recordingCleaner{}, Admission: hostileAdmission(), Clock: fixedClock(fuzzNow)})
		if err != nil {
			t.Fatal(err)
		}
		for _, fn := range []string{FunctionDeviceEvents, FunctionGroupWork, FunctionCleanup, FunctionOperations} {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/"+fn, bytes.NewReader(body)))
			var r result
			if !strings.HasPrefix(rec.Header().Get("Content-Type"), "application/json") || json.Unmarshal(rec.Body.Bytes(), &r) != nil {
				t.Fatalf("%s answered %d %q: %s", fn, rec.Code, rec.Header().Get("Content-Type"), rec.Body.Bytes())
			}
			if rec.Code != 200 && rec.Code != 500 {
				t.Fatalf("%s answered %d", fn, rec.Code)
			}
			if strings.Contains(strings.Join(r.Logs, "\n"), "internal error") {
				t.Fatalf("%s panicked: %v", fn, r.Logs)
			}
		}
		for id, reason := range eng.rejected {
			if strings.TrimSpace(reason) == "" {
				t.Fatalf("event %s rejected without a reason", id)
			}
			if strings.TrimSpace(id) == "" {
				t.Fatal("a rejection journaled without an event id")
			}
		}
		for _, req := range eng.submitted {
			if req.Source != APISource {
				assertValid(t, hostileAdmission(), req)
			}
		}
	})
}

// FuzzDecodeEvent decodes arbitrary bytes as one event. Properties: no panic; an error has a
// message; decoding is deterministic; an event that decodes has a schema and an identity
// that is safe to journal.
func FuzzDecodeEvent(f *testing.F) {
	for _, name := range []string{"eventgrid.json", "cloudevent.json"} {
		var inv invocation
		if err := json.Unmarshal(fixture(f, name), &inv); err != nil {
			f.Fatal(err)
		}
		f.Add([]byte(inv.Data[BindingEvent]))
	}
	f.Add([]byte(`{"specversion":"1.0","type":"t","source":"s","id":"i","data_base64":"e30="}`))
	f.Add([]byte(`{"eventType":"t","id":"i","eventTime":"2024-05-01T12:00:00Z","data":"{\"a\":1}"}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		ev, err := DecodeEvent(raw)
		ev2, err2 := DecodeEvent(raw)
		if (err == nil) != (err2 == nil) || !reflect.DeepEqual(ev, ev2) || err != nil && err.Error() != err2.Error() {
			t.Fatalf("not deterministic: %+v %v / %+v %v", ev, err, ev2, err2)
		}
		if err != nil {
			if strings.TrimSpace(err.Error()) == "" {
				t.Fatal("an error without a message")
			}
			return
		}
		if ev.Schema != SchemaCloudEvents && ev.Schema != SchemaEventGrid {
			t.Fatalf("decoded without a schema: %+v", ev)
		}
		if safeIdentity("id", ev.ID) != ev.ID || safeIdentity("source", ev.Source) != ev.Source {
			t.Fatalf("unsafe identity passed: %q %q", ev.ID, ev.Source)
		}
		if ev.Data != nil && (len(ev.Data) == 0 || ev.Data[0] != '{' || !json.Valid(ev.Data)) {
			t.Fatalf("data is not a JSON object: %q", ev.Data)
		}
	})
}

// FuzzNormalize decodes and normalises arbitrary events. Properties: no panic; a rejection
// has a reason; an accepted request passes every check again (and the engine's own
// validation), holds no secret, and normalising is deterministic.
func FuzzNormalize(f *testing.F) {
	for _, name := range []string{"eventgrid.json", "cloudevent.json"} {
		var inv invocation
		if err := json.Unmarshal(fixture(f, name), &inv); err != nil {
			f.Fatal(err)
		}
		f.Add([]byte(inv.Data[BindingEvent]))
	}
	f.Add([]byte(`{"specversion":"1.0","type":"device-moved","source":"/assets/inventory","id":"m1","time":"2024-05-01T12:00:00Z","data":{"registrationId":"d1","targetHub":"HUB2.azure-devices.net","iotHub":"hub1.azure-devices.net","action":"Delete","reason":"a\tb","dryRun":"true"}}`))
	f.Add([]byte(`{"specversion":"1.0","type":"enrollment-group-retired","source":"/x","id":"g1","subject":"enrollmentGroups/grp-1","data":{"deviceId":"a+b"}}`))
	p := hostileAdmission()
	f.Fuzz(func(t *testing.T, raw []byte) {
		ev, err := DecodeEvent(raw)
		if err != nil {
			return
		}
		req, rej := p.Normalize(ev, fuzzNow)
		req2, rej2 := p.Normalize(ev, fuzzNow)
		if !reflect.DeepEqual(req, req2) || !reflect.DeepEqual(rej, rej2) {
			t.Fatalf("not deterministic: %+v %v / %+v %v", req, rej, req2, rej2)
		}
		if rej != nil {
			if strings.TrimSpace(rej.Reason) == "" {
				t.Fatalf("rejected without a reason: %+v", req)
			}
			if redact(rej.Reason) != rej.Reason {
				t.Fatalf("the reason holds a secret: %q", rej.Reason)
			}
			return
		}
		assertValid(t, p, req)
	})
}

// assertValid re-checks an accepted request against every rule it passed.
func assertValid(t *testing.T, p Admission, req deprovision.Request) {
	t.Helper()
	if err := req.Validate(); err != nil {
		t.Fatalf("the engine refuses an accepted request: %v (%+v)", err, req)
	}
	if rej := checkIdentity(req); rej != nil {
		t.Fatalf("accepted with a bad identity: %s", rej.Reason)
	}
	checks := []*Rejection{refuseSecrets(req)}
	if req.RegistrationID != "" {
		checks = append(checks, checkRegistrationID("registrationId", req.RegistrationID))
	}
	if req.DeviceID != "" {
		checks = append(checks, checkDeviceID("deviceId", req.DeviceID))
	}
	if req.EnrollmentGroupID != "" {
		checks = append(checks, checkGroupID("enrollmentGroupId", req.EnrollmentGroupID))
	}
	for _, h := range []string{req.Hub, req.TargetHub} {
		if h != "" {
			got, rej := p.checkHub("hub", h)
			if rej == nil && got != h {
				t.Fatalf("hub %q not normalised to %q", h, got)
			}
			checks = append(checks, rej)
		}
	}
	if req.CertificatePEM != "" {
		_, rej := checkCertificate(req.CertificatePEM, req.RegistrationID, !req.Intent.GroupWide())
		checks = append(checks, rej)
	}
	if r, rej := cleanReason(req.Reason); rej != nil || r != req.Reason || redact(r) != r {
		t.Fatalf("accepted reason %q is not clean (%v)", req.Reason, rej)
	}
	for _, rej := range checks {
		if rej != nil {
			t.Fatalf("accepted, but a check refuses it: %s (%+v)", rej.Reason, req)
		}
	}
	if req.Intent.GroupWide() && req.EnrollmentGroupID == "" || !req.Intent.GroupWide() && req.RegistrationID == "" && req.CertificatePEM == "" {
		t.Fatalf("accepted without a subject: %+v", req)
	}
}
