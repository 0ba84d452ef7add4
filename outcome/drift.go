package outcome

import (
	"context"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/messaging"

	"dpsdeprov/deprovision"
)

// TypeDriftDetected is the type of the event announcing that the cleanup found a device or
// enrollment this system revoked enabled again (or a disabled group's member enabled).
const TypeDriftDetected = "Deprovisioning.DriftDetected"

// DriftSummary is the data of a Deprovisioning.DriftDetected event.
type DriftSummary struct {
	FindingID      string             `json:"findingId"`
	Kind           string             `json:"kind"`
	RegistrationID string             `json:"registrationId,omitempty"`
	DeviceID       string             `json:"deviceId,omitempty"`
	Hub            string             `json:"iotHub,omitempty"`
	GroupID        string             `json:"enrollmentGroupId,omitempty"`
	Intent         deprovision.Intent `json:"intent,omitempty"`
	Detail         string             `json:"detail"`
	// Action is what the cleanup did: re-revoked, reported, planned (dry run).
	Action string `json:"action"`
	// OperationID is the re-revocation's operation, when there is one.
	OperationID     string             `json:"operationId,omitempty"`
	OperationStatus deprovision.Status `json:"operationStatus,omitempty"`
	RunID           string             `json:"runId"`
	Time            *time.Time         `json:"time,omitempty"`
}

// NewDriftEvent builds the Deprovisioning.DriftDetected CloudEvent of f. Its id is the finding
// and the run, so one run's announcement repeated is recognisably the same event.
func NewDriftEvent(source string, f deprovision.Finding, now time.Time) (messaging.CloudEvent, error) {
	subject := "devices/" + f.RegistrationID
	if f.RegistrationID == "" {
		subject = "enrollmentGroups/" + f.GroupID
	}
	ct := "application/json"
	data := DriftSummary{FindingID: f.ID, Kind: f.Kind, RegistrationID: f.RegistrationID, DeviceID: f.DeviceID, Hub: f.Hub,
		GroupID: f.GroupID, Intent: f.Intent, Detail: f.Detail, Action: f.Action, OperationID: f.OperationID,
		OperationStatus: f.OperationStatus, RunID: f.RunID, Time: timePtr(f.Time)}
	ev, err := messaging.NewCloudEvent(source, TypeDriftDetected, data, &messaging.CloudEventOptions{Subject: &subject, DataContentType: &ct, Time: &now})
	if err != nil {
		return ev, err
	}
	ev.ID = "drift/" + f.RunID + "/" + f.ID
	return ev, nil
}

// DriftDetected implements deprovision.DriftReporter: it publishes in the background, as
// OperationEnded does; a publish that fails for good is journaled on the re-revocation's
// operation when there is one (under drift-<runId> otherwise), and logged either way.
func (p *Publisher) DriftDetected(ctx context.Context, f deprovision.Finding) {
	ev, err := NewDriftEvent(p.o.Source, f, p.o.Clock.Now())
	if err != nil {
		p.o.Logger.Error("building the drift event", "finding", f.ID, "error", err)
		return
	}
	// Without a re-revocation, a failed publish is journaled under the run.
	opID := f.OperationID
	if opID == "" {
		opID = "drift-" + f.RunID
	}
	p.send(ctx, opID, ev)
}
