package handler

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http/httptest"
	"os"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf16"
	"unicode/utf8"

	"dpsdeprov/deprovision"
	"dpsdeprov/deprovision/fake"
)

// ceEvent is a valid CloudEvent asking for a device's loss.
func ceEvent(id, rid string) json.RawMessage {
	b, _ := json.Marshal(map[string]any{"specversion": "1.0", "type": "device-lost", "source": "/assets/inventory", "id": id,
		"time": "2024-05-01T12:00:00Z", "data": map[string]any{"registrationId": rid}})
	return b
}

// arrayEnvelope is an invocation whose event value is an array (cardinality "many").
func arrayEnvelope(t *testing.T, events ...json.RawMessage) []byte {
	t.Helper()
	arr, _ := json.Marshal(events)
	return hostileEnvelope(t, arr, nil)
}

func newServer(t *testing.T, h *Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

// gateEngine holds every Submit until the test releases it, counting how many wait at once.
type gateEngine struct {
	*fakeEngine
	entered chan string
	release chan struct{}
	mu      sync.Mutex
	now     int
	max     int
}

func (g *gateEngine) Submit(ctx context.Context, req deprovision.Request) (*deprovision.Operation, error) {
	g.mu.Lock()
	g.now++
	g.max = max(g.max, g.now)
	g.mu.Unlock()
	g.entered <- req.RegistrationID
	<-g.release
	g.mu.Lock()
	g.now--
	g.mu.Unlock()
	return g.fakeEngine.Submit(ctx, req)
}

// The events of one array are handled at most MaxConcurrentEvents at a time: with every
// Submit held, exactly that many are in flight, and each release lets one more in.
func TestEventArrayConcurrencyIsBounded(t *testing.T) {
	const n, bound = 40, 4
	g := &gateEngine{fakeEngine: newFakeEngine(), entered: make(chan string, n), release: make(chan struct{})}
	h, err := New(Options{Engine: g, Clock: fixedClock(time.Date(2024, 5, 1, 12, 0, 1, 0, time.UTC)), MaxConcurrentEvents: bound})
	if err != nil {
		t.Fatal(err)
	}
	srv := newServer(t, h)
	var events []json.RawMessage
	for i := range n {
		events = append(events, ceEvent(fmt.Sprintf("ev-%d", i), fmt.Sprintf("dev-%d", i)))
	}
	done := make(chan int)
	go func() {
		status, _ := post(t, srv, FunctionDeviceEvents, arrayEnvelope(t, events...))
		done <- status
	}()
	for range bound {
		<-g.entered
	}
	// Each release lets exactly one more event in: the bound holds while the array drains.
	// Before each release, whatever else is runnable gets to run (a yield, not a wait): were
	// the events not bounded, more of them would enter then, and the maximum would pass it.
	for range n - bound {
		for range 200 {
			runtime.Gosched()
		}
		g.release <- struct{}{}
		<-g.entered
	}
	for range bound {
		g.release <- struct{}{}
	}
	if status := <-done; status != 200 {
		t.Fatalf("answered %d", status)
	}
	if g.max != bound {
		t.Fatalf("%d events were handled at once; the bound is %d", g.max, bound)
	}
	if len(g.submitted) != n {
		t.Fatalf("%d of %d events reached the engine", len(g.submitted), n)
	}
}

// panicEngine panics in Submit for device "boom", after journaling the operation running (as
// the engine does before its first step) when running is set.
type panicEngine struct {
	*fakeEngine
	journal *fake.Journal
	running bool
}

func (p *panicEngine) Submit(ctx context.Context, req deprovision.Request) (*deprovision.Operation, error) {
	if req.RegistrationID == "boom" {
		if p.running {
			op := &deprovision.Operation{ID: deprovision.OperationID(req.Source, req.EventID), Request: req, Status: deprovision.StatusRunning,
				LeaseOwner: "me", LeaseUntil: time.Date(2024, 5, 1, 12, 5, 0, 0, time.UTC)}
			if _, _, err := p.journal.CreateOperation(ctx, op); err != nil {
				return nil, err
			}
		}
		var m map[string]int
		//lint:ignore SA5000 the point: a real runtime panic
		m["SharedAccessKey=c2VjcmV0LWtleS10aGF0LW11c3Qtbm90LWxlYWs="]++ // a nil map write: a real runtime panic, naming a secret
	}
	return p.fakeEngine.Submit(ctx, req)
}

// A panic while one event is handled is recovered: the event's operation is journaled failed
// with the panic named (and no secret), the other events of the array are handled, and the
// invocation succeeds, so Event Grid does not deliver the event into the same panic again.
// Without a FailureRecorder the invocation fails instead, as before.
func TestPanicIsJournaledAsFailedOperation(t *testing.T) {
	now := time.Date(2024, 5, 1, 12, 0, 1, 0, time.UTC)
	for _, running := range []bool{false, true} {
		t.Run(fmt.Sprintf("operation running before the panic %t", running), func(t *testing.T) {
			j := fake.NewJournal()
			eng := &panicEngine{fakeEngine: newFakeEngine(), journal: j, running: running}
			h, err := New(Options{Engine: eng, Clock: fixedClock(now), Failures: &JournalFailures{Journal: j, Clock: fixedClock(now)}})
			if err != nil {
				t.Fatal(err)
			}
			srv := newServer(t, h)
			status, res := post(t, srv, FunctionDeviceEvents, arrayEnvelope(t, ceEvent("a", "ok-1"), ceEvent("b", "boom"), ceEvent("c", "ok-2")))
			if status != 200 {
				t.Fatalf("answered %d: %v", status, res.Logs)
			}
			op, err := j.GetOperation(context.Background(), deprovision.OperationID("/assets/inventory", "b"))
			if err != nil {
				t.Fatalf("the panicking event has no operation: %v", err)
			}
			if op.Status != deprovision.StatusFailed || !strings.Contains(op.Reason, "internal error") || !strings.Contains(op.Reason, "nil map") {
				t.Fatalf("operation %s %q; want failed, naming the panic", op.Status, op.Reason)
			}
			if strings.Contains(op.Reason, "c2VjcmV0") || strings.Contains(strings.Join(res.Logs, " "), "c2VjcmV0") {
				t.Fatalf("the panic's secret reached the journal or the logs: %q", op.Reason)
			}
			if op.LeaseOwner != "" || op.Request.RegistrationID != "boom" {
				t.Fatalf("failed operation kept a lease or lost its request: %+v", op)
			}
			if !op.Unannounced() {
				t.Fatal("the failed operation is not left for the cleanup to announce")
			}
			if len(eng.submitted) != 2 {
				t.Fatalf("%d other events reached the engine, want 2", len(eng.submitted))
			}
			// Delivered again (here into the same panic), it finds its operation ended, and the
			// invocation still succeeds.
			if status, _ := post(t, srv, FunctionDeviceEvents, hostileEnvelope(t, ceEvent("b", "boom"), nil)); status != 200 {
				t.Fatalf("redelivery answered %d", status)
			}
		})
	}
	t.Run("no failure recorder", func(t *testing.T) {
		eng := &panicEngine{fakeEngine: newFakeEngine()}
		h, err := New(Options{Engine: eng, Clock: fixedClock(now)})
		if err != nil {
			t.Fatal(err)
		}
		if status, _ := post(t, newServer(t, h), FunctionDeviceEvents, hostileEnvelope(t, ceEvent("b", "boom"), nil)); status != 500 {
			t.Fatalf("answered %d; without a failure recorder the invocation must fail", status)
		}
	})
}

// boundSeed replays one case of TestBoundRejectedKeepsRequestsWithinTableLimits:
// BOUND_SEED=<seed> go test -run TestBoundRejected ./handler
func boundSeeds() []uint64 {
	if s := os.Getenv("BOUND_SEED"); s != "" {
		n, _ := strconv.ParseUint(s, 10, 64)
		return []uint64{n}
	}
	seeds := make([]uint64, 60)
	for i := range seeds {
		seeds[i] = uint64(i + 1)
	}
	return seeds
}

var cutMarker = regexp.MustCompile(`…\[(\d+) characters cut, sha256:([0-9a-f]{64})\]$`)

// Over generated requests whose fields are anything up to Event Grid's 1 MB (control
// characters, invalid UTF-8, characters outside the BMP), what a rejection journals fits the
// journal: each field within its bound, the request's JSON far below the 300,000 characters
// the journal takes, a field within its bound unchanged, and a cut field the original's start
// followed by a marker that counts the cut characters and hashes exactly the cut bytes.
func TestBoundRejectedKeepsRequestsWithinTableLimits(t *testing.T) {
	alphabets := []string{"a", "\x00\x01\x1f", "é€", "😀𝄞", "\xff\xfe", "-----BEGIN CERTIFICATE-----\nMIIB\n", "\"\\<>&"}
	gen := func(r *rand.Rand) string {
		n := 0
		switch r.IntN(4) {
		case 0:
			n = r.IntN(200)
		case 1:
			n = r.IntN(2000)
		case 2:
			n = r.IntN(100_000)
		default:
			n = 300_000 + r.IntN(700_000)
		}
		var b strings.Builder
		for b.Len() < n {
			a := alphabets[r.IntN(len(alphabets))]
			b.WriteString(a)
		}
		return b.String()
	}
	for _, seed := range boundSeeds() {
		r := rand.New(rand.NewPCG(seed, 0x5eed))
		in := deprovision.Request{EventID: gen(r), Source: gen(r), EventType: gen(r), RegistrationID: gen(r), DeviceID: gen(r),
			Hub: gen(r), EnrollmentGroupID: gen(r), TargetHub: gen(r), Reason: gen(r), CertificatePEM: gen(r), DryRun: r.IntN(2) == 0}
		out := boundRejected(in)
		b, _ := json.Marshal(out)
		if n := len(utf16.Encode([]rune(string(b)))); n >= 200_000 {
			t.Fatalf("seed %d: the bounded request's JSON is %d UTF-16 characters; the journal takes 300,000 and this bound promises 200,000", seed, n)
		}
		fields := []struct {
			name    string
			in, out string
			limit   int
		}{
			{"id", in.EventID, out.EventID, maxJournaledField}, {"source", in.Source, out.Source, maxJournaledField},
			{"type", in.EventType, out.EventType, maxJournaledField}, {"registrationId", in.RegistrationID, out.RegistrationID, maxJournaledField},
			{"deviceId", in.DeviceID, out.DeviceID, maxJournaledField}, {"iotHub", in.Hub, out.Hub, maxJournaledField},
			{"group", in.EnrollmentGroupID, out.EnrollmentGroupID, maxJournaledField}, {"targetHub", in.TargetHub, out.TargetHub, maxJournaledField},
			{"reason", in.Reason, out.Reason, maxJournaledField}, {"certificate", in.CertificatePEM, out.CertificatePEM, maxCertificateBytes},
		}
		for _, f := range fields {
			within := utf8.RuneCountInString(f.in) <= f.limit
			if f.name == "certificate" {
				// PEM text is cut only beyond what the checks accept, and then below the
				// engine's own bound for a rejected certificate, marker included.
				within = len(f.in) <= maxCertificateBytes
				if !pemLike(f.in) {
					f.limit, within = maxJournaledOddCertificate, utf8.RuneCountInString(f.in) <= maxJournaledOddCertificate
				} else if len(f.out) > maxCertificateBytes {
					t.Fatalf("seed %d: the certificate kept %d bytes; the engine keeps at most %d of a rejection", seed, len(f.out), maxCertificateBytes)
				}
			}
			if n := utf8.RuneCountInString(f.out); n > f.limit {
				t.Fatalf("seed %d: %s kept %d characters; the bound is %d", seed, f.name, n, f.limit)
			}
			if within {
				if f.out != f.in {
					t.Fatalf("seed %d: %s was within its bound and changed", seed, f.name)
				}
				continue
			}
			m := cutMarker.FindStringSubmatchIndex(f.out)
			if m == nil {
				t.Fatalf("seed %d: %s was cut without a marker: …%q", seed, f.name, f.out[max(0, len(f.out)-120):])
			}
			kept := f.out[:m[0]]
			if !strings.HasPrefix(f.in, kept) {
				t.Fatalf("seed %d: %s kept text that is not the original's start", seed, f.name)
			}
			tail := f.in[len(kept):]
			count, _ := strconv.Atoi(f.out[m[2]:m[3]])
			sum := sha256.Sum256([]byte(tail))
			if count != utf8.RuneCountInString(tail) || f.out[m[4]:m[5]] != hex.EncodeToString(sum[:]) {
				t.Fatalf("seed %d: %s's marker names %d characters and %s; the cut part has %d and hashes to %x", seed, f.name, count, f.out[m[4]:m[5]], utf8.RuneCountInString(tail), sum)
			}
		}
	}
}

// A panic while one deferred request of a burst message is submitted is recovered as for an
// event: its operation is journaled failed, the message's other requests are submitted, and
// the invocation succeeds.
func TestBurstPanicIsJournaledAsFailedOperation(t *testing.T) {
	now := time.Date(2024, 5, 1, 12, 0, 1, 0, time.UTC)
	j := fake.NewJournal()
	eng := &panicEngine{fakeEngine: newFakeEngine(), journal: j, running: true}
	h, err := New(Options{Engine: eng, Clock: fixedClock(now), Failures: &JournalFailures{Journal: j, Clock: fixedClock(now)}})
	if err != nil {
		t.Fatal(err)
	}
	req := func(id, dev string) deprovision.Request {
		return deprovision.Request{EventID: id, Source: "/security", Intent: deprovision.IntentCompromised, RegistrationID: dev}
	}
	batch, _ := json.Marshal(deprovision.DeferredRequests{Requests: []deprovision.Request{req("a", "ok-1"), req("b", "boom"), req("c", "ok-2")}})
	if status, res := post(t, newServer(t, h), FunctionBurstWork, burstInvocation(t, string(batch))); status != 200 {
		t.Fatalf("answered %d: %v", status, res.Logs)
	}
	op, err := j.GetOperation(context.Background(), deprovision.OperationID("/security", "b"))
	if err != nil || op.Status != deprovision.StatusFailed || !strings.Contains(op.Reason, "internal error") {
		t.Fatalf("the panicking request's operation: %+v %v; want failed, naming the panic", op, err)
	}
	if len(eng.submitted) != 2 {
		t.Fatalf("%d other requests reached the engine, want 2", len(eng.submitted))
	}
}
