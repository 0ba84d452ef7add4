package scenario_test

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"dpsdeprov/azure/journal"
	"dpsdeprov/deprovision"
	"dpsdeprov/internal/testenv"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"
)

// diskAzurite is an Azurite that keeps its data in a folder, so that it can be stopped and
// started again on the same ports with the journal intact, as a storage outage looks to the
// app. It is stopped with SIGTERM, not SIGKILL: Azurite saves its tables every 5 s, so a
// SIGKILL would lose writes it had acknowledged, which Table Storage never does; the suite
// tests the app against an outage, not Azurite against a crash.
type diskAzurite struct {
	t           *testing.T
	dir         string
	table, blob int
	queue       int
	cmd         *exec.Cmd
	done        chan struct{}
}

func startDiskAzurite(t *testing.T) *diskAzurite {
	t.Helper()
	a := &diskAzurite{t: t, dir: t.TempDir()}
	var err error
	for _, p := range []*int{&a.table, &a.blob, &a.queue} {
		if *p, err = testenv.FreePort(); err != nil {
			t.Fatal(err)
		}
	}
	a.start()
	t.Cleanup(a.stop)
	return a
}

func (a *diskAzurite) start() {
	a.t.Helper()
	bin, err := testenv.AzuriteBinary()
	if err != nil {
		a.t.Fatal(err) // like testenv: a missing Azurite is a broken set-up, not a reason to skip
	}
	a.cmd = exec.Command(bin, "--silent", "--disableTelemetry", "--skipApiVersionCheck", "--location", a.dir,
		"--blobHost", "127.0.0.1", "--blobPort", strconv.Itoa(a.blob),
		"--queueHost", "127.0.0.1", "--queuePort", strconv.Itoa(a.queue),
		"--tableHost", "127.0.0.1", "--tablePort", strconv.Itoa(a.table))
	a.cmd.Dir = a.dir
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := a.cmd.Start(); err != nil {
		a.t.Fatalf("starting azurite: %v", err)
	}
	a.done = make(chan struct{})
	go func(c *exec.Cmd, done chan struct{}) { _ = c.Wait(); close(done) }(a.cmd, a.done)
	if testenv.UpOrExited(a.t, "azurite to open its table port", a.done, func() bool {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(a.table), 200*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err == nil
	}) {
		a.t.Fatal("azurite exited before it was ready")
	}
}

// stop ends the process and waits for it, so that its ports are free to start again.
func (a *diskAzurite) stop() {
	if a.cmd == nil || a.cmd.Process == nil {
		return
	}
	select {
	case <-a.done:
		return
	default:
	}
	_ = syscall.Kill(-a.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-a.done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-a.cmd.Process.Pid, syscall.SIGKILL)
		<-a.done
	}
}

func (a *diskAzurite) connectionString() string {
	return fmt.Sprintf("DefaultEndpointsProtocol=http;AccountName=%s;AccountKey=%s;TableEndpoint=http://127.0.0.1:%d/%s;",
		testenv.AzuriteAccount, testenv.AzuriteKey, a.table, testenv.AzuriteAccount)
}

// onDiskAzurite moves e's journal to a, with a client that gives up quickly while it is away.
func (e *env) onDiskAzurite(a *diskAzurite) {
	e.t.Helper()
	svc, err := aztables.NewServiceClientFromConnectionString(a.connectionString(), &aztables.ClientOptions{ClientOptions: azcore.ClientOptions{
		Retry: policy.RetryOptions{MaxRetries: 1, RetryDelay: 5 * time.Millisecond, MaxRetryDelay: 20 * time.Millisecond, TryTimeout: 5 * time.Second}}})
	if err != nil {
		e.t.Fatal(err)
	}
	e.tbl = svc
	e.jopts = journal.Options{TablePrefix: testenv.UniqueName("o")}
	e.reopenJournal()
}

// TestFaultSuiteStorageOutage takes Table Storage away (Azurite stopped) just before the
// N-th journal call of a run (the delivery, then the GroupWork invocations of a group), for
// each N in turn, brings it back, and redelivers until the operation is terminal: the end must
// match the uninterrupted run, as in TestFaultSuite.
func TestFaultSuiteStorageOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("restarts Azurite many times")
	}
	a := startDiskAzurite(t)
	var total tally
	paths := faultPaths()
	chosen := []faultPath{paths[1], paths[5], paths[9]} // sold (individual), sold (X.509 member), group retired
	if !fullFaults() {
		chosen = chosen[1:2]
	}
	for pi, p := range chosen {
		t.Run(p.name, func(t *testing.T) {
			ref := referenceRun(t, p)
			for _, i := range sample(ref.journal, 2, pi) {
				at := i + 1
				what := fmt.Sprintf("storage gone before journal call %d of %d", at, ref.journal)
				t.Run(what, func(t *testing.T) {
					e := newFaultEnv(t)
					e.onDiskAzurite(a)
					req, ids, groups := p.setup(e)
					e.em.ResetStats()
					cj := &countingJournal{Journal: e.ports.Journal}
					cj.before = func(n int) {
						if n == at {
							a.stop()
						}
					}
					eng := e.engine(func(d deprovision.Deps) deprovision.Deps { d.Journal = cj; return d })
					_, err := eng.Submit(context.Background(), req)
					gone := func() bool { return cj.calls() >= at }
					inWork := !gone() // the delivery ended before the outage: it strikes a GroupWork invocation
					if inWork && err == nil {
						e.groupWorkUntil(eng, gone)
					}
					// The last journal call is the announcement mark (Operation.Announced): the
					// operation is already at rest, so the delivery (or the last batch's GroupWork
					// invocation) rightly succeeds, and the unannounced operation is the Cleanup
					// resume pass's to announce.
					markOnly := at == ref.journal
					switch {
					case markOnly && err != nil:
						t.Fatalf("%s: only the announcement mark was lost, and the delivery answered %v; the operation is at rest and must answer success", what, err)
					case !markOnly && !inWork && (err == nil || !deprovision.IsTransient(err)):
						t.Fatalf("%s: the delivery answered %v, want a transient failure", what, err)
					case !gone():
						t.Fatalf("%s: the run made %d journal calls, the uninterrupted run %d", what, cj.calls(), ref.journal)
					}
					a.start()
					e.reopenJournal()
					if markOnly {
						op, err := e.ports.Journal.GetOperation(context.Background(), deprovision.OperationID(req.Source, req.EventID))
						if err != nil || !op.Status.Terminal() || !op.Announced.IsZero() {
							t.Fatalf("%s: want the operation at rest and not yet announced, got %+v (%v)", what, op, err)
						}
					}
					op, n, err := e.redeliver(req)
					if err != nil {
						t.Fatalf("%s: %v", what, err)
					}
					e.checkAgainst(t, ref, op, req, ids, groups, what, 0)
					total.add(p.name, 1, 0, 0, 1, n+1, 0)
				})
			}
		})
	}
	t.Logf("storage outages: %s", &total)
}
