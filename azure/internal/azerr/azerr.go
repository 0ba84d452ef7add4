// Package azerr classifies the failures of calls to Azure services (DPS, IoT Hub, Table and
// Queue Storage) for the engine, in one place: which answers and which connection failures
// are worth trying again later, and how a service's answer reaches the engine as a
// [deprovision.ServiceError] (status and error code), without the engine importing the SDK.
package azerr

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"syscall"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"

	"dpsdeprov/deprovision"
)

// TransientStatus reports whether a call the service answered with status may succeed if it
// is made again later: 408 Request Timeout, 429 Too Many Requests and every 5xx. Any other
// answer (400, 401, 403, 404, 409, 412, …) says something about the request, which will not
// change by itself.
func TransientStatus(status int) bool {
	return status == http.StatusRequestTimeout || status == http.StatusTooManyRequests || status >= 500
}

// TransportFailure reports whether err is a timeout, a cancellation (the invocation ended
// before the call did) or a connection that failed or dropped: the call never got an answer,
// and may be made again later.
func TransportFailure(err error) bool {
	var ne net.Error
	var oe *net.OpError
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EPIPE) ||
		errors.As(err, &ne) || errors.As(err, &oe)
}

// Status returns the HTTP status of the service answer in err's chain, or 0.
func Status(err error) int {
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		return re.StatusCode
	}
	return 0
}

// Classify returns err, prefixed by what was being done (when what is not ""), as the engine
// reads it: a service's answer becomes a [deprovision.ServiceError] carrying its status and
// error code (the *azcore.ResponseError stays reachable with errors.As), 404, 409 and 412 are
// also [deprovision.ErrNotFound], [deprovision.ErrConflict] and
// [deprovision.ErrPreconditionFailed], and a [TransientStatus] or a [TransportFailure] is
// marked [deprovision.Transient]. Anything else is permanent.
func Classify(err error, what string) error {
	if err == nil {
		return nil
	}
	wrap := func(format string, args ...any) error {
		if what != "" {
			format, args = "%s: "+format, append([]any{what}, args...)
		}
		return fmt.Errorf(format, args...)
	}
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		se := &deprovision.ServiceError{StatusCode: re.StatusCode, ErrorCode: re.ErrorCode, Err: err}
		switch {
		case re.StatusCode == http.StatusNotFound:
			return wrap("%w: %w", deprovision.ErrNotFound, se)
		case re.StatusCode == http.StatusConflict:
			return wrap("%w: %w", deprovision.ErrConflict, se)
		case re.StatusCode == http.StatusPreconditionFailed:
			return wrap("%w: %w", deprovision.ErrPreconditionFailed, se)
		case TransientStatus(re.StatusCode):
			return deprovision.Transient(wrap("%w", se))
		}
		return wrap("%w", se)
	}
	if TransportFailure(err) {
		return deprovision.Transient(wrap("%w", err))
	}
	return wrap("%w", err)
}
