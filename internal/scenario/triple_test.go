package scenario_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"dpsdeprov/deprovision"
	"dpsdeprov/handler"
	"dpsdeprov/internal/testenv"
)

// eventFor renders req as the Event Grid event a sender would publish for it.
func eventFor(req deprovision.Request, at time.Time) map[string]any {
	typ := "device-" + string(req.Intent)
	if req.Intent.GroupWide() {
		typ = "enrollment-" + string(req.Intent)
	}
	data := map[string]any{}
	for k, v := range map[string]string{"registrationId": req.RegistrationID, "enrollmentGroupId": req.EnrollmentGroupID,
		"certificate": req.CertificatePEM, "targetHub": req.TargetHub, "iotHub": req.Hub, "reason": req.Reason} {
		if v != "" {
			data[k] = v
		}
	}
	return map[string]any{"id": "evt-" + req.EventID, "topic": req.Source, "subject": "devices/" + req.RegistrationID,
		"eventType": typ, "eventTime": at.Format(time.RFC3339Nano), "data": data, "dataVersion": "1.0", "metadataVersion": "1"}
}

// handlerServer serves the real custom handler over e's engine, as the Functions host calls it.
func (e *env) handlerServer() *httptest.Server {
	e.t.Helper()
	h, err := handler.New(handler.Options{Engine: e.engine(nil), Admission: handler.Admission{Events: handler.DefaultEventTypes()}, Clock: e.clock})
	if err != nil {
		e.t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	e.t.Cleanup(srv.Close)
	return srv
}

// deliverEvent posts one DeviceEvents invocation as the host does, and delivers it again
// while the answer says another delivery holds the device or the operation (Event Grid's
// retry, without its back-off), until that delivery has ended; it returns the number of
// attempts.
func deliverEvent(t *testing.T, srv *httptest.Server, event map[string]any) (int, error) {
	body, _ := json.Marshal(map[string]any{"Data": map[string]any{"event": event}, "Metadata": map[string]any{}})
	attempt := 0
	var err error
	werr := testenv.WaitFor(testenv.Context(t), func() bool {
		attempt++
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/"+handler.FunctionDeviceEvents, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Azure-Functions-InvocationId", fmt.Sprintf("inv-%d", attempt))
		resp, derr := http.DefaultClient.Do(req)
		if derr != nil {
			err = derr
			return true
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		switch {
		case resp.StatusCode/100 == 2:
			err = nil
			return true
		case !strings.Contains(string(b), "busy") && !strings.Contains(string(b), "another delivery") && !strings.Contains(string(b), "being changed"):
			err = fmt.Errorf("delivery answered %d: %s", resp.StatusCode, b)
			return true
		}
		err = fmt.Errorf("still busy after %d deliveries: %s", attempt, b)
		return false
	})
	if werr != nil {
		return attempt, fmt.Errorf("%w: %v", werr, err)
	}
	return attempt, err
}

// TestTripleDelivery delivers each path's event three times at once through the real
// handler over HTTP, and checks it ends as one operation with the writes and end state of a
// single delivery.
func TestTripleDelivery(t *testing.T) {
	for _, p := range faultPaths() {
		t.Run(p.name, func(t *testing.T) {
			one := newFaultEnv(t)
			req, ids, groups := p.setup(one)
			at := one.clock.Now().Add(-time.Minute)
			one.em.ResetStats()
			if _, err := deliverEvent(t, one.handlerServer(), eventFor(req, at)); err != nil {
				t.Fatal(err)
			}
			one.groupWork(nil) // a group fanned out: the GroupWork function applies its batches
			opID := deprovision.OperationID(req.Source, "evt-"+req.EventID)
			want, wantWrites := one.state(t, opID, req.RegistrationID, ids, groups), one.writesByOp()
			if !strings.Contains(want, "operation succeeded") {
				t.Fatalf("single delivery did not succeed:\n%s", want)
			}

			e := newFaultEnv(t)
			e.clock.t = one.clock.Now()
			p.setup(e)
			e.em.ResetStats()
			srv := e.handlerServer()
			var wg sync.WaitGroup
			attempts := make([]int, 3)
			errs := make([]error, 3)
			for i := range 3 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					attempts[i], errs[i] = deliverEvent(t, srv, eventFor(req, at))
				}()
			}
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Fatalf("delivery %d: %v", i+1, err)
				}
			}
			e.groupWork(nil)
			for o, err := range e.ports.Journal.OpenOperations(t.Context(), e.clock.Now().Add(24*time.Hour)) {
				if err != nil {
					t.Fatal(err)
				}
				t.Errorf("operation %s left %s", o.ID, o.Status)
			}
			if got := e.state(t, opID, req.RegistrationID, ids, groups); got != want {
				t.Fatalf("three concurrent deliveries end differently from one\n%s\nwant\n%s", got, want)
			}
			if got := e.writesByOp(); fmt.Sprint(got) != fmt.Sprint(wantWrites) {
				t.Fatalf("three concurrent deliveries wrote %v, one delivery writes %v", got, wantWrites)
			}
			if !req.Intent.GroupWide() {
				_, hist, err := e.engine(nil).DeviceHistory(t.Context(), req.RegistrationID)
				if err != nil {
					t.Fatal(err)
				}
				ops := 0
				for _, h := range hist {
					if h.OperationID == opID {
						ops++
					}
				}
				if ops != 1 {
					t.Fatalf("device history holds %d rows for the event's operation: %+v", ops, hist)
				}
			}
			t.Logf("deliveries answered 2xx after %v attempts", attempts)
		})
	}
}
