package swaggercheck

import (
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"dpsdeprov/azure/loopback"
	"dpsdeprov/emulator"
	"dpsdeprov/internal/testenv"
)

var (
	cacheMu sync.Mutex
	cache   = map[string]*Spec{}
)

// CheckAtEnd checks every request rec recorded against the specification file (a name in
// the shared reference's specs folder, such as "dps-service.json") when tb ends. When the
// shared reference is not beside the checkout it logs that and checks nothing, rather than
// skipping the test that uses it, whose own assertions still stand.
func CheckAtEnd(tb testing.TB, rec *Recorder, file string) {
	tb.Helper()
	root, err := testenv.RepoRoot()
	if err != nil {
		tb.Fatal(err)
	}
	path := filepath.Join(filepath.Dir(root), "shared", "reference", "specs", file)
	if _, err := os.Stat(path); err != nil {
		tb.Logf("requests not checked against %s: the shared reference is absent (%v)", file, err)
		return
	}
	cacheMu.Lock()
	spec := cache[path]
	if spec == nil {
		if spec, err = Load(path); err != nil {
			cacheMu.Unlock()
			tb.Fatal(err)
		}
		cache[path] = spec
	}
	cacheMu.Unlock()
	tb.Cleanup(func() {
		for _, r := range rec.Requests() {
			_, errs := spec.Check(r)
			for _, err := range errs {
				tb.Errorf("request does not match %s: %v", file, err)
			}
		}
	})
}

// EmulatorOptions returns client options that reach em over its loopback transport, retry
// quickly, and, when rec is not nil, record every request for the check against file that
// [CheckAtEnd] runs when tb ends. Both clients' tests build their clients on it.
func EmulatorOptions(tb testing.TB, em *emulator.Emulator, rec *Recorder, file string) azcore.ClientOptions {
	tb.Helper()
	tr, err := loopback.NewClient(em.Info().Addr, em.CACertPEM())
	if err != nil {
		tb.Fatal(err)
	}
	o := azcore.ClientOptions{
		Transport: tr,
		Retry:     policy.RetryOptions{MaxRetries: 3, RetryDelay: 20 * time.Millisecond, MaxRetryDelay: 3 * time.Second},
	}
	if rec != nil {
		o.PerRetryPolicies = []policy.Policy{rec}
		CheckAtEnd(tb, rec, file)
	}
	return o
}

// Count returns how many recorded requests have method and path.
func (rec *Recorder) Count(method, path string) int {
	n := 0
	for _, r := range rec.Requests() {
		if r.Method == method && r.URL.Path == path {
			n++
		}
	}
	return n
}
