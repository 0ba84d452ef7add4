package emulator_test

import (
	"bytes"
	"encoding/json"
	"os"
	"sort"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"dpsdeprov/emulator"
	"dpsdeprov/internal/testenv"
)

// swagger validates emulator answers against a swagger file's definitions: types, enums and
// required fields through JSON Schema, and, beyond what the schema says, that no property is
// emitted that the definition does not declare (a misspelt field would pass the schema).
type swagger struct {
	url  string
	defs map[string]any
	c    *jsonschema.Compiler
}

func loadSwagger(t *testing.T, name string) *swagger {
	t.Helper()
	path := testenv.SharedReference(t, "specs", name)
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft4) // swagger 2.0 schemas are draft-4 based
	url := "file:///" + name
	if err := c.AddResource(url, doc); err != nil {
		t.Fatal(err)
	}
	return &swagger{url: url, defs: doc.(map[string]any)["definitions"].(map[string]any), c: c}
}

// check validates body (a JSON value, or an array of them when array is set) as definition def.
func (s *swagger) check(t *testing.T, def string, body []byte, array bool) {
	t.Helper()
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("%s: %v", def, err)
	}
	items := []any{v}
	if array {
		arr, ok := v.([]any)
		if !ok || len(arr) == 0 {
			t.Fatalf("%s: want a non-empty array, got %s", def, body)
		}
		items = arr
	}
	sch, err := s.c.Compile(s.url + "#/definitions/" + def)
	if err != nil {
		t.Fatalf("compiling %s: %v", def, err)
	}
	for _, it := range items {
		// The services write absent values as JSON null (e.g. "statusReason": null), which
		// swagger 2.0 cannot express; nulls are checked as absent.
		it = dropNulls(it)
		// The specs type free-form maps (tags, desired/reported properties, TwinCollection) as
		// maps of objects, while the services hold any JSON value there ("$version": 1); their
		// contents are not the emulator's to check.
		if err := sch.Validate(s.blank(s.resolve(def), it)); err != nil {
			t.Fatalf("%s does not match the spec: %v\n%s", def, err, body)
		}
		if extra := s.undeclared("#/definitions/"+def, it, def); len(extra) > 0 {
			sort.Strings(extra)
			t.Fatalf("%s carries properties the spec does not declare: %v\n%s", def, extra, body)
		}
	}
}

func dropNulls(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := map[string]any{}
		for k, e := range x {
			if e != nil {
				out[k] = dropNulls(e)
			}
		}
		return out
	case []any:
		for i := range x {
			x[i] = dropNulls(x[i])
		}
	}
	return v
}

// blank returns v with the contents of free-form objects emptied.
func (s *swagger) blank(schema map[string]any, v any) any {
	if schema == nil {
		return v
	}
	if r, ok := schema["$ref"].(string); ok {
		return s.blank(s.resolve(r), v)
	}
	switch x := v.(type) {
	case map[string]any:
		props, _ := schema["properties"].(map[string]any)
		if _, free := schema["additionalProperties"]; free || props == nil {
			out := map[string]any{}
			for k, e := range x {
				if ps, ok := props[k].(map[string]any); ok {
					out[k] = s.blank(ps, e)
				}
			}
			return out
		}
		out := map[string]any{}
		for k, e := range x {
			ps, _ := props[k].(map[string]any)
			out[k] = s.blank(ps, e)
		}
		return out
	case []any:
		items, _ := schema["items"].(map[string]any)
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = s.blank(items, e)
		}
		return out
	}
	return v
}

func (s *swagger) resolve(ref string) map[string]any {
	d, _ := s.defs[strings.TrimPrefix(ref, "#/definitions/")].(map[string]any)
	return d
}

func (s *swagger) undeclared(ref string, v any, path string) []string {
	schema := s.resolve(ref)
	return s.walk(schema, v, path)
}

func (s *swagger) walk(schema map[string]any, v any, path string) []string {
	if schema == nil {
		return nil
	}
	if r, ok := schema["$ref"].(string); ok {
		return s.walk(s.resolve(r), v, path)
	}
	var out []string
	switch x := v.(type) {
	case map[string]any:
		props, _ := schema["properties"].(map[string]any)
		_, free := schema["additionalProperties"]
		if props == nil {
			return nil // a free-form object (tags, desired properties, payload)
		}
		for k, e := range x {
			ps, ok := props[k].(map[string]any)
			if !ok {
				if !free {
					out = append(out, path+"."+k)
				}
				continue
			}
			out = append(out, s.walk(ps, e, path+"."+k)...)
		}
	case []any:
		items, _ := schema["items"].(map[string]any)
		for _, e := range x {
			out = append(out, s.walk(items, e, path+"[]")...)
		}
	}
	return out
}

