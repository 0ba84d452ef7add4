// Package adapter makes the DPS and IoT Hub clients satisfy the deprovisioning engine's
// ports (deprovision.Enrollments, deprovision.Registrations, deprovision.Devices): it maps
// the engine's types onto the service models and service errors onto the engine's error
// kinds. The clients know nothing of deprovisioning, and the engine nothing of HTTP.
package adapter

import (
	"fmt"

	"dpsdeprov/azure/internal/azerr"
)

// mapError wraps err with what was being done and classifies it for the engine
// ([azerr.Classify]): 404 → deprovision.ErrNotFound, 409 → ErrConflict, 412 →
// ErrPreconditionFailed, every service answer a deprovision.ServiceError with its status and
// code, and 408, 429, 5xx, timeouts and connection failures deprovision.Transient. Anything
// else (401, 403, 400, a malformed answer) is permanent.
func mapError(err error, format string, args ...any) error {
	return azerr.Classify(err, fmt.Sprintf(format, args...))
}
