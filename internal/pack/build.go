package pack

import (
	"archive/zip"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"time"
)

// Target platform of the Functions host on Linux plans, Flex Consumption included.
const (
	TargetOS   = "linux"
	TargetArch = "amd64"
)

// zipTime is the modification time of every entry, so that the same inputs give the same zip.
var zipTime = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// Options configures [Build].
type Options struct {
	// Root is the app root (holding host.json and the function folders) and the folder the
	// main package is built from. Required.
	Root string
	// Output is the path of the zip to write. Required.
	Output string
	// MainPackage is the Go package of the handler, relative to Root; "." when empty.
	MainPackage string
	// Go is the go command; "go" on PATH when empty.
	Go string
	// Stderr receives the compiler's output; discarded when nil.
	Stderr io.Writer
}

// Result describes a built package.
type Result struct {
	// Entries lists the zip's entries in the order written.
	Entries []string
	// Executable is the binary's entry name.
	Executable string
	// Size is the zip's size in bytes.
	Size int64
}

// Build cross-compiles the handler for Linux on amd64 (static, without cgo) and writes the
// deployment zip: host.json, each function's function.json and the binary (mode 0755), at
// the paths the host expects relative to the app root.
func Build(ctx context.Context, opts Options) (*Result, error) {
	if opts.Root == "" || opts.Output == "" {
		return nil, errors.New("pack: Options.Root and Options.Output are required")
	}
	app, err := ReadApp(opts.Root)
	if err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp("", "pack-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	bin := filepath.Join(tmp, "handler")
	if err := compile(ctx, opts, bin); err != nil {
		return nil, err
	}

	// Write next to the output and rename, so that a failed build leaves no partial zip.
	if err := os.MkdirAll(filepath.Dir(opts.Output), 0o755); err != nil {
		return nil, err
	}
	out, err := os.CreateTemp(filepath.Dir(opts.Output), ".pack-*.zip")
	if err != nil {
		return nil, err
	}
	defer os.Remove(out.Name())
	res := &Result{Executable: app.Executable}
	zw := zip.NewWriter(out)
	add := func(name, src string, mode os.FileMode) error {
		res.Entries = append(res.Entries, name)
		return addFile(zw, name, src, mode)
	}
	if err := add(HostFile, filepath.Join(app.Root, HostFile), 0o644); err != nil {
		return nil, err
	}
	for _, f := range app.Functions {
		if err := add(path.Join(f.Name, FunctionFile), filepath.Join(app.Root, f.Name, FunctionFile), 0o644); err != nil {
			return nil, err
		}
	}
	if err := add(app.Executable, bin, 0o755); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("writing the package: %w", err)
	}
	if err := out.Close(); err != nil {
		return nil, fmt.Errorf("writing the package: %w", err)
	}
	// CreateTemp makes the file private; the package holds nothing secret.
	if err := os.Chmod(out.Name(), 0o644); err != nil {
		return nil, err
	}
	if err := os.Rename(out.Name(), opts.Output); err != nil {
		return nil, err
	}
	st, err := os.Stat(opts.Output)
	if err != nil {
		return nil, err
	}
	res.Size = st.Size()
	return res, nil
}

// compile builds the handler for the host's platform into bin.
func compile(ctx context.Context, opts Options, bin string) error {
	goCmd := opts.Go
	if goCmd == "" {
		goCmd = "go"
	}
	pkg := opts.MainPackage
	if pkg == "" {
		pkg = "."
	}
	cmd := exec.CommandContext(ctx, goCmd, "build", "-trimpath", "-ldflags=-s -w -buildid=", "-o", bin, pkg)
	cmd.Dir = opts.Root
	// CGO_ENABLED=0 gives a static binary: the host's image promises no particular libc.
	cmd.Env = append(os.Environ(), "GOOS="+TargetOS, "GOARCH="+TargetArch, "CGO_ENABLED=0")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if opts.Stderr != nil {
		cmd.Stderr = io.MultiWriter(&stderr, opts.Stderr)
	}
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("building the handler %s for %s/%s: %w\n%s", pkg, TargetOS, TargetArch, err, stderr.Bytes())
	}
	return nil
}

func addFile(zw *zip.Writer, name, src string, mode os.FileMode) error {
	f, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("packaging %s: %w", name, err)
	}
	defer f.Close()
	h := &zip.FileHeader{Name: name, Method: zip.Deflate, Modified: zipTime}
	// SetMode records Unix permissions, which the host's unzip keeps: the binary must stay
	// executable.
	h.SetMode(mode)
	w, err := zw.CreateHeader(h)
	if err != nil {
		return fmt.Errorf("packaging %s: %w", name, err)
	}
	if _, err := io.Copy(w, f); err != nil {
		return fmt.Errorf("packaging %s: %w", name, err)
	}
	return nil
}
