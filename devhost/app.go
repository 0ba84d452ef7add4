package devhost

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// App is a Functions app folder as the host reads it: host.json at the root and one folder per
// function holding its function.json.
type App struct {
	// Root is the absolute path of the app (script) root.
	Root string
	// Host is the parsed host.json.
	Host HostConfig
	// Functions are the app's functions, sorted by name.
	Functions []*Function
}

// HostConfig is the part of host.json that a custom-handler host acts on.
type HostConfig struct {
	Version         string               `json:"version"`
	FunctionTimeout string               `json:"functionTimeout"`
	CustomHandler   *CustomHandlerConfig `json:"customHandler"`
	Extensions      struct {
		Queues QueuesConfig `json:"queues"`
		HTTP   struct {
			RoutePrefix *string `json:"routePrefix"`
		} `json:"http"`
	} `json:"extensions"`
}

// CustomHandlerConfig is host.json's customHandler section.
type CustomHandlerConfig struct {
	Description struct {
		DefaultExecutablePath string   `json:"defaultExecutablePath"`
		WorkingDirectory      string   `json:"workingDirectory"`
		Arguments             []string `json:"arguments"`
	} `json:"description"`
	EnableForwardingHTTPRequest bool   `json:"enableForwardingHttpRequest"`
	Port                        int    `json:"port"`
	InitializationTimeout       string `json:"initializationTimeout"`
}

// QueuesConfig is host.json's extensions.queues section; zero values mean the host's defaults.
type QueuesConfig struct {
	MaxPollingInterval string `json:"maxPollingInterval"`
	VisibilityTimeout  string `json:"visibilityTimeout"`
	BatchSize          int    `json:"batchSize"`
	NewBatchThreshold  *int   `json:"newBatchThreshold"`
	MaxDequeueCount    int    `json:"maxDequeueCount"`
	MessageEncoding    string `json:"messageEncoding"`
}

// Function is one function: its folder name and its bindings.
type Function struct {
	Name     string
	Disabled bool
	Bindings []Binding
	// Trigger is the one binding whose type ends in "Trigger".
	Trigger *Binding
}

// Binding is one entry of function.json's bindings. Raw keeps every property, for the
// trigger-specific ones devhost reads by name.
type Binding struct {
	Type      string
	Direction string
	Name      string
	DataType  string
	Raw       map[string]any
}

// String returns the binding property key (matched case-insensitively, as the host does), or "".
func (b *Binding) String(key string) string {
	for k, v := range b.Raw {
		if strings.EqualFold(k, key) {
			switch v := v.(type) {
			case string:
				return v
			case bool:
				return strconv.FormatBool(v)
			case float64:
				return strconv.FormatFloat(v, 'f', -1, 64)
			}
		}
	}
	return ""
}

// Strings returns the binding's array property key as strings.
func (b *Binding) Strings(key string) []string {
	for k, v := range b.Raw {
		if strings.EqualFold(k, key) {
			arr, _ := v.([]any)
			out := make([]string, 0, len(arr))
			for _, e := range arr {
				if s, ok := e.(string); ok {
					out = append(out, s)
				}
			}
			return out
		}
	}
	return nil
}

// Bool returns the binding's boolean property key, or def when it is absent.
func (b *Binding) Bool(key string, def bool) bool {
	for k, v := range b.Raw {
		if strings.EqualFold(k, key) {
			switch v := v.(type) {
			case bool:
				return v
			case string:
				if p, err := strconv.ParseBool(v); err == nil {
					return p
				}
			}
		}
	}
	return def
}

