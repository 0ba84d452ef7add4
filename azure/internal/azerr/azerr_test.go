package azerr_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"

	"dpsdeprov/azure/internal/azerr"
	"dpsdeprov/deprovision"
)

// answer builds the *azcore.ResponseError of a service answer with status and error code.
func answer(status int, code string) error {
	req, _ := http.NewRequest(http.MethodGet, "https://hub1.azure-devices.net/devices/d", nil)
	resp := &http.Response{StatusCode: status, Status: http.StatusText(status), Request: req,
		Header: http.Header{"X-Ms-Error-Code": {code}}, Body: io.NopCloser(strings.NewReader(""))}
	return runtime.NewResponseError(resp)
}

func TestClassify(t *testing.T) {
	for _, c := range []struct {
		err       error
		transient bool
		sentinel  error
		status    int
		code      string
	}{
		{answer(404, "DeviceNotFound"), false, deprovision.ErrNotFound, 404, "DeviceNotFound"},
		{answer(409, "DeviceAlreadyExists"), false, deprovision.ErrConflict, 409, "DeviceAlreadyExists"},
		{answer(412, "PreconditionFailed"), false, deprovision.ErrPreconditionFailed, 412, "PreconditionFailed"},
		{answer(429, "ThrottlingException"), true, nil, 429, "ThrottlingException"},
		{answer(408, ""), true, nil, 408, ""},
		{answer(503, "ServerBusy"), true, nil, 503, "ServerBusy"},
		{answer(401, "IotHubUnauthorizedAccess"), false, nil, 401, "IotHubUnauthorizedAccess"},
		{answer(400, "ArgumentInvalid"), false, nil, 400, "ArgumentInvalid"},
		{fmt.Errorf("dialing: %w", context.DeadlineExceeded), true, nil, 0, ""},
		{io.ErrUnexpectedEOF, true, nil, 0, ""},
		{errors.New("malformed answer"), false, nil, 0, ""},
	} {
		err := azerr.Classify(c.err, "reading device d")
		if !strings.HasPrefix(err.Error(), "reading device d: ") && !strings.HasPrefix(err.Error(), "transient: reading device d: ") {
			t.Errorf("%v: %q does not say what was being done", c.err, err)
		}
		if deprovision.IsTransient(err) != c.transient {
			t.Errorf("%v: transient = %v, want %v", c.err, !c.transient, c.transient)
		}
		if c.sentinel != nil && !errors.Is(err, c.sentinel) {
			t.Errorf("%v: not %v", c.err, c.sentinel)
		}
		if s, code := deprovision.ServiceStatus(err); s != c.status || code != c.code {
			t.Errorf("%v: ServiceStatus = %d %q, want %d %q", c.err, s, code, c.status, c.code)
		}
		var re *azcore.ResponseError
		if c.status != 0 && !errors.As(err, &re) {
			t.Errorf("%v: the *azcore.ResponseError is not reachable", c.err)
		}
	}
	if azerr.Classify(nil, "x") != nil {
		t.Error("Classify(nil) is not nil")
	}
}
