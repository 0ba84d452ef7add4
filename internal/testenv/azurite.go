package testenv

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Azurite's well-known development account. It is public, documented by Microsoft, and works
// only against the emulator.
const (
	AzuriteAccount = "devstoreaccount1"
	AzuriteKey     = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

// Azurite is a running Azurite process.
type Azurite struct {
	TablePort, QueuePort, BlobPort int
	cmd                            *exec.Cmd
	done                           chan struct{}
	dir                            string
}

// ConnectionString is the storage connection string for this instance, in the form
// AzureWebJobsStorage takes.
func (a *Azurite) ConnectionString() string {
	return fmt.Sprintf("DefaultEndpointsProtocol=http;AccountName=%s;AccountKey=%s;"+
		"BlobEndpoint=http://127.0.0.1:%d/%s;QueueEndpoint=http://127.0.0.1:%d/%s;TableEndpoint=http://127.0.0.1:%d/%s;",
		AzuriteAccount, AzuriteKey, a.BlobPort, AzuriteAccount, a.QueuePort, AzuriteAccount, a.TablePort, AzuriteAccount)
}

// TableURL is the account's table service URL.
func (a *Azurite) TableURL() string {
	return fmt.Sprintf("http://127.0.0.1:%d/%s", a.TablePort, AzuriteAccount)
}

// QueueURL is the account's queue service URL.
func (a *Azurite) QueueURL() string {
	return fmt.Sprintf("http://127.0.0.1:%d/%s", a.QueuePort, AzuriteAccount)
}

// Stop ends the process and removes its working folder.
func (a *Azurite) Stop() {
	if a.cmd.Process != nil {
		_ = syscall.Kill(-a.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-a.done:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-a.cmd.Process.Pid, syscall.SIGKILL)
			<-a.done
		}
	}
	_ = os.RemoveAll(a.dir)
}

// Kill stops the process abruptly (SIGKILL), as a crash would; with in-memory persistence
// everything it held is gone.
func (a *Azurite) Kill() {
	if a.cmd.Process != nil {
		_ = syscall.Kill(-a.cmd.Process.Pid, syscall.SIGKILL)
		<-a.done
	}
}

// AzuriteBinary returns the path of the project's pinned Azurite, installed by `npm ci`.
func AzuriteBinary() (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(root, "node_modules", ".bin", "azurite")
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("azurite is not installed at node_modules/.bin/azurite: run `npm ci` at the repository root (make test does): %w", err)
	}
	return bin, nil
}

// FreePort asks the kernel for a free loopback TCP port.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// StartAzurite starts Azurite in memory, with telemetry off, on free loopback ports, and
// waits until its table and queue ports accept connections, or it exits, or ctx ends (at
// most [HungAfter]).
func StartAzurite(ctx context.Context) (*Azurite, error) {
	ctx, cancel := context.WithTimeout(ctx, HungAfter)
	defer cancel()
	bin, err := AzuriteBinary()
	if err != nil {
		return nil, err
	}
	var ports [3]int
	for i := range ports {
		if ports[i], err = FreePort(); err != nil {
			return nil, err
		}
	}
	dir, err := os.MkdirTemp("", "azurite-")
	if err != nil {
		return nil, err
	}
	a := &Azurite{BlobPort: ports[0], QueuePort: ports[1], TablePort: ports[2], done: make(chan struct{}), dir: dir}
	a.cmd = exec.Command(bin,
		"--silent", "--inMemoryPersistence", "--disableTelemetry", "--skipApiVersionCheck",
		"--blobHost", "127.0.0.1", "--blobPort", strconv.Itoa(a.BlobPort),
		"--queueHost", "127.0.0.1", "--queuePort", strconv.Itoa(a.QueuePort),
		"--tableHost", "127.0.0.1", "--tablePort", strconv.Itoa(a.TablePort),
	)
	a.cmd.Dir = dir // Azurite writes its debug and extent files to the working folder
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	stderr, err := a.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := a.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting azurite: %w", err)
	}
	var errText []string
	var errMu sync.Mutex
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			errMu.Lock()
			errText = append(errText, sc.Text())
			errMu.Unlock()
		}
	}()
	go func() { _ = a.cmd.Wait(); close(a.done) }()
	for _, p := range []int{a.TablePort, a.QueuePort, a.BlobPort} {
		for {
			c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(p), 200*time.Millisecond)
			if err == nil {
				c.Close()
				break
			}
			select {
			case <-a.done:
				errMu.Lock()
				defer errMu.Unlock()
				return nil, fmt.Errorf("azurite exited before it was ready: %v", errText)
			case <-ctx.Done():
				a.Stop()
				return nil, fmt.Errorf("azurite did not open port %d: %w", p, ctx.Err())
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	return a, nil
}

var (
	sharedAzurite     *Azurite
	sharedAzuriteErr  error
	sharedAzuriteOnce sync.Once
)

// SharedAzurite returns the package's one Azurite, starting it on first use; [Main] stops it.
// Tests keep apart by naming their own tables and queues (see [UniqueName]).
func SharedAzurite(tb testing.TB) *Azurite {
	tb.Helper()
	sharedAzuriteOnce.Do(func() {
		sharedAzurite, sharedAzuriteErr = StartAzurite(context.Background())
		if sharedAzuriteErr == nil {
			onExit(sharedAzurite.Stop)
		}
	})
	if sharedAzuriteErr != nil {
		tb.Fatalf("starting Azurite: %v", sharedAzuriteErr)
	}
	return sharedAzurite
}

// UniqueName returns prefix followed by random lowercase hex, valid as a table or queue name
// when prefix is letters only.
func UniqueName(prefix string) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}