// Name rules of the host (Utility.FunctionNameValidationRegex, BindingNameValidationRegex).
var (
	functionNameRE = regexp.MustCompile(`(?i)^[a-z][a-z0-9_\-]{0,127}$`)
	bindingNameRE  = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9]{0,127}$`)
)

// Trigger and binding types devhost knows how to drive or write.
const (
	TypeEventGridTrigger = "eventGridTrigger"
	TypeTimerTrigger     = "timerTrigger"
	TypeQueueTrigger     = "queueTrigger"
	TypeHTTPTrigger      = "httpTrigger"
	TypeHTTP             = "http"
	TypeQueue            = "queue"
)

// LoadApp reads host.json and every <folder>/function.json under root, and checks them as the
// host does: version "2.0", a customHandler section, valid function and binding names, exactly
// one trigger per function, unique binding names. Bindings devhost cannot serve are an error
// that names the function and the binding, rather than a function that silently never runs.
func LoadApp(root string) (*App, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("resolving app root %s: %w", root, err)
	}
	app := &App{Root: abs}
	b, err := os.ReadFile(filepath.Join(abs, "host.json"))
	if err != nil {
		return nil, fmt.Errorf("reading host.json: %w", err)
	}
	if err := json.Unmarshal(b, &app.Host); err != nil {
		return nil, fmt.Errorf("parsing host.json: %w", err)
	}
	if app.Host.Version != "2.0" {
		return nil, fmt.Errorf("host.json: version is %q, the host requires \"2.0\"", app.Host.Version)
	}
	if app.Host.CustomHandler == nil || app.Host.CustomHandler.Description.DefaultExecutablePath == "" {
		return nil, errors.New("host.json: customHandler.description.defaultExecutablePath is required")
	}
	entries, err := os.ReadDir(abs)
	if err != nil {
		return nil, fmt.Errorf("listing app root: %w", err)
	}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		p := filepath.Join(abs, e.Name(), "function.json")
		b, err := os.ReadFile(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("reading %s/function.json: %w", e.Name(), err)
		}
		f, err := parseFunction(e.Name(), b)
		if err != nil {
			return nil, err
		}
		app.Functions = append(app.Functions, f)
	}
	sort.Slice(app.Functions, func(i, j int) bool { return app.Functions[i].Name < app.Functions[j].Name })
	return app, nil
}

func parseFunction(name string, b []byte) (*Function, error) {
	if !functionNameRE.MatchString(name) || strings.EqualFold(name, "host") {
		return nil, fmt.Errorf("function folder %q: not a valid function name", name)
	}
	var doc struct {
		Disabled any              `json:"disabled"`
		Bindings []map[string]any `json:"bindings"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("parsing %s/function.json: %w", name, err)
	}
	f := &Function{Name: name}
	switch d := doc.Disabled.(type) {
	case bool:
		f.Disabled = d
	case string:
		f.Disabled, _ = strconv.ParseBool(d)
	}
	if len(doc.Bindings) == 0 {
		return nil, fmt.Errorf("function %s: function.json has no bindings", name)
	}
	seen := map[string]bool{}
	for i, raw := range doc.Bindings {
		bd := Binding{Raw: raw}
		bd.Type = bd.String("type")
		bd.Direction = bd.String("direction")
		bd.Name = bd.String("name")
		bd.DataType = bd.String("dataType")
		if bd.Type == "" || bd.Name == "" || bd.Direction == "" {
			return nil, fmt.Errorf("function %s: binding %d needs type, direction and name", name, i)
		}
		if bd.Name != "$return" && !bindingNameRE.MatchString(bd.Name) {
			return nil, fmt.Errorf("function %s: binding name %q is not valid (letters and digits only, starting with a letter)", name, bd.Name)
		}
		if bd.Name == "$return" && bd.Direction != "out" {
			return nil, fmt.Errorf("function %s: $return must be an out binding", name)
		}
		if seen[strings.ToLower(bd.Name)] {
			return nil, fmt.Errorf("function %s: binding name %q is used twice", name, bd.Name)
		}
		seen[strings.ToLower(bd.Name)] = true
		f.Bindings = append(f.Bindings, bd)
	}
	for i := range f.Bindings {
		bd := &f.Bindings[i]
		if strings.HasSuffix(strings.ToLower(bd.Type), "trigger") {
			if f.Trigger != nil {
				return nil, fmt.Errorf("function %s: more than one trigger binding", name)
			}
			f.Trigger = bd
		}
	}
	if f.Trigger == nil {
		return nil, fmt.Errorf("function %s: no trigger binding", name)
	}
	switch {
	case strings.EqualFold(f.Trigger.Type, TypeEventGridTrigger), strings.EqualFold(f.Trigger.Type, TypeTimerTrigger),
		strings.EqualFold(f.Trigger.Type, TypeQueueTrigger), strings.EqualFold(f.Trigger.Type, TypeHTTPTrigger):
	default:
		return nil, fmt.Errorf("function %s: devhost cannot drive trigger type %q", name, f.Trigger.Type)
	}
	for _, bd := range f.Bindings {
		if bd.Direction == "in" && bd.Name != f.Trigger.Name {
			return nil, fmt.Errorf("function %s: devhost does not provide input binding %q (type %s)", name, bd.Name, bd.Type)
		}
		if bd.Direction == "out" && !strings.EqualFold(bd.Type, TypeHTTP) && !strings.EqualFold(bd.Type, TypeQueue) {
			return nil, fmt.Errorf("function %s: devhost does not write output binding %q (type %s)", name, bd.Name, bd.Type)
		}
	}
	return f, nil
}

