package deprovision

import (
	"errors"
	"fmt"
	"reflect"
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

// ServiceError carries what a service answered, so that the journal can record the HTTP status
// and the service's error code of a step. Adapters wrap their errors in it (or implement
// HTTPStatus/ServiceErrorCode methods, which [ServiceStatus] also understands).
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

// ServiceStatus extracts the HTTP status and service error code carried by err, or zero values.
// It understands [ServiceError] and any error with HTTPStatus() int and ServiceErrorCode() string
// methods, so that adapters need not import anything new.
func ServiceStatus(err error) (status int, code string) {
	var se *ServiceError
	if errors.As(err, &se) {
		return se.StatusCode, se.ErrorCode
	}
	var hs interface{ HTTPStatus() int }
	if errors.As(err, &hs) {
		status = hs.HTTPStatus()
	}
	var ec interface{ ServiceErrorCode() string }
	if errors.As(err, &ec) {
		code = ec.ServiceErrorCode()
	}
	if status == 0 {
		status, code = responseFields(err)
	}
	if status == 0 {
		// Without the adapter's help, the sentinel errors still say which answer it was.
		switch {
		case errors.Is(err, ErrNotFound):
			status = 404
		case errors.Is(err, ErrConflict):
			status = 409
		case errors.Is(err, ErrPreconditionFailed):
			status = 412
		}
	}
	return status, code
}

// responseFields finds, in err's chain, a service response error of the usual SDK shape (a
// struct with StatusCode int and ErrorCode string fields, as azcore.ResponseError has), so
// that the journal records the service's answer without this package importing an SDK.
func responseFields(err error) (int, string) {
	for _, e := range chain(err) {
		v := reflect.ValueOf(e)
		if v.Kind() == reflect.Pointer {
			v = v.Elem()
		}
		if v.Kind() != reflect.Struct {
			continue
		}
		sc, ec := v.FieldByName("StatusCode"), v.FieldByName("ErrorCode")
		if sc.IsValid() && sc.Kind() == reflect.Int && sc.Int() != 0 {
			code := ""
			if ec.IsValid() && ec.Kind() == reflect.String {
				code = ec.String()
			}
			return int(sc.Int()), code
		}
	}
	return 0, ""
}

// chain lists err and every error it wraps, depth first.
func chain(err error) []error {
	var out []error
	var walk func(error)
	walk = func(e error) {
		if e == nil || len(out) > 64 {
			return
		}
		out = append(out, e)
		switch u := e.(type) {
		case interface{ Unwrap() error }:
			walk(u.Unwrap())
		case interface{ Unwrap() []error }:
			for _, x := range u.Unwrap() {
				walk(x)
			}
		}
	}
	walk(err)
	return out
}
