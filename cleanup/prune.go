package cleanup

import (
	"context"
	"fmt"
)

// pruneScan bounds the last-seen rows the prune pass reads in one run.
const pruneScan = 5000

// prune deletes the cleanup's own old rows, at most PruneMax a run: findings of runs older
// than KeepFindings, the last-seen rows of devices deleted longer than KeepDeletedSightings
// ago, and those of hubs this app does not manage. It spends no budget (it calls neither DPS
// nor a hub), and a dry run only counts. Its cursor is a sighting key.
func (x *run) prune(ctx context.Context, p *PassReport, after string) (string, bool, error) {
	dry := x.allDry()
	left := x.o.PruneMax
	if !dry {
		n, err := x.d.Ledger.PruneFindings(ctx, x.now.Add(-x.o.KeepFindings), left)
		p.Checked += n
		left -= n
		if err != nil {
			return "", false, fmt.Errorf("pruning findings: %w", err)
		}
	}
	scanned, last := 0, after
	for s, err := range x.d.Seen.Sightings(ctx, after) {
		if err != nil {
			return last, false, fmt.Errorf("listing last-seen rows: %w", err)
		}
		if scanned >= pruneScan || left <= 0 {
			return last, false, nil
		}
		scanned++
		old := !s.Deleted.IsZero() && x.now.Sub(s.Deleted) > x.o.KeepDeletedSightings && !s.Deleted.Before(s.Created)
		if old || !x.managed(s.Hub) {
			if !dry {
				if err := x.d.Ledger.DeleteSighting(ctx, s.Hub, s.DeviceID); err != nil {
					return last, false, fmt.Errorf("deleting the last-seen row of %s/%s: %w", s.Hub, s.DeviceID, err)
				}
				left--
			}
			p.Checked++
		}
		last = s.Key
	}
	return "", true, nil
}
