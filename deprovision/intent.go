package deprovision

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Intents lists every intent, in the order docs/policy.md presents them.
var Intents = []Intent{
	IntentCompromised, IntentStolen, IntentLost, IntentRecovered, IntentSold,
	IntentMoved, IntentRetired, IntentGroupCompromised, IntentGroupRetired,
	IntentReEnrolled, IntentOrphaned,
}

// Valid reports whether i is one of [Intents].
func (i Intent) Valid() bool {
	for _, k := range Intents {
		if i == k {
			return true
		}
	}
	return false
}

// GroupWide reports whether i acts on a whole enrollment group rather than on one device.
func (i Intent) GroupWide() bool {
	return i == IntentGroupCompromised || i == IntentGroupRetired
}

// Revoking reports whether i takes a device's access away.
func (i Intent) Revoking() bool {
	switch i {
	case IntentCompromised, IntentStolen, IntentLost, IntentSold, IntentRetired,
		IntentGroupCompromised, IntentGroupRetired:
		return true
	}
	return false
}

// Final reports whether i ends a device's life in this system (sold, retired): nothing after
// it may bring the device back.
func (i Intent) Final() bool { return i == IntentSold || i == IntentRetired }

// rank orders intents for precedence between conflicting events: a stale event is still
// applied when it outranks what the device row holds (docs/policy.md, "Conflicting events").
func (i Intent) rank() int {
	switch i {
	case IntentSold, IntentRetired:
		return 3
	case IntentCompromised, IntentReEnrolled:
		// re-enrolled ends a compromise, so it must outrank it; a compromise reported after
		// the re-enrollment outranks it in turn by being newer.
		return 2
	}
	return 1
}

// hubAction is the hub action for intent i and requested action a, or a refusal where policy
// allows no such choice.
func hubAction(i Intent, a Action) (Action, error) {
	switch i {
	case IntentCompromised, IntentGroupCompromised:
		// Disable keeps the identity as evidence; deleting it must be asked for explicitly.
		if a == ActionDefault {
			return ActionDisable, nil
		}
		return a, nil
	case IntentLost, IntentStolen:
		if a == ActionDelete {
			return "", refuse("%s is a reversible revocation: the hub identity is disabled, never deleted; send device-retired or device-sold to remove the device for good", i)
		}
		return ActionDisable, nil
	case IntentSold, IntentRetired, IntentGroupRetired, IntentMoved:
		if a == ActionDefault {
			return ActionDelete, nil
		}
		return a, nil
	case IntentRecovered:
		if a != ActionDefault {
			return "", refuse("recovered takes no action (got %q): it undoes this system's own lost/stolen revocation", a)
		}
		return ActionDefault, nil
	}
	return "", refuse("unknown intent %q", i)
}

// Validate checks that r is complete enough to be resolved; the error is a [Refusal] naming
// what is missing or wrong.
func (r Request) Validate() error {
	var bad []string
	if r.EventID == "" {
		bad = append(bad, "event id is empty")
	}
	if r.Source == "" {
		bad = append(bad, "source is empty")
	}
	switch {
	case !r.Intent.Valid():
		bad = append(bad, fmt.Sprintf("intent %q is not one of %v", r.Intent, Intents))
	case r.Intent.GroupWide():
		if r.EnrollmentGroupID == "" {
			bad = append(bad, fmt.Sprintf("%s needs enrollmentGroupId", r.Intent))
		}
	default:
		if r.RegistrationID == "" && r.CertificatePEM == "" {
			bad = append(bad, fmt.Sprintf("%s needs registrationId (or a certificate whose CN is the registration id)", r.Intent))
		}
	}
	if r.RegistrationID != "" {
		if err := checkRegistrationID(r.RegistrationID); err != nil {
			bad = append(bad, err.Error())
		}
	}
	switch r.Action {
	case ActionDefault, ActionDisable, ActionDelete:
	default:
		bad = append(bad, fmt.Sprintf("action %q is not disable or delete", r.Action))
	}
	if r.Intent == IntentMoved && r.TargetHub == "" {
		bad = append(bad, "moved needs targetHub (the host name of the hub the device moves to)")
	}
	if len(bad) > 0 {
		return &Refusal{Reason: "invalid request: " + strings.Join(bad, "; ")}
	}
	return nil
}

// checkRegistrationID applies DPS's rules: at most 128 characters, alphanumerics and - . _ :,
// no special character first or last.
func checkRegistrationID(id string) error {
	if utf8.RuneCountInString(id) > 128 {
		return fmt.Errorf("registrationId is longer than 128 characters")
	}
	for i, c := range id {
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if alnum {
			continue
		}
		if !strings.ContainsRune("-._:", c) {
			return fmt.Errorf("registrationId %q has %q: only letters, digits and - . _ : are allowed", id, c)
		}
		if i == 0 || i == len(id)-1 {
			return fmt.Errorf("registrationId %q starts or ends with %q", id, c)
		}
	}
	return nil
}
