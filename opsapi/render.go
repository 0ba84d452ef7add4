package opsapi

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"dpsdeprov/deprovision"
	"dpsdeprov/outcome"
)

// WriteOperation writes op for a person: what was asked, the plan with each step's reason and
// what became of it, the other records of the journal (an approval, group batches), a group
// operation's progress, and the outcome. The demo's summary and `dpsdeprov show` print this.
func WriteOperation(w io.Writer, op *Operation) error {
	s := op.Summary
	if _, err := fmt.Fprintf(w, "operation %s: %s\n", s.OperationID, s.Status); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	row := func(label, format string, args ...any) {
		fmt.Fprintf(tw, "  %s\t%s\n", label, fmt.Sprintf(format, args...))
	}

	intent := string(s.Intent)
	if intent == "" {
		intent = "-"
	}
	if s.DryRun {
		intent += " (dry run: plans only)"
	}
	row("intent", "%s", intent)
	if subject := subject(s); subject != "" {
		row("subject", "%s", subject)
	}
	event := s.EventID + " from " + s.Source
	if s.EventType != "" {
		event += " (" + s.EventType + ")"
	}
	if s.EventTime != nil {
		event += ", " + s.EventTime.Format(time.RFC3339)
	}
	row("event", "%s", event)
	if op.SubmittedBy != nil {
		row("asked by", "%s", op.SubmittedBy)
	}
	path := s.Path
	if path == "" {
		path = "-"
	}
	row("path", "%s", path)

	records := map[int]Step{}
	var others []Step
	for _, st := range op.Journal {
		if st.Index >= 0 && st.Index < len(s.Steps) {
			records[st.Index] = st
		} else {
			others = append(others, st)
		}
	}
	for i, st := range s.Steps {
		label := ""
		if i == 0 {
			label = "plan"
		}
		result := "not run yet"
		if r, ok := records[i]; ok {
			result = stepResult(r)
		} else if s.DryRun || s.Status == deprovision.StatusPlanned {
			result = "planned"
		}
		row(label, "%d. %s %s: %s", i+1, st.Kind, st.Target, result)
		if st.Reason != "" {
			row("", "   why: %s", st.Reason)
		}
	}
	if len(s.Steps) == 0 {
		row("plan", "none")
	}
	for i, n := range s.Notes {
		label := ""
		if i == 0 {
			label = "notes"
		}
		row(label, "%s", n)
	}
	for i, line := range otherRecords(others) {
		label := ""
		if i == 0 {
			label = "records"
		}
		row(label, "%s", line)
	}
	if p := s.Progress; p != nil && p.Total > 0 {
		row("progress", "%s", ProgressBar(p, 30))
		for i, f := range p.Failures {
			label := ""
			if i == 0 {
				label = "failures"
			}
			row(label, "%s", f)
		}
	}
	result := string(s.Status)
	if s.Reason != "" {
		result += ": " + s.Reason
	}
	row("outcome", "%s", result)
	return tw.Flush()
}

// subject names what the operation is about: the device (with its hub identity and the hub
// it moves to) or the enrollment group.
func subject(s outcome.Summary) string {
	var parts []string
	if s.RegistrationID != "" && !s.Intent.GroupWide() {
		parts = append(parts, "device "+s.RegistrationID)
	}
	if s.DeviceID != "" && !strings.EqualFold(s.DeviceID, s.RegistrationID) {
		parts = append(parts, "hub identity "+s.DeviceID)
	}
	if s.Hub != "" {
		parts = append(parts, "in "+s.Hub)
	}
	if s.EnrollmentGroupID != "" {
		parts = append(parts, "enrollment group "+s.EnrollmentGroupID)
	}
	if s.TargetHub != "" {
		parts = append(parts, "to "+s.TargetHub)
	}
	if s.Action != "" {
		parts = append(parts, "action "+string(s.Action))
	}
	if s.HasCertificate {
		parts = append(parts, "with its certificate")
	}
	return strings.Join(parts, ", ")
}

