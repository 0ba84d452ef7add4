package main

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// maxTrackedFile is the largest file the repository may hold. Its biggest sources are a few
// dozen kilobytes; a file of this size is almost always a build output committed by mistake
// (a `go build` at the root writes a binary named after the package there).
const maxTrackedFile = 512 << 10

// TestNoBinariesTracked fails when git tracks an executable or an oversized file: a clean
// clone of main is what CI builds and what operators read, and a binary in it is both
// useless and unreviewable.
func TestNoBinariesTracked(t *testing.T) {
	out, err := exec.Command("git", "ls-files", "-z").Output()
	if err != nil {
		t.Skipf("not a git checkout (git ls-files: %v)", err)
	}
	for _, name := range strings.Split(strings.TrimRight(string(out), "\x00"), "\x00") {
		if name == "" {
			continue
		}
		fi, err := os.Lstat(name)
		if err != nil || !fi.Mode().IsRegular() {
			continue // deleted in the working tree, or a link
		}
		if fi.Size() > maxTrackedFile {
			t.Errorf("%s is tracked and holds %d bytes (limit %d): a build output? remove it with git rm --cached", name, fi.Size(), maxTrackedFile)
			continue
		}
		head := make([]byte, 4)
		f, err := os.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		n, _ := f.Read(head)
		f.Close()
		if n == 4 && bytes.Equal(head, []byte("\x7fELF")) {
			t.Errorf("%s is tracked and is an ELF executable: remove it with git rm --cached", name)
		}
	}
}
