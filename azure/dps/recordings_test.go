package dps_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"dpsdeprov/azure/dps"
	"dpsdeprov/internal/recorded"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
)

// TestDecodesRecordedAnswers feeds the client what DPS really answered, as recorded by the
// Python SDK's tests (the shared reference recordings), call by call: the client must send
// the recorded call (method, path, If-Match as the service took it), decode every answer
// without losing a field the service filled, and classify every refusal by its status and
// six-digit code. No emulator is involved.
func TestDecodesRecordedAnswers(t *testing.T) {
	calls := 0
	for _, set := range recorded.Sets(t, "dps") {
		t.Run(set.Name, func(t *testing.T) {
			for i := range set.Entries {
				checkDPSCall(t, &set.Entries[i])
				calls++
			}
		})
	}
	t.Logf("%d recorded calls decoded", calls)
}

func checkDPSCall(t *testing.T, e *recorded.Entry) {
	t.Helper()
	tr := &recorded.Transport{}
	c, err := dps.NewClientFromConnectionString("HostName="+e.URL.Host+";SharedAccessKeyName=provisioningserviceowner;SharedAccessKey=Kg==",
		&dps.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: tr, Retry: policy.RetryOptions{MaxRetries: -1}}})
	if err != nil {
		t.Fatal(err)
	}
	tr.Expect(e)
	label := e.Method + " " + e.URL.Path
	model, err := callDPS(context.Background(), c, e)
	if err != nil && errors.Is(err, errNotAClientCall) {
		t.Logf("%s: not a call of the client", label)
		return
	}
	sent, _ := tr.Sent()
	if sent == nil {
		t.Fatalf("%s: the client sent nothing (%v)", label, err)
	}
	if want := e.RequestHeader.Get("If-Match"); want != "" && sent.Header.Get("If-Match") != want {
		t.Errorf("%s: If-Match %q, the recorded client sent %q, which the service took", label, sent.Header.Get("If-Match"), want)
	}
	if e.Status >= 300 {
		var re *azcore.ResponseError
		if !errors.As(err, &re) || re.StatusCode != e.Status {
			t.Fatalf("%s: recorded %d, the client returned %v", label, e.Status, err)
		}
		if want := recordedDPSCode(e); re.ErrorCode != want {
			t.Errorf("%s: error code %q, recorded %q", label, re.ErrorCode, want)
		}
		classified := map[int]bool{404: dps.IsNotFound(err), 409: dps.IsConflict(err), 412: dps.IsPreconditionFailed(err), 429: dps.IsThrottled(err)}
		for st, got := range classified {
			if got != (st == e.Status) {
				t.Errorf("%s: classified as %d = %v for a recorded %d", label, st, got, e.Status)
			}
		}
		return
	}
	if err != nil {
		t.Fatalf("%s: recorded %d, the client failed: %v", label, e.Status, err)
	}
	if e.Body == nil || model == nil {
		return
	}
	lost, err := recorded.Lost(e.Body, model)
	if err != nil {
		t.Fatal(err)
	}
	if len(lost) > 0 {
		t.Errorf("%s: the client drops %v of the recorded answer %s", label, lost, e.Body)
	}
}

var errNotAClientCall = errors.New("not a call the client makes")

// recordedDPSCode is the six-digit code of a recorded DPS error.
func recordedDPSCode(e *recorded.Entry) string {
	if c := e.Header.Get("x-ms-error-code"); c != "" {
		return c
	}
	var b struct {
		ErrorCode json.Number `json:"errorCode"`
	}
	_ = json.Unmarshal(e.Body, &b)
	return b.ErrorCode.String()
}

