package deprovision_test

import (
	"context"
	"slices"
	"testing"

	d "dpsdeprov/deprovision"
	"dpsdeprov/deprovision/fake"
)

// racingDPS lets another writer change the enrollment between the engine's read and its write.
type racingDPS struct {
	*fake.DPS
	race func(*fake.DPS)
	done bool
}

func (r *racingDPS) PutEnrollment(ctx context.Context, e *d.Enrollment, etag string) (*d.Enrollment, error) {
	if !r.done && etag != "" {
		r.done = true
		r.race(r.DPS)
	}
	return r.DPS.PutEnrollment(ctx, e, etag)
}

// TestETagConflictRereadsAndRedecides: a 412 leads to another read and a new decision, never to
// overwriting what the other writer did.
func TestETagConflictRereadsAndRedecides(t *testing.T) {
	for _, c := range []struct {
		name    string
		race    func(*fake.DPS)
		outcome d.StepOutcome
		hubs    []string
	}{
		{"the other writer disabled it: nothing left to do", func(p *fake.DPS) {
			e, _ := p.Enrollment("sensor-042")
			e.Enabled = false
			if _, err := p.PutEnrollment(context.Background(), &e, "*"); err != nil {
				panic(err)
			}
		}, d.StepNoChange, nil},
		{"the other writer changed something else: disable on top of it", func(p *fake.DPS) {
			e, _ := p.Enrollment("sensor-042")
			e.IoTHubs = []string{hub2}
			if _, err := p.PutEnrollment(context.Background(), &e, "*"); err != nil {
				panic(err)
			}
		}, d.StepDone, []string{hub2}},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := newWorld()
			setupTPM(w)
			deps := w.deps()
			deps.Enrollments = &racingDPS{DPS: w.dps, race: c.race}
			op := submit(t, w.engine(deps), devReq("e1", d.IntentCompromised))
			if op.Status != d.StatusSucceeded {
				t.Fatalf("%s %s", op.Status, op.Reason)
			}
			steps, _ := w.j.Steps(context.Background(), op.ID)
			if steps[0].Outcome != c.outcome {
				t.Fatalf("step outcome %s, want %s", steps[0].Outcome, c.outcome)
			}
			en, _ := w.dps.Enrollment("sensor-042")
			if en.Enabled || !slices.Equal(en.IoTHubs, c.hubs) {
				t.Fatalf("enrollment %+v: disabled, with the other writer's change kept, expected", en)
			}
		})
	}
}
