// Command fakeaz stands in for the Azure CLI (and for go, to build the package) in the tests
// of scripts/deploy.sh (infra/deploy_test.go): started as az or go from a folder put first on
// PATH, it keeps what a subscription would hold in the JSON state file named by FAKE_AZ_STATE,
// records every call, and answers the calls the script makes the way az does (text with
// -o tsv, exit 3 for a missing resource). Any other call fails with exit 99.
//
// It is built by the test from this file (stdlib only, so it starts in milliseconds).
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

const (
	fakeSub = "00000000-0000-0000-0000-0000000000aa"
	fakeMe  = "11111111-2222-3333-4444-555555555555"
)

func main() { os.Exit(run(os.Args)) }

// azState is what the fake subscription holds.
type azState struct {
	Version  string
	LoggedIn bool
	// Resources are the DPS and hub resource ids that exist.
	Resources   []string
	Groups      map[string]bool
	Deployments map[string]*fakeDeployment // "group/name"
	// DeviceEvents says the code package was deployed (the function exists).
	DeviceEvents bool
	Roles        []fakeRole
	// RefusePublish is how many smoke-test publishes fail first (role propagation).
	RefusePublish int
	// NoOperations makes the Operations function never find the smoke test's operation.
	NoOperations bool
	Published    []string // ids of published events
	Calls        [][]string
}

type fakeDeployment struct {
	Template   string
	Parameters map[string]json.RawMessage
	Outputs    map[string]string
}

type fakeRole struct{ ID, Principal, Role, Scope string }

// dryRunSetting is the DRY_RUN app setting the app's last deployment gave it ("" if none).
func (s *azState) dryRunSetting(group string) string {
	var settings []struct{ Name, Value string }
	if d := s.Deployments[group+"/deprov-app"]; d != nil {
		_ = json.Unmarshal(d.Parameters["additionalAppSettings"], &settings)
	}
	for _, kv := range settings {
		if kv.Name == "DRY_RUN" {
			return kv.Value
		}
	}
	return ""
}

// run answers as az (or go) would, per the state file named by FAKE_AZ_STATE.
func run(args []string) int {
	path := os.Getenv("FAKE_AZ_STATE")
	b, err := os.ReadFile(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 90
	}
	var s azState
	if err := json.Unmarshal(b, &s); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 90
	}
	tool := filepath.Base(args[0])
	s.Calls = append(s.Calls, append([]string{tool}, args[1:]...))
	code := 0
	if tool == "go" {
		code = fakeGo(args[1:])
	} else {
		code = s.az(args[1:])
	}
	out, _ := json.Marshal(&s)
	if err := os.WriteFile(path, out, 0o600); err != nil {
		return 91
	}
	return code
}

