package cleanup

import (
	"context"
	"fmt"
	"strings"

	"dpsdeprov/deprovision"
)

// TrackGroups wraps the engine's journal so that the enrollment groups this system disables
// or deletes are recorded in t before the step that changes them runs: a group operation
// writes no device row, and without this record the drift-groups pass could not tell a group
// this system disabled, and someone enabled again, from one that was never disabled. Writing
// first means a group is tracked even if the process dies right after disabling it; a failed
// record fails the step's journal write, which the engine retries like any journal outage.
func TrackGroups(j deprovision.Journal, t GroupTracker) deprovision.Journal {
	return &groupTracking{Journal: j, t: t}
}

type groupTracking struct {
	deprovision.Journal
	t GroupTracker
}

// RecordStep records the group of a group step that starts, then the step.
func (g *groupTracking) RecordStep(ctx context.Context, rec deprovision.StepRecord) error {
	if rec.Outcome == deprovision.StepStarted && (rec.Kind == deprovision.StepDisableGroup || rec.Kind == deprovision.StepDeleteGroup) {
		gid := strings.TrimPrefix(rec.Target, "dps/enrollmentGroups/")
		tg := TrackedGroup{GroupID: gid, OperationID: rec.OperationID, Action: "disabled", Time: rec.Time}
		if rec.Kind == deprovision.StepDeleteGroup {
			tg.Action = "deleted"
		}
		op, err := g.Journal.GetOperation(ctx, rec.OperationID)
		if err != nil {
			return fmt.Errorf("reading operation %s to track group %s: %w", rec.OperationID, gid, err)
		}
		tg.Intent = op.Request.Intent
		if err := g.t.TrackGroup(ctx, tg); err != nil {
			return deprovision.Transient(fmt.Errorf("tracking enrollment group %s: %w", gid, err))
		}
	}
	return g.Journal.RecordStep(ctx, rec)
}
