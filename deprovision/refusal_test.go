package deprovision_test

import (
	"errors"
	"fmt"
	"testing"

	d "dpsdeprov/deprovision"
)

func TestServiceStatus(t *testing.T) {
	for _, c := range []struct {
		err    error
		status int
		code   string
	}{
		{&d.ServiceError{StatusCode: 429, ErrorCode: "ThrottlingException"}, 429, "ThrottlingException"},
		{d.Transient(fmt.Errorf("disabling: %w", &d.ServiceError{StatusCode: 503, ErrorCode: "ServerBusy"})), 503, "ServerBusy"},
		{fmt.Errorf("a: %w: %w", d.ErrNotFound, &d.ServiceError{StatusCode: 404, ErrorCode: "DeviceNotFound"}), 404, "DeviceNotFound"},
		{fmt.Errorf("gone: %w", d.ErrPreconditionFailed), 412, ""},
		{fmt.Errorf("exists: %w", d.ErrConflict), 409, ""},
		{errors.New("plain"), 0, ""},
	} {
		s, code := d.ServiceStatus(c.err)
		if s != c.status || code != c.code {
			t.Errorf("ServiceStatus(%v) = %d %q, want %d %q", c.err, s, code, c.status, c.code)
		}
	}
}
