// Package opsapi is the API of the app's Operations function (route deprovision/{kind?}/{id?},
// docs/app.md): the views it answers with, a [Client] for it built on azcore, and the rendering
// of those views for a person, which the dpsdeprov command and the demo share.
package opsapi

import (
	"time"

	"dpsdeprov/deprovision"
	"dpsdeprov/outcome"
)

// Operation is the answer to GET deprovision/operations/{id}: the operation's summary (the
// same one its outcome event carries) and the journal of its steps.
type Operation struct {
	outcome.Summary
	// SubmittedBy is who asked through the Operations endpoints, verified or claimed.
	SubmittedBy *deprovision.Principal `json:"submittedBy,omitempty"`
	Journal     []Step                 `json:"journal"`
}

// Step is one journaled step: a step of the plan (Index 0, 1, …), or another record of the
// operation (an approval at deprovision.ApprovalIndex, a batch of group members, a failed
// outcome publish).
type Step struct {
	Index      int                     `json:"index"`
	Kind       deprovision.StepKind    `json:"kind"`
	Target     string                  `json:"target"`
	Outcome    deprovision.StepOutcome `json:"outcome"`
	HTTPStatus int                     `json:"httpStatus,omitempty"`
	ErrorCode  string                  `json:"errorCode,omitempty"`
	Error      string                  `json:"error,omitempty"`
	DurationMS int64                   `json:"durationMs,omitempty"`
	Time       *time.Time              `json:"time,omitempty"`
}

// NewOperation is the view of op and its step records.
func NewOperation(op *deprovision.Operation, steps []deprovision.StepRecord) Operation {
	v := Operation{Summary: outcome.Summarize(op), SubmittedBy: op.Request.SubmittedBy, Journal: []Step{}}
	for _, s := range steps {
		sv := Step{Index: s.Index, Kind: s.Kind, Target: s.Target, Outcome: s.Outcome, HTTPStatus: s.HTTPStatus, ErrorCode: s.ErrorCode, Error: s.Error, DurationMS: s.Duration.Milliseconds()}
		if !s.Time.IsZero() {
			t := s.Time.UTC()
			sv.Time = &t
		}
		v.Journal = append(v.Journal, sv)
	}
	return v
}

// Device is the answer to GET deprovision/devices/{registrationId}.
type Device struct {
	RegistrationID string             `json:"registrationId"`
	State          *DeviceState       `json:"state"`
	Operations     []OperationHistory `json:"operations"`
}

// DeviceState is the state this system left a device in.
type DeviceState struct {
	DeviceID           string             `json:"deviceId,omitempty"`
	Hub                string             `json:"iotHub,omitempty"`
	Intent             deprovision.Intent `json:"intent"`
	OperationID        string             `json:"operationId"`
	EventTime          time.Time          `json:"eventTime"`
	BlockingEnrollment bool               `json:"blockingEnrollment"`
	HubAction          string             `json:"hubAction,omitempty"`
	Updated            time.Time          `json:"updated"`
}

// OperationHistory is one line of a device's history (newest first).
type OperationHistory struct {
	OperationID string             `json:"operationId"`
	Intent      deprovision.Intent `json:"intent"`
	Status      deprovision.Status `json:"status"`
	Reason      string             `json:"reason,omitempty"`
	EventTime   time.Time          `json:"eventTime"`
	Updated     time.Time          `json:"updated"`
}

// NewDevice is the view of a device's journal row (nil when this system never changed it)
// and its operations.
func NewDevice(registrationID string, ds *deprovision.DeviceState, hist []deprovision.OperationSummary) Device {
	v := Device{RegistrationID: registrationID, Operations: []OperationHistory{}}
	if ds != nil {
		v.State = &DeviceState{DeviceID: ds.DeviceID, Hub: ds.Hub, Intent: ds.Intent, OperationID: ds.OperationID, EventTime: ds.EventTime,
			BlockingEnrollment: ds.BlockingEnrollment, HubAction: ds.HubAction, Updated: ds.Updated}
	}
	for _, o := range hist {
		v.Operations = append(v.Operations, OperationHistory{OperationID: o.OperationID, Intent: o.Intent, Status: o.Status, Reason: o.Reason, EventTime: o.EventTime, Updated: o.Updated})
	}
	return v
}

// Request is the body of POST deprovision/requests: the event data fields (docs/app.md), an
// intent, an optional ID that makes the request idempotent (the same ID finds the same
// operation), and DryRun (the server's default is true: nothing changes unless it is false).
type Request struct {
	ID                string `json:"id,omitempty"`
	Intent            string `json:"intent"`
	RegistrationID    string `json:"registrationId,omitempty"`
	DeviceID          string `json:"deviceId,omitempty"`
	IoTHub            string `json:"iotHub,omitempty"`
	EnrollmentGroupID string `json:"enrollmentGroupId,omitempty"`
	Certificate       string `json:"certificate,omitempty"`
	Reason            string `json:"reason,omitempty"`
	Action            string `json:"action,omitempty"`
	TargetHub         string `json:"targetHub,omitempty"`
	DryRun            *bool  `json:"dryRun,omitempty"`
}

// Decision is what POST deprovision/approvals/{operationId} and
// deprovision/denials/{operationId} take.
type Decision struct {
	// ApprovedBy names the person deciding when nobody is signed in (no App Service
	// authentication): it is journaled as claimed, not verified. A signed-in caller is
	// journaled as App Service authentication identified it, whatever the body says.
	// DeniedBy is accepted as its synonym on a denial.
	ApprovedBy string `json:"approvedBy,omitempty"`
	DeniedBy   string `json:"deniedBy,omitempty"`
	// Reason says why; it is required.
	Reason string `json:"reason"`
}

// Error is the body of every answer that is not a view: what went wrong, in words.
type Error struct {
	Error string `json:"error"`
}
