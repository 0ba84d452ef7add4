package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"dpsdeprov/config"
	"dpsdeprov/handler"
	"dpsdeprov/internal/testenv"
)

// appFunctions are the function folders, with their trigger type and trigger binding name as
// the handler expects them.
var appFunctions = map[string]struct{ trigger, binding string }{
	handler.FunctionDeviceEvents: {"eventGridTrigger", handler.BindingEvent},
	handler.FunctionGroupWork:    {"queueTrigger", handler.BindingMessage},
	handler.FunctionBurstWork:    {"queueTrigger", handler.BindingMessage},
	handler.FunctionCleanup:      {"timerTrigger", handler.BindingTimer},
	handler.FunctionOperations:   {"httpTrigger", handler.BindingRequest},
	// Anonymous at the host: the handler serves only callers App Service authentication
	// signed in (handler/auth.go).
	handler.FunctionSignedInOperations: {"httpTrigger", handler.BindingRequest},
}

// compileSchema compiles a SchemaStore schema; the compiler picks the draft from its $schema
// (draft-07 for host.json, draft-04 for function.json and local.settings.json).
func compileSchema(t *testing.T, file string) *jsonschema.Schema {
	t.Helper()
	path := testenv.SharedReference(t, "schemas", file)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	doc, err := jsonschema.UnmarshalJSON(f)
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	doc = constAsEnum(doc, false)
	c := jsonschema.NewCompiler()
	url := "file:///schemas/" + file
	if err := c.AddResource(url, doc); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	s, err := c.Compile(url)
	if err != nil {
		t.Fatalf("compiling %s: %v", file, err)
	}
	return s
}

// constAsEnum rewrites {"const": x} as the equivalent {"enum": [x]}. function.json's schema
// declares draft-04 but uses `const` (a draft-06 keyword) in its sql output branch; read
// strictly as draft-04 that branch has no constraint, matches every binding, and makes the
// bindings' oneOf fail for every function.json there is. SchemaStore's own validator honours
// `const`, so this keeps the declared draft and the authors' meaning.
func constAsEnum(v any, inProperties bool) any {
	switch x := v.(type) {
	case map[string]any:
		for k, sub := range x {
			x[k] = constAsEnum(sub, !inProperties && k == "properties")
		}
		if c, ok := x["const"]; ok && !inProperties {
			delete(x, "const")
			x["enum"] = []any{c}
		}
	case []any:
		for i, sub := range x {
			x[i] = constAsEnum(sub, false)
		}
	}
	return v
}

func validateFile(t *testing.T, s *jsonschema.Schema, path string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if err := s.Validate(inst); err != nil {
		t.Errorf("%s does not match its schema: %v", path, err)
	}
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return m
}

// The host's own rules that the schemas do not express: the function (folder) name and binding
// name patterns of the host's Utility.FunctionNameValidationRegex and BindingNameValidationRegex.
var (
	functionNameRule = regexp.MustCompile(`(?i)^[a-z][a-z0-9_\-]{0,127}$`)
	bindingNameRule  = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9]{0,127}$`)
)

func TestAppFilesMatchSchemas(t *testing.T) {
	hostSchema := compileSchema(t, "host.json.schema.json")
	fnSchema := compileSchema(t, "function.json.schema.json")
	lsSchema := compileSchema(t, "local.settings.json.schema.json")

	host := validateFile(t, hostSchema, "host.json")
	ch, _ := host["customHandler"].(map[string]any)
	desc, _ := ch["description"].(map[string]any)
	if desc["defaultExecutablePath"] != "handler" || ch["enableForwardingHttpRequest"] != false {
		t.Errorf("host.json customHandler = %v", ch)
	}
	if b, _ := host["extensionBundle"].(map[string]any); b["version"] != "[4.*, 5.0.0)" || b["id"] != "Microsoft.Azure.Functions.ExtensionBundle" {
		t.Errorf("host.json extensionBundle = %v", b)
	}

	ls := validateFile(t, lsSchema, "local.settings.json.example")
	values, _ := ls["Values"].(map[string]any)
	if !strings.EqualFold(values["FUNCTIONS_WORKER_RUNTIME"].(string), "custom") {
		t.Errorf("FUNCTIONS_WORKER_RUNTIME = %v", values["FUNCTIONS_WORKER_RUNTIME"])
	}
	env := map[string]string{config.SettingPort: "7071"} // the host adds the port
	for k, v := range values {
		if strings.Contains(k, "__") || strings.Contains(k, ":") {
			t.Errorf("local.settings.json Values name %q: names must not contain __ or :", k)
		}
		env[k], _ = v.(string)
	}
	if cfg, err := config.Load(env); err != nil {
		t.Errorf("the example's Values do not start the handler: %v", err)
	} else if _, err := newSettings(cfg); err != nil {
		t.Errorf("the example's Values do not start the handler: %v", err)
	}

	for name, want := range appFunctions {
		if !functionNameRule.MatchString(name) {
			t.Errorf("function folder %q breaks the host's name rule", name)
		}
		fn := validateFile(t, fnSchema, filepath.Join(name, "function.json"))
		bindings, _ := fn["bindings"].([]any)
		triggers := 0
		for _, b := range bindings {
			bm := b.(map[string]any)
			if n := bm["name"].(string); n != "$return" && !bindingNameRule.MatchString(n) {
				t.Errorf("%s: binding name %q breaks the host's rule", name, n)
			}
			if strings.HasSuffix(bm["type"].(string), "Trigger") {
				triggers++
				if bm["type"] != want.trigger || bm["name"] != want.binding {
					t.Errorf("%s: trigger %v named %v, the handler reads %s named %s", name, bm["type"], bm["name"], want.trigger, want.binding)
				}
			}
			if want := map[string]string{handler.FunctionOperations: "function", handler.FunctionSignedInOperations: "anonymous"}[name]; bm["type"] == "httpTrigger" && bm["authLevel"] != want {
				t.Errorf("%s: authLevel %v, want %s (the key endpoint needs a function key; the signed-in one is guarded by the handler)", name, bm["authLevel"], want)
			}
			if want := map[string]string{handler.FunctionOperations: handler.RouteKey, handler.FunctionSignedInOperations: handler.RouteSignedIn}[name]; want != "" && bm["type"] == "httpTrigger" && bm["route"] != want+"/{kind?}/{id?}" {
				t.Errorf("%s: route %v, want %s/{kind?}/{id?} (the handler's and its clients' route)", name, bm["route"], want)
			}
			if bm["type"] == "timerTrigger" && bm["schedule"] != "%CLEANUP_SCHEDULE%" {
				t.Errorf("%s: schedule %v", name, bm["schedule"])
			}
			if want := map[string]string{handler.FunctionGroupWork: handler.GroupWorkQueue, handler.FunctionBurstWork: handler.BurstQueue}[name]; bm["type"] == "queueTrigger" && bm["queueName"] != want {
				t.Errorf("%s: queue %v, the handler's constant is %s", name, bm["queueName"], want)
			}
		}
		if triggers != 1 {
			t.Errorf("%s: %d triggers", name, triggers)
		}
	}
	// The host ignores a function.json at the root; one there would be a mistake.
	if _, err := os.Stat("function.json"); err == nil {
		t.Error("function.json at the app root is not a function")
	}
}
