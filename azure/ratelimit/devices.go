package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"dpsdeprov/deprovision"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
)

// LimitedDevicesOptions configure [NewLimitedDevices].
type LimitedDevicesOptions struct {
	// Priority picks a call's priority. Default: the priority [WithPriority] put in the
	// context; without one, PriorityBulk for Bulk and PriorityHigh for single-device calls
	// (they are what compromise response makes).
	Priority func(ctx context.Context, bulk bool) Priority
	// MaxAttempts bounds the tries of one call that the hub answers 429. Default 4.
	MaxAttempts int
}

// LimitedDevices makes a deprovision.LimitedDevices wait for its hub's budget before each call: a
// single-device call costs one operation (an update not given the device as read two, see
// [LimitedDevices.PutDevice]), a bulk call one per device. When the hub answers 429 it records the
// pause with [Limiter.Observe429] and tries again after it, a bounded number of times. The
// engine does not know it is there.
type LimitedDevices struct {
	inner    deprovision.Devices
	l        *Limiter
	priority func(ctx context.Context, bulk bool) Priority
	attempts int
}

var _ deprovision.Devices = (*LimitedDevices)(nil)

// NewLimitedDevices returns inner limited by l. o may be nil.
func NewLimitedDevices(inner deprovision.Devices, l *Limiter, o *LimitedDevicesOptions) *LimitedDevices {
	d := &LimitedDevices{inner: inner, l: l, priority: defaultPriority, attempts: 4}
	if o != nil {
		if o.Priority != nil {
			d.priority = o.Priority
		}
		if o.MaxAttempts > 0 {
			d.attempts = o.MaxAttempts
		}
	}
	return d
}

func defaultPriority(ctx context.Context, bulk bool) Priority {
	if p, ok := PriorityFrom(ctx); ok {
		return p
	}
	if bulk || deprovision.IsGroupWork(ctx) {
		return PriorityBulk // a group's reads and bulk calls alike
	}
	return PriorityHigh
}

// GetDevice reads a device identity within the hub's budget.
func (d *LimitedDevices) GetDevice(ctx context.Context, hub, deviceID string) (*deprovision.Device, error) {
	var out *deprovision.Device
	err := d.do(ctx, hub, 1, false, func() (err error) {
		out, err = d.inner.GetDevice(ctx, hub, deviceID)
		return err
	})
	return out, err
}

// PutDevice writes a device identity within the hub's budget. A create, or an update of a
// device as GetDevice read it (with its own etag), costs one operation; any other update two:
// the hub adapter reads the identity first and writes it back changed, so that its keys stay
// ([deprovision.PutDeviceReads]).
func (d *LimitedDevices) PutDevice(ctx context.Context, dev *deprovision.Device, etag string) (*deprovision.Device, error) {
	if dev == nil {
		return d.inner.PutDevice(ctx, dev, etag)
	}
	cost := 1
	if deprovision.PutDeviceReads(dev, etag) {
		cost = 2
	}
	var out *deprovision.Device
	err := d.do(ctx, dev.Hub, cost, false, func() (err error) {
		out, err = d.inner.PutDevice(ctx, dev, etag)
		return err
	})
	return out, err
}

// DeleteDevice deletes a device identity within the hub's budget.
func (d *LimitedDevices) DeleteDevice(ctx context.Context, hub, deviceID, etag string) error {
	return d.do(ctx, hub, 1, false, func() error {
		return d.inner.DeleteDevice(ctx, hub, deviceID, etag)
	})
}

// Bulk applies a bulk operation within the hub's budget, counting every device.
func (d *LimitedDevices) Bulk(ctx context.Context, hub string, mode deprovision.BulkMode, items []deprovision.BulkItem) ([]deprovision.BulkItemResult, error) {
	if len(items) == 0 {
		return d.inner.Bulk(ctx, hub, mode, items)
	}
	var out []deprovision.BulkItemResult
	err := d.do(ctx, hub, len(items), true, func() (err error) {
		out, err = d.inner.Bulk(ctx, hub, mode, items)
		return err
	})
	return out, err
}

// Identities reads devices with one hub query. The hub charges queries to their own budget
// (S1: 20 a minute a unit); the limiter has none for them, so it charges the call one
// operation of the registry's, at bulk priority: one more operation for every 100 devices
// a group disable writes, on the safe side of both budgets.
func (d *LimitedDevices) Identities(ctx context.Context, hub string, deviceIDs []string) ([]*deprovision.Device, error) {
	var out []*deprovision.Device
	err := d.do(ctx, hub, 1, true, func() (err error) {
		out, err = d.inner.Identities(ctx, hub, deviceIDs)
		return err
	})
	return out, err
}

// do waits for n operations and calls f, again after the pause when the hub answers 429.
func (d *LimitedDevices) do(ctx context.Context, hub string, n int, bulk bool, f func() error) error {
	p := d.priority(ctx, bulk)
	var err error
	for attempt := 1; ; attempt++ {
		if werr := d.l.Wait(ctx, hub, n, p); werr != nil {
			if err != nil {
				return err // the last 429 says more than the cancellation
			}
			if errors.Is(werr, errInvalid) {
				return werr
			}
			// The invocation ran out of time, or the shared budget's table is unavailable:
			// either may succeed when the event is delivered again.
			return deprovision.Transient(fmt.Errorf("waiting for the budget of hub %s: %w", hub, werr))
		}
		err = f()
		retryAfter, throttled := throttledBy(err)
		if !throttled || attempt >= d.attempts {
			return err
		}
		if oerr := d.l.Observe429(ctx, hub, retryAfter); oerr != nil {
			d.l.log.Warn("recording a hub 429", "hub", hub, "error", oerr)
		}
	}
}

// throttledBy reports whether err is the hub's 429 and the pause its Retry-After asks for
// (0 when it names none).
func throttledBy(err error) (time.Duration, bool) {
	var re *azcore.ResponseError
	if err == nil || !errors.As(err, &re) || re.StatusCode != http.StatusTooManyRequests {
		return 0, false
	}
	if re.RawResponse == nil {
		return 0, true
	}
	return parseRetryAfter(re.RawResponse.Header.Get("Retry-After"), time.Now()), true
}

// parseRetryAfter reads a Retry-After header: delay-seconds or an HTTP date (RFC 9110 §10.2.3).
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseInt(v, 10, 32); err == nil {
		return time.Duration(max(0, s)) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(0, t.Sub(now))
	}
	return 0
}
