package cleanup

import (
	"context"
	"iter"
	"time"

	"dpsdeprov/deprovision"
)

// Ledger is what the cleanup keeps between runs besides cursors and findings: each hub's
// newest lifecycle event (is the feed alive?), the size of the fleet (the stale pass's shares
// are shares of it), the enrollment groups this system disabled, and the means to prune old
// rows. Every method may return a [deprovision.TransientError] when the store is unavailable.
type Ledger interface {
	GroupTracker
	// RecordBeat moves hub's newest lifecycle event time forward to at (never back).
	RecordBeat(ctx context.Context, hub string, at time.Time) error
	// Beats returns each hub's newest lifecycle event time, by hub name (lower case).
	Beats(ctx context.Context) (map[string]time.Time, error)
	// GetFleet returns the fleet count (ErrNotFound before the first); PutFleet writes it
	// (ETag "" creates, otherwise it must match).
	GetFleet(ctx context.Context) (*Fleet, error)
	PutFleet(ctx context.Context, f *Fleet) error
	// TrackedGroups lists the groups TrackGroup recorded.
	TrackedGroups(ctx context.Context) iter.Seq2[*TrackedGroup, error]
	// FindingsSince lists the findings of the runs that started at or after since, oldest
	// run first.
	FindingsSince(ctx context.Context, since time.Time) iter.Seq2[*deprovision.Finding, error]
	// PruneFindings deletes at most max findings of runs that started before before, oldest
	// first, and returns how many it deleted.
	PruneFindings(ctx context.Context, before time.Time, max int) (int, error)
	// DeleteSighting deletes the last-seen row of hub/deviceID (gone already is no error).
	DeleteSighting(ctx context.Context, hub, deviceID string) error
}

// Fleet is the number of devices the lifecycle events have shown alive (not deleted) in the
// hubs this app manages, counted by the stale pass as it sweeps the last-seen rows.
type Fleet struct {
	// Count is the count of the last complete sweep, CountedAt when it ended.
	Count     int
	CountedAt time.Time
	// Counting is the count so far of the sweep under way.
	Counting int
	ETag     string
}

// TrackedGroup is an enrollment group this system disabled or deleted (a group-wide
// operation's group step started), so that the drift-groups pass finds it enabled again.
type TrackedGroup struct {
	GroupID     string
	OperationID string
	Intent      deprovision.Intent
	// Action is "disabled" or "deleted".
	Action string
	Time   time.Time
}

// GroupTracker records the groups this system disabled or deleted.
type GroupTracker interface {
	TrackGroup(ctx context.Context, g TrackedGroup) error
}

// share is the part of n that share allows, at least one.
func share(n int, s float64) int {
	v := int(float64(n)*s + 0.999999)
	return max(1, v)
}