func TestAnswersMatchTheDPSSpec(t *testing.T) {
	spec := loadSwagger(t, "dps-service.json")
	e := testenv.StartEmulator(t, emulator.Options{Hubs: []string{"hub1", "hub2"}})
	c := newClient(t, e)
	ca, _ := emulator.NewTestCA("spec-ca")
	leaf, _ := ca.Issue("spec-x509", false)

	r := c.dps("PUT", "/enrollments/spec-sk", map[string]any{"attestation": map[string]any{"type": "symmetricKey"},
		"initialTwin":      map[string]any{"tags": map[string]any{"a": "b"}, "properties": map[string]any{"desired": map[string]any{"x": 1}}},
		"allocationPolicy": "static", "iotHubs": []string{e.Info().Hubs[1].Host}, "optionalDeviceInformation": map[string]any{"k": "v"}})
	wantStatus(t, r, 200)
	spec.check(t, "IndividualEnrollment", r.body, false)
	r = c.dps("PUT", "/enrollments/spec-x509", map[string]any{"provisioningStatus": "disabled", "attestation": map[string]any{"type": "x509",
		"x509": map[string]any{"clientCertificates": map[string]any{"primary": map[string]string{"certificate": string(leaf.CertPEM)}}}}})
	spec.check(t, "IndividualEnrollment", r.body, false)
	r = c.dps("PUT", "/enrollmentGroups/spec-g", map[string]any{"attestation": map[string]any{"type": "x509",
		"x509": map[string]any{"signingCertificates": map[string]any{"primary": map[string]string{"certificate": b64(ca.Cert.Raw)}}}}})
	spec.check(t, "EnrollmentGroup", r.body, false)
	r = c.dps("PUT", "/enrollmentGroups/spec-sg", map[string]any{"attestation": map[string]any{"type": "symmetricKey"}})
	spec.check(t, "EnrollmentGroup", r.body, false)
	spec.check(t, "AttestationMechanism", c.dps("POST", "/enrollmentGroups/spec-sg/attestationmechanism", nil).body, false)
	spec.check(t, "AttestationMechanism", c.dps("POST", "/enrollments/spec-x509/attestationmechanism", nil).body, false)

	// A registration, then its state alone, inside its enrollment, and through the group query.
	var att struct{ SymmetricKey struct{ PrimaryKey string } }
	c.dps("POST", "/enrollments/spec-sk/attestationmechanism", nil).json(t, &att)
	if _, st := registerDevice(t, e, "spec-sk", att.SymmetricKey.PrimaryKey, nil); st == nil {
		t.Fatal("registration refused")
	}
	c.dps("POST", "/enrollmentGroups/spec-sg/attestationmechanism", nil).json(t, &att)
	dk, _ := emulator.DeriveDeviceKey(att.SymmetricKey.PrimaryKey, "spec-member")
	if _, st := registerDevice(t, e, "spec-member", dk, nil); st == nil {
		t.Fatal("registration refused")
	}
	spec.check(t, "DeviceRegistrationState", c.dps("GET", "/registrations/spec-sk", nil).body, false)
	spec.check(t, "IndividualEnrollment", c.dps("GET", "/enrollments/spec-sk", nil).body, false)
	spec.check(t, "DeviceRegistrationState", c.dps("POST", "/registrations/spec-sg/query", nil).body, true)
	spec.check(t, "IndividualEnrollment", c.dps("POST", "/enrollments/query", map[string]string{"query": "SELECT *"}).body, true)
	spec.check(t, "EnrollmentGroup", c.dps("POST", "/enrollmentGroups/query", map[string]string{"query": "SELECT *"}).body, true)

	r = c.dps("POST", "/enrollments", map[string]any{"mode": "create", "enrollments": []any{symEnrollment("spec-sk"), symEnrollment("spec-new")}})
	spec.check(t, "BulkEnrollmentOperationResult", r.body, false)
	r = c.dps("POST", "/enrollmentGroups", map[string]any{"mode": "create", "enrollmentGroups": []any{map[string]any{"enrollmentGroupId": "spec-sg", "attestation": map[string]any{"type": "symmetricKey"}}}})
	spec.check(t, "BulkEnrollmentGroupOperationResult", r.body, false)
	spec.check(t, "ProvisioningServiceErrorDetails", c.dps("GET", "/enrollments/nope", nil).body, false)
}

func TestAnswersMatchTheHubSpec(t *testing.T) {
	spec := loadSwagger(t, "iothub-service.json")
	e := testenv.StartEmulator(t, emulator.Options{})
	c := newClient(t, e)
	r := c.hub(0, "PUT", "/devices/spec-1", map[string]any{"status": "disabled", "statusReason": "why", "capabilities": map[string]any{"iotEdge": true}})
	spec.check(t, "Device", r.body, false)
	r = c.hub(0, "PUT", "/devices/spec-2", map[string]any{"authentication": map[string]any{"type": "selfSigned", "x509Thumbprint": map[string]any{"primaryThumbprint": strings.Repeat("0A", 20)}}})
	spec.check(t, "Device", r.body, false)
	spec.check(t, "Device", c.hub(0, "GET", "/devices/spec-1", nil).body, false)
	spec.check(t, "Device", c.hub(0, "GET", "/devices?top=10", nil).body, true)
	r = c.hub(0, "POST", "/devices", []any{map[string]any{"id": "spec-3", "importMode": "create", "tags": map[string]any{"t": 1}, "properties": map[string]any{"desired": map[string]any{"d": 2}}},
		map[string]any{"id": "spec-1", "importMode": "create"}})
	spec.check(t, "BulkRegistryOperationResult", r.body, false)
	spec.check(t, "Twin", c.hub(0, "POST", "/devices/query", map[string]string{"query": "SELECT * FROM devices"}).body, true)
	spec.check(t, "Twin", c.hub(0, "GET", "/twins/spec-3", nil).body, false)
}
