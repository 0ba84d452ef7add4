// Package adapter makes the DPS and IoT Hub clients satisfy the deprovisioning engine's
// ports (deprovision.Enrollments, deprovision.Registrations, deprovision.Devices): it maps
// the engine's types onto the service models and service errors onto the engine's error
// kinds. The clients know nothing of deprovisioning, and the engine nothing of HTTP.
package adapter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"syscall"

	"dpsdeprov/deprovision"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
)

// mapError wraps err with what was being done and classifies it for the engine:
// 404 → deprovision.ErrNotFound, 409 → ErrConflict, 412 → ErrPreconditionFailed (the
// original *azcore.ResponseError stays reachable with errors.As), and 408, 429, 5xx,
// timeouts and connection failures → deprovision.Transient. Anything else (401, 403, 400,
// a malformed answer) is permanent.
func mapError(err error, format string, args ...any) error {
	if err == nil {
		return nil
	}
	what := fmt.Sprintf(format, args...)
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		switch {
		case re.StatusCode == http.StatusNotFound:
			return fmt.Errorf("%s: %w: %w", what, deprovision.ErrNotFound, err)
		case re.StatusCode == http.StatusConflict:
			return fmt.Errorf("%s: %w: %w", what, deprovision.ErrConflict, err)
		case re.StatusCode == http.StatusPreconditionFailed:
			return fmt.Errorf("%s: %w: %w", what, deprovision.ErrPreconditionFailed, err)
		case re.StatusCode == http.StatusRequestTimeout, re.StatusCode == http.StatusTooManyRequests, re.StatusCode >= 500:
			return deprovision.Transient(fmt.Errorf("%s: %w", what, err))
		}
		return fmt.Errorf("%s: %w", what, err)
	}
	if isTransportFailure(err) {
		return deprovision.Transient(fmt.Errorf("%s: %w", what, err))
	}
	return fmt.Errorf("%s: %w", what, err)
}

// isTransportFailure reports whether err is a timeout, a cancellation (the invocation
// ended before the call did) or a connection that failed or dropped: the request may be
// tried again later.
func isTransportFailure(err error) bool {
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.EPIPE),
		errors.As(err, &ne):
		return true
	}
	var oe *net.OpError
	return errors.As(err, &oe)
}
