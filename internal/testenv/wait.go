package testenv

import (
	"bytes"
	"context"
	"net/http"
	"sync"
	"testing"
	"time"
)

// HungAfter bounds a wait for something that should certainly happen (a helper process
// opening its port, a background worker finishing): not an estimate of how long it takes,
// which on a loaded machine may be many times the usual, but the point past which the thing
// is taken to be hung and the test fails saying what it waited for, instead of at the
// binary's timeout.
const HungAfter = 5 * time.Minute

// WaitFor polls cond until it reports true, and returns nil; or returns ctx's error when ctx
// ends first. Tests wait for the event they need this way, never for a fixed time.
func WaitFor(ctx context.Context, cond func() bool) error {
	d := time.Millisecond
	for !cond() {
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		d = min(2*d, 50*time.Millisecond)
	}
	return nil
}

// Context returns a context for tb that ends [HungAfter] from now, or a little before the
// test binary's deadline (go test -timeout) when that comes first, so that a wait that never
// ends fails the test with its own message.
func Context(tb testing.TB) context.Context {
	tb.Helper()
	end := time.Now().Add(HungAfter)
	if t, ok := tb.(interface{ Deadline() (time.Time, bool) }); ok {
		if d, ok := t.Deadline(); ok && d.Add(-10*time.Second).Before(end) {
			end = d.Add(-10 * time.Second)
		}
	}
	ctx, cancel := context.WithDeadline(context.Background(), end)
	tb.Cleanup(cancel)
	return ctx
}

// Eventually waits until cond holds, failing tb with what when it does not within
// [Context]'s bound.
func Eventually(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	if err := WaitFor(Context(tb), cond); err != nil {
		tb.Fatalf("waited for %s: %v", what, err)
	}
}

// UpOrExited waits until probe reports that a process started by the test serves, or done
// closes (the process exited); it reports whether the process exited first.
func UpOrExited(tb testing.TB, what string, done <-chan struct{}, probe func() bool) (exited bool) {
	tb.Helper()
	Eventually(tb, what, func() bool {
		select {
		case <-done:
			exited = true
			return true
		default:
		}
		return probe()
	})
	return exited
}

// AnswersGET is a probe for [UpOrExited]: url answers a GET, whatever the status.
func AnswersGET(url string) func() bool {
	return func() bool {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
		}
		return err == nil
	}
}

// Output collects what a process or a background writer writes, safe to read while it is
// being written (as a process's Stdout: os/exec copies into it from its own goroutine).
type Output struct {
	mu  sync.Mutex
	buf bytes.Buffer // not embedded: an embedded bytes.Buffer's ReadFrom would bypass mu
}

// Write appends p.
func (o *Output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.Write(p)
}

// String returns what was written so far.
func (o *Output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}