// callDPS makes the client call that sends the recorded request and returns what it decoded.
func callDPS(ctx context.Context, c *dps.Client, e *recorded.Entry) (any, error) {
	segs := strings.Split(strings.Trim(e.URL.EscapedPath(), "/"), "/")
	id := ""
	if len(segs) > 1 {
		id, _ = url.PathUnescape(segs[1])
	}
	var ifMatch *azcore.ETag
	if v := e.RequestHeader.Get("If-Match"); v != "" {
		m := azcore.ETag(v)
		ifMatch = &m
	}
	res := strings.ToLower(segs[0])
	switch {
	case res == "enrollments" && len(segs) == 2 && e.Method == http.MethodPut:
		var body dps.IndividualEnrollment
		if err := json.Unmarshal(e.RequestBody, &body); err != nil {
			return nil, err
		}
		r, err := c.CreateOrUpdateEnrollment(ctx, body, &dps.CreateOrUpdateEnrollmentOptions{IfMatch: ifMatch})
		return &r.IndividualEnrollment, err
	case res == "enrollments" && len(segs) == 2 && segs[1] == "query":
		return queryPage(ctx, c.NewQueryEnrollmentsPager(queryText(e), &dps.QueryOptions{ContinuationToken: e.RequestHeader.Get("x-ms-continuation")}))
	case res == "enrollments" && len(segs) == 2 && e.Method == http.MethodGet:
		r, err := c.GetEnrollment(ctx, id, nil)
		return &r.IndividualEnrollment, err
	case res == "enrollments" && len(segs) == 2 && e.Method == http.MethodDelete:
		_, err := c.DeleteEnrollment(ctx, id, &dps.DeleteEnrollmentOptions{IfMatch: ifMatch})
		return nil, err
	case res == "enrollments" && len(segs) == 3:
		r, err := c.GetEnrollmentAttestationMechanism(ctx, id, nil)
		return &r.AttestationMechanism, err
	case res == "enrollmentgroups" && len(segs) == 2 && e.Method == http.MethodPut:
		var body dps.EnrollmentGroup
		if err := json.Unmarshal(e.RequestBody, &body); err != nil {
			return nil, err
		}
		r, err := c.CreateOrUpdateEnrollmentGroup(ctx, body, &dps.CreateOrUpdateEnrollmentGroupOptions{IfMatch: ifMatch})
		return &r.EnrollmentGroup, err
	case res == "enrollmentgroups" && len(segs) == 2 && segs[1] == "query":
		return queryPage(ctx, c.NewQueryEnrollmentGroupsPager(queryText(e), &dps.QueryOptions{ContinuationToken: e.RequestHeader.Get("x-ms-continuation")}))
	case res == "enrollmentgroups" && len(segs) == 2 && e.Method == http.MethodGet:
		r, err := c.GetEnrollmentGroup(ctx, id, nil)
		return &r.EnrollmentGroup, err
	case res == "enrollmentgroups" && len(segs) == 2 && e.Method == http.MethodDelete:
		_, err := c.DeleteEnrollmentGroup(ctx, id, &dps.DeleteEnrollmentGroupOptions{IfMatch: ifMatch})
		return nil, err
	case res == "enrollmentgroups" && len(segs) == 3:
		r, err := c.GetEnrollmentGroupAttestationMechanism(ctx, id, nil)
		return &r.AttestationMechanism, err
	case res == "registrations" && len(segs) == 3:
		return queryPage(ctx, c.NewQueryRegistrationStatesPager(id, &dps.QueryOptions{ContinuationToken: e.RequestHeader.Get("x-ms-continuation")}))
	case res == "registrations" && e.Method == http.MethodGet:
		r, err := c.GetRegistrationState(ctx, id, nil)
		return &r.DeviceRegistrationState, err
	case res == "registrations" && e.Method == http.MethodDelete:
		_, err := c.DeleteRegistrationState(ctx, id, &dps.DeleteRegistrationStateOptions{IfMatch: ifMatch})
		return nil, err
	}
	return nil, errNotAClientCall
}

func queryText(e *recorded.Entry) string {
	var q struct{ Query string }
	_ = json.Unmarshal(e.RequestBody, &q)
	return q.Query
}

// pager is what the three query pagers have in common.
type pager[P any] interface {
	NextPage(context.Context) (P, error)
}

// queryPage fetches one page and returns its items.
func queryPage[P any](ctx context.Context, p pager[P]) (any, error) {
	page, err := p.NextPage(ctx)
	if err != nil {
		return nil, err
	}
	switch pg := any(page).(type) {
	case dps.QueryEnrollmentsResponse:
		return pg.Enrollments, nil
	case dps.QueryEnrollmentGroupsResponse:
		return pg.EnrollmentGroups, nil
	case dps.QueryRegistrationStatesResponse:
		return pg.RegistrationStates, nil
	}
	return nil, errors.New("unknown page type")
}