// Function returns the function named name (case-insensitively, as the host looks functions up),
// or nil.
func (a *App) Function(name string) *Function {
	for _, f := range a.Functions {
		if strings.EqualFold(f.Name, name) {
			return f
		}
	}
	return nil
}

// isTrigger reports whether the function's trigger is of type t.
func (f *Function) isTrigger(t string) bool { return strings.EqualFold(f.Trigger.Type, t) }

// LoadSettings reads the Values of a local.settings.json file (the app settings Core Tools
// gives the host and the handler). Encrypted files are refused: devhost cannot decrypt them.
func LoadSettings(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading settings: %w", err)
	}
	var doc struct {
		IsEncrypted bool           `json:"IsEncrypted"`
		Values      map[string]any `json:"Values"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("parsing %s: %w", filepath.Base(path), err)
	}
	if doc.IsEncrypted {
		return nil, fmt.Errorf("%s: IsEncrypted is true; devhost reads only plain settings", filepath.Base(path))
	}
	out := make(map[string]string, len(doc.Values))
	for k, v := range doc.Values {
		if strings.Contains(k, "__") || strings.Contains(k, ":") {
			// The host maps "__" and ":" to configuration sections; Values names must not use them.
			return nil, fmt.Errorf("%s: setting name %q must not contain \"__\" or \":\"", filepath.Base(path), k)
		}
		switch v := v.(type) {
		case string:
			out[k] = v
		case nil:
		default:
			return nil, fmt.Errorf("%s: setting %q must be a string", filepath.Base(path), k)
		}
	}
	return out, nil
}

var settingRefRE = regexp.MustCompile(`%([^%]+)%`)

// resolve expands %Setting% references in a binding expression from the app settings.
func resolve(expr string, settings map[string]string) (string, error) {
	var missing []string
	out := settingRefRE.ReplaceAllStringFunc(expr, func(m string) string {
		name := m[1 : len(m)-1]
		v, ok := settings[name]
		if !ok {
			missing = append(missing, name)
		}
		return v
	})
	if len(missing) > 0 {
		return "", fmt.Errorf("binding expression %q refers to app setting %q, which is not set", expr, missing[0])
	}
	return out, nil
}

// parseTimeSpan parses a .NET TimeSpan as host.json writes them: [d.]hh:mm:ss[.fffffff].
func parseTimeSpan(s string) (time.Duration, error) {
	if s == "" {
		return 0, errors.New("empty time span")
	}
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var days int
	parts := strings.Split(s, ":")
	if len(parts) != 3 {
		return 0, fmt.Errorf("time span %q: want hh:mm:ss", s)
	}
	if d, h, ok := strings.Cut(parts[0], "."); ok {
		var err error
		if days, err = strconv.Atoi(d); err != nil {
			return 0, fmt.Errorf("time span %q: bad days", s)
		}
		parts[0] = h
	}
	h, err1 := strconv.Atoi(parts[0])
	m, err2 := strconv.Atoi(parts[1])
	sec, err3 := strconv.ParseFloat(parts[2], 64)
	if err1 != nil || err2 != nil || err3 != nil || m > 59 || sec >= 60 {
		return 0, fmt.Errorf("time span %q: want hh:mm:ss", s)
	}
	d := time.Duration(days)*24*time.Hour + time.Duration(h)*time.Hour + time.Duration(m)*time.Minute +
		time.Duration(sec*float64(time.Second))
	if neg {
		d = -d
	}
	return d, nil
}
