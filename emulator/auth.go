package emulator

import (
	"fmt"
	"net/http"
	"strings"
	"time"
)

// perm is a shared-access-policy permission.
type perm uint16

// DPS permissions.
const (
	permServiceConfig perm = 1 << iota
	permEnrollmentRead
	permEnrollmentWrite
	permRegistrationRead
	permRegistrationWrite
)

// IoT Hub permissions.
const (
	permRegistryRead perm = 1 << (iota + 8)
	permRegistryWrite
	permServiceConnect
	permDeviceConnect
)

// policy is a shared access policy with its two keys.
type policy struct {
	name               string
	primary, secondary string
	perms              perm
}

func newPolicy(name string, p perm) *policy {
	return &policy{name: name, primary: newKey(), secondary: newKey(), perms: p}
}

// authorize checks the request's Authorization header for a service API: a SAS token for
// resource signed by one of policies and granting need (authenticate-authorize-sas.md for
// hubs, how-to-control-access.md for DPS: format, signature, permissions per operation), or,
// when enabled, a bearer JWT for audience (authenticate-authorize-azure-ad.md,
// concepts-control-access-dps-azure-ad.md). It returns a reason when the call must be
// refused with 401.
func (e *Emulator) authorize(r *http.Request, resource, audience string, policies map[string]*policy, need perm) (string, bool) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return "the Authorization header is missing", false
	}
	if len(h) > 7 && strings.EqualFold(h[:7], "Bearer ") {
		if !e.opts.AcceptBearer {
			return "bearer tokens are not enabled on this emulator", false
		}
		if err := verifyBearer(strings.TrimSpace(h[7:]), audience, e.opts.BearerKey, time.Now()); err != nil {
			return err.Error(), false
		}
		return "", true
	}
	t, err := parseSAS(h)
	if err != nil {
		return err.Error(), false
	}
	if !t.coversResource(resource) {
		return fmt.Sprintf("SAS token resource %q does not cover %s", t.sr, resource), false
	}
	p := policies[t.skn]
	if p == nil {
		return fmt.Sprintf("shared access policy %q does not exist", t.skn), false
	}
	if err := t.verify(p.primary, time.Now()); err != nil {
		if err2 := t.verify(p.secondary, time.Now()); err2 != nil {
			return err.Error(), false
		}
	}
	if p.perms&need != need {
		return fmt.Sprintf("shared access policy %q lacks the permission this operation needs", t.skn), false
	}
	return "", true
}
