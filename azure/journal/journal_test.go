package journal_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"dpsdeprov/azure/journal"
	"dpsdeprov/deprovision"
	"dpsdeprov/internal/testenv"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func newJournal(t *testing.T) (*journal.Journal, *aztables.ServiceClient) {
	t.Helper()
	a := testenv.SharedAzurite(t)
	svc, err := aztables.NewServiceClientFromConnectionString(a.ConnectionString(), nil)
	if err != nil {
		t.Fatal(err)
	}
	j, err := journal.New(context.Background(), svc, journal.Options{TablePrefix: testenv.UniqueName("j")})
	if err != nil {
		t.Fatal(err)
	}
	return j, svc
}

var t0 = time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)

func sampleOp(id string) *deprovision.Operation {
	return &deprovision.Operation{ID: id, Status: deprovision.StatusRunning, Created: t0, Updated: t0,
		LeaseOwner: "a", LeaseUntil: t0.Add(time.Minute),
		Request: deprovision.Request{EventID: "e/1#?", Source: "/sub/x", Intent: deprovision.IntentLost,
			RegistrationID: "Sensor-042", EventTime: t0, Reason: "left on a train"}}
}

func TestOperationLifecycle(t *testing.T) {
	j, _ := newJournal(t)
	ctx := context.Background()
	op := sampleOp(deprovision.OperationID("/sub/x", "e/1#?"))
	stored, created, err := j.CreateOperation(ctx, op)
	if err != nil || !created || stored.ETag == "" {
		t.Fatalf("create: %v %v %+v", created, err, stored)
	}
	again, created, err := j.CreateOperation(ctx, sampleOp(op.ID))
	if err != nil || created || again.ETag != stored.ETag || again.Request.EventID != "e/1#?" {
		t.Fatalf("second create: created=%v err=%v %+v", created, err, again)
	}
	stored.Plan = &deprovision.Plan{Intent: deprovision.IntentLost, Path: "individual/tpm/revoke",
		Steps: []deprovision.Step{{Kind: deprovision.StepDisableEnrollment, Target: "dps/enrollments/sensor-042", Reason: "r",
			Params: map[string]string{deprovision.ParamBefore: "enabled"}}}}
	stored.Progress = deprovision.Progress{Total: 3, Done: 2, Pages: 1, Continuation: "tok/en?"}
	if err := j.UpdateOperation(ctx, stored); err != nil {
		t.Fatal(err)
	}
	got, err := j.GetOperation(ctx, op.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Plan == nil || got.Plan.Steps[0].Params[deprovision.ParamBefore] != "enabled" || got.Progress.Continuation != "tok/en?" ||
		!got.LeaseUntil.Equal(t0.Add(time.Minute)) || got.Request.RegistrationID != "Sensor-042" {
		t.Fatalf("round trip: %+v", got)
	}
	if _, err := j.GetOperation(ctx, "op-missing"); !errors.Is(err, deprovision.ErrNotFound) {
		t.Fatalf("missing operation: %v", err)
	}

	for _, rec := range []deprovision.StepRecord{
		{OperationID: op.ID, Index: 1, Kind: deprovision.StepDisableDevice, Outcome: deprovision.StepStarted, Time: t0},
		{OperationID: op.ID, Index: 0, Kind: deprovision.StepDisableEnrollment, Outcome: deprovision.StepDone, Time: t0, Duration: 1500 * time.Millisecond},
		{OperationID: op.ID, Index: 1, Kind: deprovision.StepDisableDevice, Outcome: deprovision.StepNoChange, HTTPStatus: 404, ErrorCode: "DeviceNotFound", Time: t0},
	} {
		if err := j.RecordStep(ctx, rec); err != nil {
			t.Fatal(err)
		}
	}
	steps, err := j.Steps(ctx, op.ID)
	if err != nil || len(steps) != 2 || steps[0].Duration != 1500*time.Millisecond || steps[1].Outcome != deprovision.StepNoChange || steps[1].HTTPStatus != 404 {
		t.Fatalf("steps: %+v %v", steps, err)
	}

	got.Status = deprovision.StatusSucceeded
	got.Updated = t0.Add(time.Minute)
	if err := j.UpdateOperation(ctx, got); err != nil {
		t.Fatal(err)
	}
	hist, err := j.DeviceHistory(ctx, "sensor-042")
	if err != nil || len(hist) != 1 || hist[0].Status != deprovision.StatusSucceeded || hist[0].OperationID != op.ID {
		t.Fatalf("history: %+v %v", hist, err)
	}
}

// TestConcurrentWriters: two readers of one version both write; the second gets 412.
func TestConcurrentWriters(t *testing.T) {
	j, _ := newJournal(t)
	ctx := context.Background()
	op := sampleOp("op-concurrent")
	if _, _, err := j.CreateOperation(ctx, op); err != nil {
		t.Fatal(err)
	}
	a, _ := j.GetOperation(ctx, op.ID)
	b, _ := j.GetOperation(ctx, op.ID)
	a.LeaseOwner, b.LeaseOwner = "a", "b"
	if err := j.UpdateOperation(ctx, a); err != nil {
		t.Fatal(err)
	}
	if err := j.UpdateOperation(ctx, b); !errors.Is(err, deprovision.ErrPreconditionFailed) {
		t.Fatalf("second writer: %v, want ErrPreconditionFailed", err)
	}

	// Many writers racing from one version: exactly one wins.
	base, _ := j.GetOperation(ctx, op.ID)
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := *base
			c.LeaseOwner = string(rune('a' + i))
			if err := j.UpdateOperation(ctx, &c); err == nil {
				mu.Lock()
				wins++
				mu.Unlock()
			} else if !errors.Is(err, deprovision.ErrPreconditionFailed) {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if wins != 1 {
		t.Fatalf("%d writers won from one version", wins)
	}

	// Device rows: create is create-only; updates need the current ETag.
	ds := &deprovision.DeviceState{RegistrationID: "dev-1", PendingOperation: "op-1"}
	if err := j.PutDevice(ctx, ds); err != nil {
		t.Fatal(err)
	}
	if err := j.PutDevice(ctx, &deprovision.DeviceState{RegistrationID: "dev-1"}); !errors.Is(err, deprovision.ErrConflict) {
		t.Fatalf("second create: %v", err)
	}
	stale := *ds
	ds.Intent = deprovision.IntentLost
	if err := j.PutDevice(ctx, ds); err != nil {
		t.Fatal(err)
	}
	if err := j.PutDevice(ctx, &stale); !errors.Is(err, deprovision.ErrPreconditionFailed) {
		t.Fatalf("stale device write: %v", err)
	}
}

// TestForbiddenKeyCharacters: ids holding characters Table keys forbid still round-trip.
func TestForbiddenKeyCharacters(t *testing.T) {
	j, _ := newJournal(t)
	ctx := context.Background()
	ids := []string{"a/b", `a\b`, "a#b", "a?b", "tab\there", "nl\nx", "del\x7f", "c1\u0085", "pct%41", "tilde~7E", "ünïcode", "a'b"}
	for _, id := range ids {
		ds := &deprovision.DeviceState{RegistrationID: id, Intent: deprovision.IntentLost, DeviceID: id, Hub: "h",
			BlockingEnrollment: true, GroupMember: true, HubAction: "disabled", EnrollmentAction: "blocked", OperationID: "op-1", EventTime: t0}
		if err := j.PutDevice(ctx, ds); err != nil {
			t.Fatalf("put %q: %v", id, err)
		}
	}
	for _, id := range ids {
		got, err := j.GetDevice(ctx, id)
		if err != nil || got.DeviceID != id || !got.BlockingEnrollment || !got.GroupMember || got.HubAction != "disabled" ||
			got.EnrollmentAction != "blocked" || got.OperationID != "op-1" || !got.EventTime.Equal(t0) || got.ETag == "" {
			t.Fatalf("get %q: %+v %v", id, got, err)
		}
	}
	// Distinct ids stay distinct once encoded.
	seen := map[string]string{}
	for _, id := range ids {
		k, err := journal.EncodeKey(id)
		if err != nil {
			t.Fatal(err)
		}
		if strings.ContainsAny(k, "/\\#?") {
			t.Fatalf("encoded key %q keeps a forbidden character", k)
		}
		if prev, dup := seen[k]; dup {
			t.Fatalf("%q and %q encode alike", prev, id)
		}
		seen[k] = id
		back, err := journal.DecodeKey(k)
		if err != nil || back != id {
			t.Fatalf("decode(%q) = %q, %v", k, back, err)
		}
	}
	if _, err := journal.EncodeKey(strings.Repeat("/", 400)); err == nil {
		t.Fatal("a key over 1 KiB once encoded was accepted")
	}
	// A history partition for an id with forbidden characters.
	op := sampleOp("op-weird")
	op.Request.RegistrationID = "dev/#?1"
	if _, _, err := j.CreateOperation(ctx, op); err != nil {
		t.Fatal(err)
	}
	if h, err := j.DeviceHistory(ctx, "dev/#?1"); err != nil || len(h) != 1 {
		t.Fatalf("history of an id with forbidden characters: %v %v", h, err)
	}
}

// TestSizeLimits: long text is cut, a large plan is split over properties, and what cannot fit
// is refused by the journal itself (Azurite does not enforce every limit).
func TestSizeLimits(t *testing.T) {
	j, _ := newJournal(t)
	ctx := context.Background()
	op := sampleOp("op-big")
	// ASCII only in the large values: Azurite (3.35) does not return large non-ASCII values
	// intact, whoever writes them (docs/journal.md). The UTF-16 arithmetic of the limits is
	// tested in keys_test.go.
	op.Reason = strings.Repeat("u", 100_000)
	op.Request.CertificatePEM = strings.Repeat("A", 40_000) // over one property: split
	// A plan with long reasons: several properties' worth of JSON.
	op.Plan = &deprovision.Plan{Intent: deprovision.IntentLost, Path: "p"}
	for i := range 20 {
		op.Plan.Steps = append(op.Plan.Steps, deprovision.Step{Kind: deprovision.StepDisableDevice, Target: "t", Reason: strings.Repeat("x", 10000) + string(rune('a'+i))})
	}
	if _, _, err := j.CreateOperation(ctx, op); err != nil {
		t.Fatalf("large operation: %v", err)
	}
	got, err := j.GetOperation(ctx, op.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Plan.Steps) != 20 || got.Plan.Steps[19].Reason != op.Plan.Steps[19].Reason {
		t.Fatalf("plan did not round-trip through chunks: %d steps, last %d vs %d", len(got.Plan.Steps), len(got.Plan.Steps[len(got.Plan.Steps)-1].Reason), len(op.Plan.Steps[19].Reason))
	}
	if got.Request.CertificatePEM != op.Request.CertificatePEM {
		t.Fatal("request did not round-trip through chunks")
	}
	if !strings.HasSuffix(got.Reason, "[truncated]") || len([]rune(got.Reason)) > 4096 {
		t.Fatalf("reason kept %d characters", len([]rune(got.Reason)))
	}
	// A step error of any length is cut to fit.
	if err := j.RecordStep(ctx, deprovision.StepRecord{OperationID: op.ID, Index: 0, Error: strings.Repeat("x", 200_000)}); err != nil {
		t.Fatal(err)
	}
	// A request that no row can hold is refused with a reason.
	huge := sampleOp("op-huge")
	huge.Request.CertificatePEM = strings.Repeat("B", 400_000)
	if _, _, err := j.CreateOperation(ctx, huge); err == nil || !strings.Contains(err.Error(), "request") {
		t.Fatalf("oversized request: %v", err)
	}
}

func TestOpenOperations(t *testing.T) {
	j, _ := newJournal(t)
	ctx := context.Background()
	for i, st := range []deprovision.Status{deprovision.StatusRunning, deprovision.StatusSucceeded, deprovision.StatusRunning} {
		op := sampleOp("op-open-" + string(rune('a'+i)))
		op.Status = st
		op.Updated = t0.Add(time.Duration(i) * time.Hour)
		if _, _, err := j.CreateOperation(ctx, op); err != nil {
			t.Fatal(err)
		}
	}
	var ids []string
	for op, err := range j.OpenOperations(ctx, t0.Add(90*time.Minute)) {
		if err != nil {
			t.Fatal(err)
		}
		if op.ETag == "" {
			t.Error("open operation without ETag")
		}
		ids = append(ids, op.ID)
	}
	if len(ids) != 1 || ids[0] != "op-open-a" {
		t.Fatalf("open operations %v", ids)
	}
}

func TestUnavailableIsTransient(t *testing.T) {
	noRetry := &aztables.ClientOptions{ClientOptions: azcore.ClientOptions{Retry: policy.RetryOptions{MaxRetries: -1}}}
	svc, err := aztables.NewServiceClientFromConnectionString(
		"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey="+testenv.AzuriteKey+";TableEndpoint=http://127.0.0.1:1/devstoreaccount1;", noRetry)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err = journal.New(ctx, svc, journal.Options{})
	if !deprovision.IsTransient(err) {
		t.Fatalf("journal unreachable: %v, want a transient error", err)
	}
}
