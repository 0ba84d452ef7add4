package deprovision

import (
	"errors"
	"fmt"
)

// Refusal is a permanent "no" from validation, resolution or policy: the request is journaled as
// rejected with Reason, which says what is wrong and, where possible, what to send instead.
// A refusal is not retried: the handler answers 2xx so Event Grid stops redelivering.
type Refusal struct {
	Reason string
}

// Error returns the reason, marked as a refusal.
func (r *Refusal) Error() string { return "refused: " + r.Reason }

func refuse(format string, args ...any) error {
	return &Refusal{Reason: fmt.Sprintf(format, args...)}
}

// AsRefusal returns the [Refusal] in err's chain, if any.
func AsRefusal(err error) (*Refusal, bool) {
	var r *Refusal
	if errors.As(err, &r) {
		return r, true
	}
	return nil, false
}

// ErrBusy is returned (as a transient error) when another invocation holds the operation's
// lease or another operation holds the device: the caller retries later.
var ErrBusy = errors.New("busy")

// ServiceError is a service's answer to a call, as the adapters report it: the HTTP status and
// the service's error code, which the journal records with the step. Whether the failure is
// worth retrying is said by wrapping it in a [TransientError], and a 404, 409 or 412 is also
// [ErrNotFound], [ErrConflict] or [ErrPreconditionFailed] in the same chain.
type ServiceError struct {
	StatusCode int
	ErrorCode  string
	Err        error
}

// Error returns the wrapped error's text, or the status and code.
func (e *ServiceError) Error() string {
	if e.Err != nil {
		return e.Err.Error()
	}
	return fmt.Sprintf("service answered %d %s", e.StatusCode, e.ErrorCode)
}

// Unwrap returns the wrapped error.
func (e *ServiceError) Unwrap() error { return e.Err }

// ServiceStatus returns the HTTP status and service error code of the [ServiceError] in err's
// chain. Without one, the sentinel errors still say which answer it was (404, 409, 412);
// otherwise it returns zero values.
func ServiceStatus(err error) (status int, code string) {
	var se *ServiceError
	switch {
	case errors.As(err, &se):
		return se.StatusCode, se.ErrorCode
	case errors.Is(err, ErrNotFound):
		return 404, ""
	case errors.Is(err, ErrConflict):
		return 409, ""
	case errors.Is(err, ErrPreconditionFailed):
		return 412, ""
	}
	return 0, ""
}
