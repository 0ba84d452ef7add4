package swaggercheck

import (
	"os"
	"path/filepath"
	"sync"
	"testing"

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
