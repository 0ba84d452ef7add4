// Package testenv starts the real parts that tests run against: Azurite for Table and Queue
// storage (from the project's pinned npm packages) and, through the emulator package, DPS and
// IoT hubs. Nothing is assumed to be running already.
//
// A test package that uses the shared instances calls [Main] from its TestMain, so that what
// was started is stopped when the package's tests end:
//
//	func TestMain(m *testing.M) { testenv.Main(m) }
package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

var (
	mu       sync.Mutex
	stoppers []func()
)

// onExit registers f to run when [Main] returns.
func onExit(f func()) {
	mu.Lock()
	defer mu.Unlock()
	stoppers = append(stoppers, f)
}

// Main runs the package's tests and then stops every shared process started for them.
func Main(m *testing.M) {
	code := m.Run()
	mu.Lock()
	for i := len(stoppers) - 1; i >= 0; i-- {
		stoppers[i]()
	}
	mu.Unlock()
	os.Exit(code)
}

// RepoRoot returns the module root (the folder holding go.mod), found from the working
// directory, which for a test is its package folder.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above the working directory")
		}
		dir = parent
	}
}

// SharedReference returns the path of the shared reference folder (specs, schemas) that sits
// beside the checkout, or skips the test, saying why, when that folder is absent.
func SharedReference(tb testing.TB, rel ...string) string {
	tb.Helper()
	root, err := RepoRoot()
	if err != nil {
		tb.Fatal(err)
	}
	p := filepath.Join(append([]string{filepath.Dir(root), "shared", "reference"}, rel...)...)
	if _, err := os.Stat(p); err != nil {
		tb.Skipf("the shared reference %s is not beside this checkout (%v); this test checks against it and has nothing to check without it", filepath.Join(rel...), err)
	}
	return p
}
