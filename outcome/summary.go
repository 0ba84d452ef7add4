// Package outcome announces the end of a deprovisioning operation as a CloudEvent on an Event
// Grid topic, published with the maintained Event Grid publisher module
// github.com/Azure/azure-sdk-for-go/sdk/messaging/eventgrid/azeventgrid (not the deprecated
// sdk/messaging/azeventgrid). It also defines the operation summary that the event carries and
// that the Operations endpoint shows, so both say the same thing.
package outcome

import (
	"time"

	"dpsdeprov/deprovision"
)

// Summary is what the world may know about an operation: no secrets, no certificate body.
type Summary struct {
	OperationID       string             `json:"operationId"`
	Status            deprovision.Status `json:"status"`
	Reason            string             `json:"reason,omitempty"`
	Intent            deprovision.Intent `json:"intent,omitempty"`
	EventID           string             `json:"eventId"`
	Source            string             `json:"source"`
	EventType         string             `json:"eventType,omitempty"`
	EventTime         *time.Time         `json:"eventTime,omitempty"`
	RegistrationID    string             `json:"registrationId,omitempty"`
	DeviceID          string             `json:"deviceId,omitempty"`
	Hub               string             `json:"iotHub,omitempty"`
	EnrollmentGroupID string             `json:"enrollmentGroupId,omitempty"`
	TargetHub         string             `json:"targetHub,omitempty"`
	Action            deprovision.Action `json:"action,omitempty"`
	HasCertificate    bool               `json:"hasCertificate,omitempty"`
	DryRun            bool               `json:"dryRun"`
	Path              string             `json:"path,omitempty"`
	Steps             []PlannedStep      `json:"plan,omitempty"`
	Notes             []string           `json:"notes,omitempty"`
	Progress          *Progress          `json:"progress,omitempty"`
	Created           *time.Time         `json:"created,omitempty"`
	Updated           *time.Time         `json:"updated,omitempty"`
}

// Progress counts the members of a group-wide operation.
type Progress struct {
	Total    int      `json:"total"`
	Done     int      `json:"done"`
	Failed   int      `json:"failed"`
	Failures []string `json:"failures,omitempty"`
}

// PlannedStep is one step of the plan, with the reason policy chose it.
type PlannedStep struct {
	Kind   deprovision.StepKind `json:"kind"`
	Target string               `json:"target"`
	Reason string               `json:"reason,omitempty"`
}

// Summarize reduces op to its Summary.
func Summarize(op *deprovision.Operation) Summary {
	r := op.Request
	s := Summary{
		OperationID: op.ID, Status: op.Status, Reason: op.Reason, Intent: r.Intent,
		EventID: r.EventID, Source: r.Source, EventType: r.EventType,
		RegistrationID: r.RegistrationID, DeviceID: r.DeviceID, Hub: r.Hub,
		EnrollmentGroupID: r.EnrollmentGroupID, TargetHub: r.TargetHub, Action: r.Action,
		HasCertificate: r.CertificatePEM != "", DryRun: r.DryRun,
		EventTime: timePtr(r.EventTime), Created: timePtr(op.Created), Updated: timePtr(op.Updated),
	}
	if op.Plan != nil {
		s.Path = op.Plan.Path
		s.Notes = op.Plan.Notes
		for _, st := range op.Plan.Steps {
			s.Steps = append(s.Steps, PlannedStep{Kind: st.Kind, Target: st.Target, Reason: st.Reason})
		}
	}
	if p := op.Progress; p.Total > 0 || p.Done > 0 || p.Failed > 0 || p.Pages > 0 {
		s.Progress = &Progress{Total: p.Total, Done: p.Done, Failed: p.Failed, Failures: p.Failures}
	}
	return s
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}
