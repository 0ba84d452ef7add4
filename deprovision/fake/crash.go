package fake

import (
	"context"
	"iter"
	"sync"

	"dpsdeprov/deprovision"
)

// Crash is the panic value of a simulated process death (see [Crasher]).
type Crash struct{}

// Crasher simulates a process dying right after its At-th durable effect: every successful
// write through the ports it wraps (DPS, hubs, journal) counts one, and the one numbered At
// panics with [Crash] after it took effect. It wraps the real adapters as well as the fakes.
type Crasher struct {
	At int
	mu sync.Mutex
	n  int
}

// Count is the number of effects seen so far.
func (c *Crasher) Count() int { c.mu.Lock(); defer c.mu.Unlock(); return c.n }

func (c *Crasher) after(err error) error {
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.n++
	die := c.n == c.At
	c.mu.Unlock()
	if die {
		panic(Crash{})
	}
	return nil
}

// Wrap returns deps whose DPS, hub and journal writes count towards the crash.
func (c *Crasher) Wrap(d deprovision.Deps) deprovision.Deps {
	d.Enrollments = crashEnrollments{d.Enrollments, c}
	d.Registrations = crashRegistrations{d.Registrations, c}
	d.Devices = crashDevices{d.Devices, c}
	d.Journal = crashJournal{d.Journal, c}
	return d
}

// Run calls f and reports whether it died of the simulated crash.
func Run(f func()) (crashed bool) {
	defer func() {
		if r := recover(); r != nil {
			if _, ok := r.(Crash); !ok {
				panic(r)
			}
			crashed = true
		}
	}()
	f()
	return false
}

type crashEnrollments struct {
	deprovision.Enrollments
	c *Crasher
}

func (x crashEnrollments) PutEnrollment(ctx context.Context, e *deprovision.Enrollment, etag string) (*deprovision.Enrollment, error) {
	v, err := x.Enrollments.PutEnrollment(ctx, e, etag)
	return v, x.c.after(err)
}
func (x crashEnrollments) DeleteEnrollment(ctx context.Context, id, etag string) error {
	return x.c.after(x.Enrollments.DeleteEnrollment(ctx, id, etag))
}
func (x crashEnrollments) PutGroup(ctx context.Context, g *deprovision.Group, etag string) (*deprovision.Group, error) {
	v, err := x.Enrollments.PutGroup(ctx, g, etag)
	return v, x.c.after(err)
}
func (x crashEnrollments) DeleteGroup(ctx context.Context, id, etag string) error {
	return x.c.after(x.Enrollments.DeleteGroup(ctx, id, etag))
}

type crashRegistrations struct {
	deprovision.Registrations
	c *Crasher
}

func (x crashRegistrations) DeleteRegistration(ctx context.Context, id, etag string) error {
	return x.c.after(x.Registrations.DeleteRegistration(ctx, id, etag))
}
func (x crashRegistrations) GroupRegistrations(ctx context.Context, g, cont string, n int) iter.Seq2[deprovision.RegistrationPage, error] {
	return x.Registrations.GroupRegistrations(ctx, g, cont, n)
}

type crashDevices struct {
	deprovision.Devices
	c *Crasher
}

func (x crashDevices) PutDevice(ctx context.Context, dev *deprovision.Device, etag string) (*deprovision.Device, error) {
	v, err := x.Devices.PutDevice(ctx, dev, etag)
	return v, x.c.after(err)
}
func (x crashDevices) DeleteDevice(ctx context.Context, hub, id, etag string) error {
	return x.c.after(x.Devices.DeleteDevice(ctx, hub, id, etag))
}
func (x crashDevices) Bulk(ctx context.Context, hub string, m deprovision.BulkMode, items []deprovision.BulkItem) ([]deprovision.BulkItemResult, error) {
	v, err := x.Devices.Bulk(ctx, hub, m, items)
	return v, x.c.after(err)
}

type crashJournal struct {
	deprovision.Journal
	c *Crasher
}

func (x crashJournal) CreateOperation(ctx context.Context, op *deprovision.Operation) (*deprovision.Operation, bool, error) {
	s, created, err := x.Journal.CreateOperation(ctx, op)
	return s, created, x.c.after(err)
}
func (x crashJournal) UpdateOperation(ctx context.Context, op *deprovision.Operation) error {
	return x.c.after(x.Journal.UpdateOperation(ctx, op))
}
func (x crashJournal) RecordStep(ctx context.Context, r deprovision.StepRecord) error {
	return x.c.after(x.Journal.RecordStep(ctx, r))
}
func (x crashJournal) PutDevice(ctx context.Context, ds *deprovision.DeviceState) error {
	return x.c.after(x.Journal.PutDevice(ctx, ds))
}