// TestDecodesRecordedBulkResults: the per-item results DPS answered to bulk operations, as
// recorded by the Python SDK's tests (Azure/azure-sdk-for-python,
// sdk/deviceprovisioningservices/azure-iot-deviceprovisioning/tests/recordings,
// test_individual_enrollment_bulk_operations and test_enrollment_group_bulk_operations @
// 82e35721e813b36efc0bee61a9e3e43a2c64d6fe: items that exist fail with 409201 "Enrollment
// already exists." and 409202 "EnrollmentGroup already exists." in a 200 answer), restated.
func TestDecodesRecordedBulkResults(t *testing.T) {
	ctx := context.Background()
	answer := func(path, body string) *recorded.Entry {
		u, _ := url.Parse("https://fake-resource.azure-devices-provisioning.net" + path)
		return &recorded.Entry{Method: http.MethodPost, URL: u, Status: 200, Header: http.Header{"Content-Type": {"application/json; charset=utf-8"}}, Body: []byte(body)}
	}
	tr := &recorded.Transport{}
	c, err := dps.NewClientFromConnectionString("HostName=fake-resource.azure-devices-provisioning.net;SharedAccessKeyName=provisioningserviceowner;SharedAccessKey=Kg==",
		&dps.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: tr}})
	if err != nil {
		t.Fatal(err)
	}
	tr.Expect(answer("/enrollments", `{"errors":[{"registrationId":"ind_enroll_tpm","errorCode":409201,"errorStatus":"Enrollment already exists."},{"registrationId":"sym_key_enrollment","errorCode":409201,"errorStatus":"Enrollment already exists."}],"isSuccessful":false}`))
	r, err := c.RunEnrollmentBulkOperation(ctx, dps.BulkEnrollmentOperation{Mode: dps.BulkOperationModeUpdate,
		Enrollments: []dps.IndividualEnrollment{{RegistrationID: "ind_enroll_tpm", Attestation: &dps.AttestationMechanism{Type: dps.AttestationTypeTPM}}}}, nil)
	if err != nil || r.IsSuccessful || len(r.Errors) != 2 || r.Errors[0].ErrorCode != 409201 || r.Errors[1].RegistrationID != "sym_key_enrollment" || r.Errors[0].ErrorStatus == "" {
		t.Fatalf("enrollment bulk result %+v, %v", r, err)
	}
	tr.Expect(answer("/enrollmentGroups", `{"errors":[{"enrollmentGroupId":"x509_enroll_grp","errorCode":409202,"errorStatus":"EnrollmentGroup already exists."}],"isSuccessful":false}`))
	g, err := c.RunEnrollmentGroupBulkOperation(ctx, dps.BulkEnrollmentGroupOperation{Mode: dps.BulkOperationModeUpdate,
		EnrollmentGroups: []dps.EnrollmentGroup{{EnrollmentGroupID: "x509_enroll_grp", Attestation: &dps.AttestationMechanism{Type: dps.AttestationTypeSymmetricKey}}}}, nil)
	if err != nil || g.IsSuccessful || len(g.Errors) != 1 || g.Errors[0].ErrorCode != 409202 || g.Errors[0].EnrollmentGroupID != "x509_enroll_grp" {
		t.Fatalf("group bulk result %+v, %v", g, err)
	}
	tr.Expect(answer("/enrollments", `{"errors":[],"isSuccessful":true}`))
	if r, err := c.RunEnrollmentBulkOperation(ctx, dps.BulkEnrollmentOperation{Mode: dps.BulkOperationModeDelete,
		Enrollments: []dps.IndividualEnrollment{{RegistrationID: "a", Attestation: &dps.AttestationMechanism{Type: dps.AttestationTypeTPM}}}}, nil); err != nil || !r.IsSuccessful {
		t.Fatalf("successful bulk result %+v, %v", r, err)
	}
}
