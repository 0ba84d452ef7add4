package cleanup

import (
	"context"
	"fmt"

	"dpsdeprov/deprovision"
)

// PassMoves confirms moves that wait for their device (deprovision/move.go): a moved device's
// old identity stays until DPS shows the device assigned to its target hub.
const PassMoves = "moves"

// MoveConfirmer confirms one device row's waiting move; *deprovision.Moves satisfies it.
type MoveConfirmer interface {
	Confirm(ctx context.Context, ds *deprovision.DeviceState) (deprovision.MoveResult, error)
}

// moves walks the device rows from after and confirms each waiting move, two units of budget
// each (a DPS read, and a hub operation when the device has moved). Rows that wait for
// nothing cost no unit.
func (x *run) moves(ctx context.Context, p *PassReport, after string) (string, bool, error) {
	for ds, err := range x.d.Journal.DeviceRows(ctx, after) {
		if err != nil {
			return after, false, err
		}
		if ds.MoveTarget == "" {
			after = ds.RegistrationID
			continue
		}
		if !x.left(2) {
			return after, false, nil
		}
		x.spend(p, 2)
		p.Checked++
		res, err := x.d.Moves.Confirm(ctx, ds)
		if err != nil {
			p.Failed++
			p.Errors = append(p.Errors, fmt.Sprintf("%s: %v", ds.RegistrationID, err))
		} else if res == deprovision.MoveConfirmed {
			p.Submitted++
		}
		after = ds.RegistrationID
	}
	return "", true, nil
}
