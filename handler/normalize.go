package handler

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"dpsdeprov/config"
	"dpsdeprov/deprovision"
)

// Admission holds the checks applied to every request before the engine sees it.
type Admission struct {
	// Events maps event types to intents.
	Events EventTypes
	// AllowedSources lists, per intent, the sources allowed to ask for it. An intent absent
	// from the map accepts any source.
	AllowedSources map[deprovision.Intent][]string
	// DryRun makes every request a dry run, whatever it says.
	DryRun bool
	// MaxEventAge rejects events older than this (0: no limit). Event Grid retries for up to
	// 24 hours, so a limit below that rejects redeliveries of events that failed transiently.
	MaxEventAge time.Duration
	// Hubs are the host names of the hubs this deployment manages; an event naming another
	// hub (iotHub, targetHub) is rejected before any call. Empty: any host name is accepted
	// here (the engine still refuses a device in a hub it does not manage).
	Hubs []string
}

// Rejection is a permanent refusal of an event, with a reason a person can act on.
type Rejection struct{ Reason string }

// Error returns the reason.
func (r *Rejection) Error() string { return r.Reason }

func reject(format string, args ...any) *Rejection {
	return &Rejection{Reason: fmt.Sprintf(format, args...)}
}

// AllowedSourcesSetting names the app setting that lists the sources allowed for intent.
func AllowedSourcesSetting(intent deprovision.Intent) string {
	return config.AllowedSourcesSetting(string(intent))
}

// NewAdmission builds the checks from the app's settings; hubs are the managed hubs' host names.
// What the settings name but the handler does not know (an intent in EVENT_TYPE_MAP or in an
// ALLOWED_SOURCES_ setting) is reported as a [config.SettingError] naming the setting.
func NewAdmission(s config.Admission, hubs []string) (Admission, error) {
	var errs []error
	events, err := ParseEventTypes(s.EventTypeMap)
	if err != nil {
		errs = append(errs, &config.SettingError{Setting: config.SettingEventTypes, Problem: err.Error()})
	}
	p := Admission{Events: events, AllowedSources: map[deprovision.Intent][]string{}, DryRun: s.DryRun, MaxEventAge: s.MaxEventAge, Hubs: hubs}
	for name, list := range s.AllowedSources {
		in := deprovision.Intent(name)
		if !in.Valid() {
			errs = append(errs, &config.SettingError{Setting: config.AllowedSourcesSetting(name),
				Problem: "names no intent; the settings are " + AllowedSourcesSetting(deprovision.IntentCompromised) + ", … one per intent (" + intentList() + ")"})
			continue
		}
		p.AllowedSources[in] = list
	}
	return p, errors.Join(errs...)
}

// Normalize turns a decoded event into a Request, or a Rejection. req always
// carries the event's identity, so a rejection can be journaled under it.
func (p *Admission) Normalize(ev Event, now time.Time) (req deprovision.Request, rej *Rejection) {
	req = deprovision.Request{EventID: ev.ID, Source: ev.Source, EventType: ev.Type, EventTime: ev.Time}
	if req.EventTime.IsZero() {
		// CloudEvents time is optional; the time of receipt stands in, so precedence still has a time.
		req.EventTime = now
	}
	intent, ok := p.Events.Intent(ev.Type)
	if !ok {
		return req, reject("event type %q is not a deprovisioning event type (known: %s); map it with the EVENT_TYPE_MAP setting if it should be", ev.Type, strings.Join(p.Events.Known(), ", "))
	}
	req.Intent = intent
	f, err := parseFields(ev.Data)
	if err != nil {
		return req, reject("%v", err)
	}
	if rid, gid := idFromSubject(ev.Subject); true {
		if f.RegistrationID == "" {
			f.RegistrationID = rid
		}
		if f.EnrollmentGroupID == "" {
			f.EnrollmentGroupID = gid
		}
	}
	dry := p.DryRun || (f.DryRun != nil && *f.DryRun)
	return p.build(req, f, dry, now)
}

// build completes req from the fields and applies the checks common to events and HTTP
// requests. Whatever the outcome, the request and the reason it returns hold no secret
// (scrub): both are journaled, logged and published.
func (p *Admission) build(req deprovision.Request, f eventFields, dryRun bool, now time.Time) (deprovision.Request, *Rejection) {
	req, rej := p.check(req, f, dryRun, now)
	if rej == nil {
		rej = refuseSecrets(req)
	}
	if rej != nil {
		req, rej.Reason = scrub(req, rej.Reason)
		return req, rej
	}
	// An accepted request's ids passed their checks; only the free text may hold a secret.
	req.Reason = redact(req.Reason)
	return req, nil
}