// fakeGo builds "the package": an empty file where -o says.
func fakeGo(args []string) int {
	i := slices.Index(args, "-o")
	if len(args) < 2 || args[0] != "run" || args[1] != "./cmd/package" || i < 0 || i+1 >= len(args) {
		fmt.Fprintf(os.Stderr, "fake go: unexpected %v\n", args)
		return 99
	}
	if err := os.WriteFile(args[i+1], []byte("PK"), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// flag returns the value after name in args.
func flag(args []string, name string) string {
	if i := slices.Index(args, name); i >= 0 && i+1 < len(args) {
		return args[i+1]
	}
	return ""
}

func notFound(what string) int {
	fmt.Fprintf(os.Stderr, "ERROR: (ResourceNotFound) %s was not found.\n", what)
	return 3
}

func (s *azState) az(args []string) int {
	cmd := strings.Join(args[:min(3, len(args))], " ")
	query := flag(args, "--query")
	switch {
	case len(args) > 0 && args[0] == "version":
		fmt.Println(s.Version)
	case cmd == "account show --query" || strings.HasPrefix(cmd, "account show"):
		if !s.LoggedIn {
			fmt.Fprintln(os.Stderr, "ERROR: Please run 'az login' to setup account.")
			return 1
		}
		switch query {
		case "id":
			fmt.Println(fakeSub)
		case "user.type":
			fmt.Println("user")
		default:
			return unexpected(args)
		}
	case strings.HasPrefix(cmd, "ad signed-in-user show"):
		fmt.Println(fakeMe)
	case strings.HasPrefix(cmd, "resource show"):
		id := flag(args, "--ids")
		if !slices.Contains(s.Resources, id) {
			return notFound(id)
		}
		name := id[strings.LastIndex(id, "/")+1:]
		if strings.Contains(id, "/provisioningServices/") {
			fmt.Println(name + ".azure-devices-provisioning.net")
		} else {
			fmt.Println(name + ".azure-devices.net")
			fmt.Println("westeurope")
		}
	case strings.HasPrefix(cmd, "group show"):
		if !s.Groups[flag(args, "-n")] {
			return notFound("resource group " + flag(args, "-n"))
		}
	case strings.HasPrefix(cmd, "group create"):
		s.Groups[flag(args, "-n")] = true
	case strings.HasPrefix(cmd, "deployment group show"):
		d := s.Deployments[flag(args, "-g")+"/"+flag(args, "-n")]
		if d == nil {
			return notFound("deployment " + flag(args, "-n"))
		}
		out := strings.TrimSuffix(strings.TrimPrefix(query, "properties.outputs."), ".value")
		v, ok := d.Outputs[out]
		if !ok {
			return unexpected(args)
		}
		fmt.Println(v)
	case strings.HasPrefix(cmd, "deployment group what-if"), strings.HasPrefix(cmd, "deployment group create"):
		g := flag(args, "-g")
		if !s.Groups[g] {
			return notFound("resource group " + g)
		}
		tmpl := flag(args, "--template-file")
		if _, err := os.Stat(tmpl); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		b, err := os.ReadFile(strings.TrimPrefix(flag(args, "--parameters"), "@"))
		var p struct{ Parameters map[string]json.RawMessage }
		if err == nil {
			err = json.Unmarshal(b, &p)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "ERROR: parameters: %v\n", err)
			return 1
		}
		params := map[string]json.RawMessage{}
		for k, v := range p.Parameters {
			var x struct{ Value json.RawMessage }
			_ = json.Unmarshal(v, &x)
			params[k] = x.Value
		}
		if args[2] == "what-if" {
			fmt.Printf("Resource changes: %s would be deployed.\n", tmpl)
			return 0
		}
		d := &fakeDeployment{Template: filepath.Base(tmpl), Parameters: params, Outputs: map[string]string{}}
		switch d.Template {
		case "main.json":
			d.Outputs = map[string]string{"functionAppName": "dpsdeprov-fake", "principalId": "22222222-3333-4444-5555-666666666666", "storageAccountName": "stdeprovfake"}
			var app string
			if json.Unmarshal(params["appName"], &app) == nil && app != "" {
				d.Outputs["functionAppName"] = app
			}
		case "events.json":
			if !s.DeviceEvents {
				fmt.Fprintln(os.Stderr, "ERROR: Destination endpoint not found.")
				return 1
			}
			d.Outputs = map[string]string{"topicEndpoint": "https://topic.westeurope-1.eventgrid.azure.net/api/events"}
		}
		s.Deployments[g+"/"+flag(args, "-n")] = d
	case strings.HasPrefix(cmd, "functionapp config appsettings"):
		fmt.Println(s.dryRunSetting(flag(args, "-g")))
	case strings.HasPrefix(cmd, "functionapp deployment source"):
		if _, err := os.Stat(flag(args, "--src")); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		s.DeviceEvents = true
	case strings.HasPrefix(cmd, "functionapp function show"):
		if !s.DeviceEvents {
			return notFound("function DeviceEvents")
		}
	case strings.HasPrefix(cmd, "functionapp function keys"):
		fmt.Println("fake-function-key")
	case strings.HasPrefix(cmd, "functionapp show"):
		fmt.Println(flag(args, "-n") + ".azurewebsites.net")
	case strings.HasPrefix(cmd, "role assignment list"):
		for _, r := range s.Roles {
			if r.Principal == flag(args, "--assignee") && r.Role == flag(args, "--role") && r.Scope == flag(args, "--scope") {
				fmt.Println(r.ID)
			}
		}
	case strings.HasPrefix(cmd, "role assignment create"):
		r := fakeRole{Principal: flag(args, "--assignee-object-id"), Role: flag(args, "--role"), Scope: flag(args, "--scope")}
		for _, x := range s.Roles {
			if x.Principal == r.Principal && x.Role == r.Role && x.Scope == r.Scope {
				fmt.Fprintln(os.Stderr, "ERROR: (RoleAssignmentExists) The role assignment already exists.")
				return 1
			}
		}
		r.ID = fmt.Sprintf("%s/providers/Microsoft.Authorization/roleAssignments/ra-%d", r.Scope, len(s.Calls))
		s.Roles = append(s.Roles, r)
	case strings.HasPrefix(cmd, "role assignment delete"):
		ids := args[slices.Index(args, "--ids")+1:]
		s.Roles = slices.DeleteFunc(s.Roles, func(r fakeRole) bool { return slices.Contains(ids, r.ID) })
	case strings.HasPrefix(cmd, "rest --method post"):
		if s.RefusePublish > 0 {
			s.RefusePublish--
			fmt.Fprintln(os.Stderr, "ERROR: Forbidden")
			return 1
		}
		var ev struct {
			ID, Source string
			Data       struct{ DryRun bool }
		}
		if err := json.Unmarshal([]byte(flag(args, "--body")), &ev); err != nil || !ev.Data.DryRun || flag(args, "--resource") != "https://eventgrid.azure.net" {
			fmt.Fprintf(os.Stderr, "ERROR: the smoke test event is not a dry run sent with an Event Grid token: %v\n", args)
			return 1
		}
		s.Published = append(s.Published, ev.Source+"\x00"+ev.ID)
	case strings.HasPrefix(cmd, "rest --method get"):
		u := flag(args, "--url")
		if s.NoOperations || !slices.Contains(args, "--skip-authorization-header") || flag(args, "--headers") != "x-functions-key=fake-function-key" {
			return notFound(u)
		}
		// The test checks that the operation asked for is the one the engine would make of
		// the published event (deprovision.OperationID); the fake only says it exists.
		if len(s.Published) == 0 || !strings.Contains(u, "/api/deprovision/operations/op-") {
			return notFound(u)
		}
		fmt.Println("planned")
	default:
		return unexpected(args)
	}
	return 0
}

func unexpected(args []string) int {
	fmt.Fprintf(os.Stderr, "fake az: unexpected call %q\n", args)
	return 99
}
