package cleanup_test

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"dpsdeprov/cleanup"
	"dpsdeprov/deprovision"
	"dpsdeprov/deprovision/fake"
)

// announcements records what the engine hands to its notifier.
type announcements struct {
	mu  sync.Mutex
	got []string
}

func (a *announcements) OperationEnded(_ context.Context, op *deprovision.Operation) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.got = append(a.got, op.ID+" "+string(op.Status))
}

func (a *announcements) list() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.got)
}

func (w *world) deps(n deprovision.Notifier) deprovision.Deps {
	return deprovision.Deps{Enrollments: w.dps, Registrations: w.dps, Devices: w.hubs, Journal: w.j, Clock: w.clock,
		Notifier: n, Logger: slog.New(slog.DiscardHandler)}
}

// A process that dies right after journaling an operation's end never announces it; the
// resume pass does, once AnnounceAfter has passed, and only once.
func TestResumeAnnouncesWhatACrashLost(t *testing.T) {
	ctx := context.Background()
	req := deprovision.Request{EventID: "ev-a1", Source: "urn:test", Intent: deprovision.IntentStolen, RegistrationID: "a-1"}

	// The uninterrupted run's last durable effect is the announced mark, the one before it
	// the terminal write.
	ref := newWorld(t)
	ref.device("a-1")
	c := &fake.Crasher{}
	if op, err := deprovision.NewEngine(c.Wrap(ref.deps(&announcements{})), deprovision.Config{}).Submit(ctx, req); err != nil || op.Status != deprovision.StatusSucceeded {
		t.Fatalf("reference run: %+v %v", op, err)
	}
	terminalWrite := c.Count() - 1

	w := newWorld(t)
	w.device("a-1")
	note := &announcements{}
	dying := deprovision.NewEngine((&fake.Crasher{At: terminalWrite}).Wrap(w.deps(note)), deprovision.Config{})
	if !fake.Run(func() { _, _ = dying.Submit(ctx, req) }) {
		t.Fatalf("no crash at effect %d", terminalWrite)
	}
	id := deprovision.OperationID(req.Source, req.EventID)
	if op, _, err := w.engine.Operation(ctx, id); err != nil || op.Status != deprovision.StatusSucceeded || !op.Announced.IsZero() {
		t.Fatalf("after the crash: %+v %v; want succeeded, not announced", op, err)
	}
	if got := note.list(); len(got) != 0 {
		t.Fatalf("announced before the crash: %v", got)
	}

	w.engine = deprovision.NewEngine(w.deps(note), deprovision.Config{})
	r := w.runner(cleanup.Options{})
	run := func() cleanup.PassReport {
		t.Helper()
		rep, err := r.Run(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return passReport(t, rep, cleanup.PassResume)
	}
	if p := run(); p.Announced != 0 || len(note.list()) != 0 {
		t.Fatalf("announced within AnnounceAfter of the end: %+v %v", p, note.list())
	}
	w.clock.add(3 * time.Minute)
	if p := run(); p.Announced != 1 || !p.Complete || p.Failed != 0 {
		t.Fatalf("resume pass: %+v", p)
	}
	if got, want := note.list(), []string{id + " succeeded"}; !slices.Equal(got, want) {
		t.Fatalf("announcements %v, want %v", got, want)
	}
	if p := run(); p.Announced != 0 || len(note.list()) != 1 {
		t.Fatalf("second run announced again: %+v %v", p, note.list())
	}
	if op, _, err := w.engine.Operation(ctx, id); err != nil || op.Announced.IsZero() {
		t.Fatalf("not marked announced: %+v %v", op, err)
	}
}
