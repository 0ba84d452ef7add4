package scenario_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"dpsdeprov/deprovision"
	"dpsdeprov/handler"
	"dpsdeprov/internal/testenv"
)

var handlerBuild struct {
	once sync.Once
	bin  string
	err  error
}

// handlerBinary builds the app's handler once per test binary.
func handlerBinary(t *testing.T) string {
	t.Helper()
	handlerBuild.once.Do(func() {
		root, err := testenv.RepoRoot()
		if err != nil {
			handlerBuild.err = err
			return
		}
		dir, err := os.MkdirTemp("", "faultsuite-")
		if err != nil {
			handlerBuild.err = err
			return
		}
		handlerBuild.bin = filepath.Join(dir, "handler")
		cmd := exec.Command("go", "build", "-o", handlerBuild.bin, ".")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			handlerBuild.err = fmt.Errorf("building the handler: %v\n%s", err, out)
		}
	})
	if handlerBuild.err != nil {
		t.Fatal(handlerBuild.err)
	}
	return handlerBuild.bin
}

// handlerProc is the app's handler binary running against e's emulator and journal tables.
type handlerProc struct {
	url  string
	cmd  *exec.Cmd
	done chan struct{}
	log  testenv.Output
}

func (e *env) startHandlerProc(t *testing.T) *handlerProc {
	t.Helper()
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	p := &handlerProc{url: "http://127.0.0.1:" + strconv.Itoa(port), done: make(chan struct{})}
	p.cmd = exec.Command(handlerBinary(t))
	p.cmd.Dir = t.TempDir()
	p.cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"),
		"FUNCTIONS_CUSTOMHANDLER_PORT=" + strconv.Itoa(port),
		"AzureWebJobsStorage=" + testenv.SharedAzurite(t).ConnectionString(),
		"JOURNAL_TABLE_PREFIX=" + e.jopts.TablePrefix,
		"DPS_CONNECTION_STRING=" + e.info.DPS.ConnectionString,
		"EMULATOR_ADDRESS=" + e.info.Addr, "EMULATOR_CA_FILE=" + e.info.CAFile,
		"CLEANUP_SCHEDULE=0 */5 * * * *", "LOG_LEVEL=debug"}
	for i, h := range e.info.Hubs {
		p.cmd.Env = append(p.cmd.Env, fmt.Sprintf("IOT_HUB_CONNECTION_STRING_%d=%s", i, h.ConnectionString))
	}
	p.cmd.Stderr = &p.log
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(p.kill)
	if testenv.UpOrExited(t, "the handler to answer GET /", p.done, testenv.AnswersGET(p.url+"/")) {
		t.Fatalf("the handler exited during start-up:\n%s", p.log.String())
	}
	return p

}

// kill ends the process abruptly, as a crash or an evicted instance does.
func (p *handlerProc) kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// deliver posts one DeviceEvents invocation and returns the status the host would see (0
// when the connection broke).
func (p *handlerProc) deliver(event map[string]any) int {
	body, _ := json.Marshal(map[string]any{"Data": map[string]any{"event": event}, "Metadata": map[string]any{}})
	req, _ := http.NewRequest(http.MethodPost, p.url+"/"+handler.FunctionDeviceEvents, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Azure-Functions-InvocationId", "00000000-0000-4000-8000-000000000001")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// expireLease stands for the time a dead delivery's lease takes to run out (5 minutes in
// the app): the next delivery may then take the operation over.
func (e *env) expireLease(t *testing.T, opID string) {
	t.Helper()
	op, err := e.ports.Journal.GetOperation(context.Background(), opID)
	if err != nil || op.LeaseOwner == "" {
		return
	}
	op.LeaseUntil = time.Now().Add(-time.Second)
	if err := e.ports.Journal.UpdateOperation(context.Background(), op); err != nil {
		t.Fatalf("expiring the lease of %s: %v", opID, err)
	}
}

// TestFaultSuiteHandlerKilled runs the app's handler binary, kills it (SIGKILL) as soon as
// the emulator has answered its N-th successful DPS or hub write, for each N in turn, starts
// it again and redelivers until the event is answered 2xx: the end must match a delivery
// that was never interrupted. Every call to the emulator is slowed down a little so that the
// kill lands between writes; a write in flight at the kill may still land, which is the case
// of an answer lost with the process.
func TestFaultSuiteHandlerKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and restarts the handler binary")
	}
	var total tally
	// The single-device paths: in the app, a group-wide operation hands its members to the
	// GroupWork queue, which this test does not drive (TestFaultSuite kills group paths
	// in-process, where members are applied inline).
	var paths []faultPath
	for _, p := range faultPaths() {
		if p.name != "group compromised" && p.name != "group retired" {
			paths = append(paths, p)
		}
	}
	if !fullFaults() {
		paths = paths[5:6] // X.509 group member sold: blocking enrollment, device delete
	}
	for pi, p := range paths {
		t.Run(p.name, func(t *testing.T) {
			one := newFaultEnv(t)
			req, ids, groups := p.setup(one)
			one.em.ResetStats()
			if _, err := deliverEvent(t, one.handlerServer(), eventFor(req, time.Now().Add(-time.Minute))); err != nil {
				t.Fatal(err)
			}
			opID := deprovision.OperationID(req.Source, "evt-"+req.EventID)
			ref := faultRef{status: deprovision.StatusSucceeded, state: one.state(t, opID, req.RegistrationID, ids, groups), writes: one.writesByOp()}
			var writes int64
			for _, n := range ref.writes {
				writes += n
			}
			for _, i := range sample(int(writes), 1, pi) {
				at := int64(i + 1)
				what := fmt.Sprintf("handler killed after write %d of %d", at, writes)
				t.Run(what, func(t *testing.T) {
					e := newFaultEnv(t)
					p.setup(e)
					e.em.ResetStats()
					ev := eventFor(req, time.Now().Add(-time.Minute))
					proc := e.startHandlerProc(t)
					e.em.SetLatency(40 * time.Millisecond)
					stop := make(chan struct{})
					killed := make(chan bool, 1)
					go func() {
						for {
							if e.writes() >= at {
								proc.kill()
								killed <- true
								return
							}
							select {
							case <-stop:
								killed <- false
								return
							case <-time.After(time.Millisecond):
							}
						}
					}()
					status := proc.deliver(ev)
					close(stop)
					if !<-killed {
						t.Fatalf("%s: the delivery ended (%d) before write %d", what, status, at)
					}
					e.em.SetLatency(0)
					proc = e.startHandlerProc(t)
					deliveries := 1
					for ; deliveries <= 50; deliveries++ {
						e.expireLease(t, opID)
						if st := proc.deliver(ev); st/100 == 2 {
							break
						}
					}
					op, _, err := e.engine(nil).Operation(context.Background(), opID)
					if err != nil {
						t.Fatal(err)
					}
					e.checkAgainst(t, ref, op, req, ids, groups, what, 0) // single-device paths: no bulk call
					total.add(p.name, 1, 0, 1, 0, deliveries+1, 0)
				})
			}
		})
	}
	t.Logf("handler kills: %s", &total)
}
