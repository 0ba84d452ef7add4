package handler

import (
	"context"
	"encoding/json"
	"sync"
	"testing"

	"dpsdeprov/cleanup"
)

type laneKey struct{}

// laneRunner records the lane its runs found in their context.
type laneRunner struct {
	fakeRunner
	mu    sync.Mutex
	lanes []any
}

func (r *laneRunner) seen(ctx context.Context) {
	r.mu.Lock()
	r.lanes = append(r.lanes, ctx.Value(laneKey{}))
	r.mu.Unlock()
}

func (r *laneRunner) Run(ctx context.Context) (cleanup.Report, error) {
	r.seen(ctx)
	return r.fakeRunner.Run(ctx)
}

func (r *laneRunner) RunPass(ctx context.Context, name string, o cleanup.Overrides) (cleanup.Report, error) {
	r.seen(ctx)
	return r.fakeRunner.RunPass(ctx, name, o)
}

// Cleanup.Context decorates every run's context, the timer's and the hand-run endpoint's alike
// (the app puts the hub calls in the rate limiter's bulk lane there).
func TestCleanupDecoratesEveryRunContext(t *testing.T) {
	r := &laneRunner{}
	c := &Cleanup{Runner: r, Context: func(ctx context.Context) context.Context { return context.WithValue(ctx, laneKey{}, "bulk") }}
	if _, err := c.Run(context.Background(), TimerInfo{}); err != nil {
		t.Fatal(err)
	}
	srv := newTestServer(t, newFakeEngine(), Options{Cleaner: c})
	b, _ := json.Marshal("")
	inv := `{"Data":{"req":{"Url":"http://x/api/deprovision/cleanup/drift","Method":"POST","Query":{},"Headers":{},"Params":{"kind":"cleanup","id":"drift"},"Body":` + string(b) + `}},"Metadata":{}}`
	_, res := post(t, srv, FunctionOperations, []byte(inv))
	if code, body := httpRes(t, res); code != 200 {
		t.Fatalf("hand-run pass: %d %v", code, body)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.lanes) != 2 || r.lanes[0] != "bulk" || r.lanes[1] != "bulk" {
		t.Fatalf("runs saw lanes %v; want the decorated context in the timer's run and the hand-run pass", r.lanes)
	}
	// Without a decorator the context passes unchanged.
	r.lanes = nil
	r.mu.Unlock()
	_, err := (&Cleanup{Runner: r}).Run(context.Background(), TimerInfo{})
	r.mu.Lock()
	if err != nil || len(r.lanes) != 1 || r.lanes[0] != nil {
		t.Fatalf("undecorated run: %v %v", err, r.lanes)
	}
}