func (p *Admission) check(req deprovision.Request, f eventFields, dryRun bool, now time.Time) (deprovision.Request, *Rejection) {
	req.RegistrationID = f.RegistrationID
	req.DeviceID = f.DeviceID
	req.Hub = f.IoTHub
	req.EnrollmentGroupID = f.EnrollmentGroupID
	req.CertificatePEM = f.Certificate
	req.Reason = f.Reason
	req.TargetHub = f.TargetHub
	req.DryRun = dryRun || p.DryRun

	if strings.TrimSpace(req.Source) == "" {
		return req, reject("the event has no source (CloudEvents `source`, Event Grid `topic`); a source is needed to authorize and to identify the operation")
	}
	if rej := checkIdentity(req); rej != nil {
		return req, rej
	}
	if list, ok := p.AllowedSources[req.Intent]; ok && !containsFold(list, req.Source) {
		return req, reject("source %q is not allowed to ask for %s (allowed: %s; setting %s)", req.Source, req.Intent, strings.Join(list, ", "), AllowedSourcesSetting(req.Intent))
	}
	if d := req.EventTime.Sub(now); d > maxClockSkew {
		// A time in the future would outrank every later event for the device (precedence is
		// decided by event time), so a forged or broken clock could pin a device's state.
		return req, reject("the event is from %s, %s in the future (more than the %s allowed for clock skew); check the sender's clock", req.EventTime.Format(time.RFC3339), d.Round(time.Second), maxClockSkew)
	}
	if p.MaxEventAge > 0 && !req.EventTime.IsZero() && now.Sub(req.EventTime) > p.MaxEventAge {
		return req, reject("the event is from %s, %s ago, older than the limit of %s (setting MAX_EVENT_AGE)", req.EventTime.Format(time.RFC3339), now.Sub(req.EventTime).Round(time.Second), p.MaxEventAge)
	}
	switch strings.ToLower(f.Action) {
	case "":
	case "disable":
		req.Action = deprovision.ActionDisable
	case "delete":
		req.Action = deprovision.ActionDelete
	default:
		return req, reject("action %q is not one of disable, delete", f.Action)
	}
	if req.Intent.GroupWide() {
		if req.EnrollmentGroupID == "" {
			return req, reject("a %s event needs the enrollment group: data field enrollmentGroupId, or subject enrollmentGroups/{id}", req.Intent)
		}
		if err := checkGroupID("enrollmentGroupId", req.EnrollmentGroupID); err != nil {
			return req, err
		}
	} else {
		if req.RegistrationID == "" && req.CertificatePEM == "" {
			return req, reject("a %s event needs the device's registration id: data field registrationId, subject devices/{registrationId}, or a certificate whose CN is the registration id", req.Intent)
		}
		if req.RegistrationID != "" {
			if err := checkRegistrationID("registrationId", req.RegistrationID); err != nil {
				return req, err
			}
		}
	}
	if req.DeviceID != "" {
		if err := checkDeviceID("deviceId", req.DeviceID); err != nil {
			return req, err
		}
	}
	if req.Intent == deprovision.IntentMoved && req.TargetHub == "" {
		return req, reject("a moved event needs the hub to move to: data field targetHub")
	}
	for _, h := range []struct {
		name string
		v    *string
	}{{"iotHub", &req.Hub}, {"targetHub", &req.TargetHub}} {
		if *h.v == "" {
			continue
		}
		host, rej := p.checkHub(h.name, *h.v)
		if rej != nil {
			return req, rej
		}
		*h.v = host
	}
	if req.Reason != "" {
		r, rej := cleanReason(req.Reason)
		if rej != nil {
			return req, rej
		}
		req.Reason = r
	}
	if req.CertificatePEM != "" {
		if _, rej := checkCertificate(req.CertificatePEM, req.RegistrationID, !req.Intent.GroupWide()); rej != nil {
			return req, rej
		}
	}
	return req, nil
}

func containsFold(list []string, s string) bool {
	for _, v := range list {
		if v == "*" || strings.EqualFold(strings.TrimRight(v, "/"), strings.TrimRight(s, "/")) {
			return true
		}
	}
	return false
}
