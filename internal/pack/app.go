// Package pack reads the layout of the Functions app (host.json and the function folders at
// the repository root) and builds the deployment zip that the Functions host runs: host.json,
// each function folder's function.json and the custom handler's binary, cross-compiled for
// Linux on amd64, and nothing else.
package pack

import (
	"encoding/json"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// HostFile is the name of the host configuration at the app root.
const HostFile = "host.json"

// FunctionFile is the name of a function's metadata inside its folder.
const FunctionFile = "function.json"

// functionName is the host's rule for function (folder) names (Utility.FunctionNameValidationRegex).
var functionName = regexp.MustCompile(`(?i)^[a-z][a-z0-9_\-]{0,127}$`)

// App is the Functions app found at a root folder.
type App struct {
	// Root is the app root: the folder holding host.json.
	Root string
	// Executable is host.json's customHandler.description.defaultExecutablePath, the path
	// of the handler binary relative to the root.
	Executable string
	// Functions lists the function folders, sorted by name.
	Functions []Function
}

// Function is one function folder.
type Function struct {
	// Name is the folder name, which the host uses as the function name.
	Name     string
	Bindings []Binding
}

// Binding is one entry of a function.json "bindings" array, with the properties this
// project's deployment depends on.
type Binding struct {
	Type       string `json:"type"`
	Direction  string `json:"direction"`
	Name       string `json:"name"`
	QueueName  string `json:"queueName,omitempty"`
	Connection string `json:"connection,omitempty"`
	Schedule   string `json:"schedule,omitempty"`
}

// Trigger returns the function's trigger binding. ReadApp guarantees there is exactly one.
func (f Function) Trigger() Binding {
	for _, b := range f.Bindings {
		if strings.HasSuffix(b.Type, "Trigger") {
			return b
		}
	}
	return Binding{}
}

// FunctionsWithTrigger returns the functions whose trigger has the given type, such as
// "eventGridTrigger".
func (a *App) FunctionsWithTrigger(typ string) []Function {
	var out []Function
	for _, f := range a.Functions {
		if strings.EqualFold(f.Trigger().Type, typ) {
			out = append(out, f)
		}
	}
	return out
}

type hostJSON struct {
	Version       string `json:"version"`
	CustomHandler *struct {
		Description *struct {
			DefaultExecutablePath string `json:"defaultExecutablePath"`
		} `json:"description"`
	} `json:"customHandler"`
}

// ReadApp reads host.json and every function folder under root: the folders one level down
// that hold a function.json, as the host enumerates them.
func ReadApp(root string) (*App, error) {
	hostPath := filepath.Join(root, HostFile)
	b, err := os.ReadFile(hostPath)
	if err != nil {
		return nil, fmt.Errorf("reading the app's host configuration: %w", err)
	}
	var h hostJSON
	if err := json.Unmarshal(b, &h); err != nil {
		return nil, fmt.Errorf("parsing %s: %w", hostPath, err)
	}
	if h.Version != "2.0" {
		return nil, fmt.Errorf("%s: version is %q; the Functions host requires \"2.0\"", hostPath, h.Version)
	}
	if h.CustomHandler == nil || h.CustomHandler.Description == nil || h.CustomHandler.Description.DefaultExecutablePath == "" {
		return nil, fmt.Errorf("%s: customHandler.description.defaultExecutablePath is not set; it names the handler binary the host starts", hostPath)
	}
	exe := h.CustomHandler.Description.DefaultExecutablePath
	if path.IsAbs(exe) || filepath.IsAbs(exe) || strings.Contains(exe, `\`) || !filepath.IsLocal(exe) {
		return nil, fmt.Errorf("%s: defaultExecutablePath %q must be a path inside the app root, with forward slashes, so that the binary can travel in the package", hostPath, exe)
	}
	app := &App{Root: root, Executable: path.Clean(exe)}

	entries, err := os.ReadDir(root)
	if err != nil {
		return nil, fmt.Errorf("listing the app root: %w", err)
	}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		fp := filepath.Join(root, e.Name(), FunctionFile)
		b, err := os.ReadFile(fp)
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("reading function %s: %w", e.Name(), err)
		}
		f, err := parseFunction(e.Name(), b)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", fp, err)
		}
		app.Functions = append(app.Functions, f)
	}
	if len(app.Functions) == 0 {
		return nil, fmt.Errorf("no function folder (a folder holding %s) under the app root %s", FunctionFile, root)
	}
	sort.Slice(app.Functions, func(i, j int) bool { return app.Functions[i].Name < app.Functions[j].Name })
	if first, _, _ := strings.Cut(app.Executable, "/"); first == HostFile || app.function(first) {
		return nil, fmt.Errorf("%s: defaultExecutablePath %q collides with the app's own files", hostPath, exe)
	}
	return app, nil
}

func (a *App) function(name string) bool {
	for _, f := range a.Functions {
		if f.Name == name {
			return true
		}
	}
	return false
}

// parseFunction checks a function.json the way the host does where a mistake would only show
// after deployment: the folder name, and exactly one trigger.
func parseFunction(name string, b []byte) (Function, error) {
	if !functionName.MatchString(name) || strings.EqualFold(name, "host") {
		return Function{}, fmt.Errorf("folder name %q is not a valid function name (a letter, then up to 127 letters, digits, _ or -; not \"host\")", name)
	}
	var doc struct {
		Bindings []Binding `json:"bindings"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return Function{}, fmt.Errorf("parsing: %w", err)
	}
	f := Function{Name: name, Bindings: doc.Bindings}
	triggers := 0
	for _, bd := range doc.Bindings {
		if strings.HasSuffix(bd.Type, "Trigger") {
			triggers++
		}
	}
	if triggers != 1 {
		return Function{}, fmt.Errorf("function %s has %d trigger bindings; the host requires exactly one", name, triggers)
	}
	return f, nil
}