// stepResult is what became of one journaled step, with the service's answer when it failed.
func stepResult(r Step) string {
	out := string(r.Outcome)
	var details []string
	if r.HTTPStatus != 0 {
		details = append(details, fmt.Sprintf("HTTP %d", r.HTTPStatus))
	}
	if r.ErrorCode != "" {
		details = append(details, "code "+r.ErrorCode)
	}
	if r.DurationMS > 0 {
		details = append(details, (time.Duration(r.DurationMS) * time.Millisecond).String())
	}
	if len(details) > 0 {
		out += " (" + strings.Join(details, ", ") + ")"
	}
	if r.Error != "" {
		out += ": " + r.Error
	}
	return out
}

// otherRecords describes the journal's records that are not plan steps: each in order of its
// index, except a group operation's batches, which are counted (a group has many).
func otherRecords(steps []Step) []string {
	sort.SliceStable(steps, func(i, j int) bool { return steps[i].Index < steps[j].Index })
	batches := map[deprovision.StepOutcome]int{}
	var lines []string
	for _, st := range steps {
		if st.Kind == deprovision.StepGroupBatch {
			batches[st.Outcome]++
			continue
		}
		lines = append(lines, fmt.Sprintf("%s %s: %s", st.Kind, st.Target, stepResult(st)))
	}
	if len(batches) > 0 {
		var counts []string
		for _, o := range []deprovision.StepOutcome{deprovision.StepDone, deprovision.StepFailed, deprovision.StepStarted} {
			if n := batches[o]; n > 0 {
				counts = append(counts, fmt.Sprintf("%d %s", n, o))
			}
		}
		lines = append(lines, fmt.Sprintf("%s: %s", deprovision.StepGroupBatch, strings.Join(counts, ", ")))
	}
	return lines
}

// ProgressBar draws a group operation's progress in width characters, with its counts:
// [#########-----------] 450/1000 members (45%), 3 failed.
func ProgressBar(p *outcome.Progress, width int) string {
	if p == nil || p.Total <= 0 {
		return ""
	}
	handled := min(p.Done+p.Failed, p.Total)
	filled := handled * width / p.Total
	bar := strings.Repeat("#", filled) + strings.Repeat("-", width-filled)
	s := fmt.Sprintf("[%s] %d/%d members (%d%%)", bar, handled, p.Total, handled*100/p.Total)
	if p.Failed > 0 {
		s += fmt.Sprintf(", %d failed", p.Failed)
	}
	return s
}

// WriteDevice writes d for a person: the state this system left the device in and its
// operations, newest first.
func WriteDevice(w io.Writer, d *Device) error {
	if _, err := fmt.Fprintf(w, "device %s\n", d.RegistrationID); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	if st := d.State; st != nil {
		state := fmt.Sprintf("%s by operation %s (event of %s)", st.Intent, st.OperationID, st.EventTime.Format(time.RFC3339))
		var more []string
		if st.DeviceID != "" || st.Hub != "" {
			more = append(more, strings.TrimSpace("hub identity "+st.DeviceID+" in "+st.Hub))
		}
		if st.HubAction != "" {
			more = append(more, "hub identity "+st.HubAction)
		}
		if st.BlockingEnrollment {
			more = append(more, "a disabled individual enrollment blocks it")
		}
		if len(more) > 0 {
			state += "; " + strings.Join(more, "; ")
		}
		fmt.Fprintf(tw, "  state\t%s\n", state)
	} else {
		fmt.Fprintf(tw, "  state\tnever changed by this system\n")
	}
	for i, o := range d.Operations {
		label := ""
		if i == 0 {
			label = "history"
		}
		line := fmt.Sprintf("%s  %s  %s  %s", o.Updated.Format(time.RFC3339), o.OperationID, o.Intent, o.Status)
		if o.Reason != "" {
			line += ": " + o.Reason
		}
		fmt.Fprintf(tw, "  %s\t%s\n", label, line)
	}
	return tw.Flush()
}
