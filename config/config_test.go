package config_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"dpsdeprov/config"
	"dpsdeprov/config/configtest"
)

// A service connection string with a made-up key (valid base64).
const (
	testKey   = "c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seQ=="
	dpsCS     = "HostName=mydps.azure-devices-provisioning.net;SharedAccessKeyName=provisioningserviceowner;SharedAccessKey=" + testKey
	hub1CS    = "HostName=hub1.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey=" + testKey
	hub2CS    = "HostName=hub2.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey=" + testKey
	storageCS = "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=" + testKey + ";EndpointSuffix=core.windows.net"
)

// Valid returns a complete identity-based environment.
func valid() map[string]string { return configtest.Valid() }

func TestValidIdentityConfig(t *testing.T) {
	c, err := config.Load(valid())
	if err != nil {
		t.Fatal(err)
	}
	if c.Port != 7000 || c.DPS.Credential != config.CredentialManagedIdentity || c.DPS.Endpoint != "https://mydps.azure-devices-provisioning.net" {
		t.Fatalf("dps %+v", c.DPS)
	}
	if fmt.Sprint(c.Hubs.Hosts) != "[hub1.azure-devices.net hub2.azure-devices.net]" || c.Hubs.Credential != config.CredentialManagedIdentity {
		t.Fatalf("hubs %+v", c.Hubs)
	}
	if c.Admission.MaxEventAge != config.DefaultMaxEventAge || c.Admission.DryRun || c.Admission.EventTypeMap != "" || len(c.Admission.AllowedSources) != 0 ||
		c.JournalPrefix != config.DefaultJournalPrefix || c.Outcome.Endpoint != "" || c.Emulator != nil {
		t.Fatalf("defaults %+v", c)
	}
}

func TestConnectionStringsAndOptionalSettings(t *testing.T) {
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"FUNCTIONS_HTTPWORKER_PORT":     "7001",
		"DPS_CONNECTION_STRING":         dpsCS,
		"IOT_HUB_CONNECTION_STRING_A":   hub1CS,
		"IOT_HUB_CONNECTION_STRING_B":   hub2CS,
		"AzureWebJobsStorage":           "UseDevelopmentStorage=true",
		"CLEANUP_SCHEDULE":              "00:05:00",
		"DRY_RUN":                       "true",
		"MAX_EVENT_AGE":                 "72h",
		"EVENT_TYPE_MAP":                "Acme.Disposed=retired",
		"ALLOWED_SOURCES_COMPROMISED":   "/topics/security, urn:dpsdeprov:operations-api",
		"ALLOWED_SOURCES_GROUP_RETIRED": "*",
		"OUTCOME_TOPIC_ENDPOINT":        "https://127.0.0.1:9443/api/events",
		"OUTCOME_TOPIC_KEY":             "topic-key",
		"OUTCOME_TOPIC_CA_FILE":         ca,
		"EMULATOR_ADDRESS":              "127.0.0.1:8443",
		"EMULATOR_CA_FILE":              ca,
		"LOG_LEVEL":                     "debug",
	}
	c, err := config.Load(env)
	if err != nil {
		t.Fatal(err)
	}
	if c.Port != 7001 || c.DPS.Credential != config.CredentialConnectionString || c.DPS.ConnectionString.Reveal() != dpsCS || c.DPS.Endpoint != "" {
		t.Fatalf("dps %+v", c.DPS)
	}
	if len(c.Hubs.ConnectionStrings) != 2 || c.Hubs.ConnectionStrings["IOT_HUB_CONNECTION_STRING_B"].Reveal() != hub2CS || c.Hubs.Credential != config.CredentialConnectionString {
		t.Fatalf("hubs %+v", c.Hubs)
	}
	a := c.Admission
	if !a.DryRun || a.MaxEventAge != 72*time.Hour || a.EventTypeMap != "Acme.Disposed=retired" ||
		fmt.Sprint(a.AllowedSources) != "map[compromised:[/topics/security urn:dpsdeprov:operations-api] group-retired:[*]]" {
		t.Fatalf("admission %+v", a)
	}
	if c.Emulator == nil || c.Emulator.Address != "127.0.0.1:8443" || len(c.Outcome.CAPEM) == 0 || c.Outcome.Key.Reveal() != "topic-key" {
		t.Fatalf("emulator %+v outcome %+v", c.Emulator, c.Outcome)
	}
	// Secrets never print.
	s := fmt.Sprintf("%v %+v %#v %v", c.DPS, c.Hubs, c.Outcome, c.Summary())
	if strings.Contains(s, testKey) || strings.Contains(s, "topic-key") {
		t.Fatalf("a secret printed: %s", s)
	}
	if !strings.Contains(config.ExpandDevelopmentStorage(c.Storage.ConnectionString.Reveal()), "TableEndpoint=http://127.0.0.1:10002") {
		t.Fatal("UseDevelopmentStorage=true not expanded")
	}
}

func TestStorageIdentityForms(t *testing.T) {
	env := valid()
	delete(env, "AzureWebJobsStorage")
	env["AzureWebJobsStorage__accountName"] = "acct"
	env["AzureWebJobsStorage__credential"] = "managedidentity"
	env["AzureWebJobsStorage__clientId"] = "11111111-1111-1111-1111-111111111111"
	c, err := config.Load(env)
	if err != nil {
		t.Fatal(err)
	}
	if c.Storage.TableServiceURL != "https://acct.table.core.windows.net" || c.Storage.QueueServiceURL != "https://acct.queue.core.windows.net" || c.Storage.ClientID == "" {
		t.Fatalf("storage %+v", c.Storage)
	}
	delete(env, "AzureWebJobsStorage__accountName")
	env["AzureWebJobsStorage__tableServiceUri"] = "https://acct.table.core.windows.net/"
	env["AzureWebJobsStorage__queueServiceUri"] = "https://acct.queue.core.windows.net/"
	c, err = config.Load(env)
	if err != nil {
		t.Fatal(err)
	}
	if c.Storage.TableServiceURL != "https://acct.table.core.windows.net" {
		t.Fatalf("storage %+v", c.Storage)
	}
}

// Every setting, missing or malformed, stops start-up with an error naming it. The same
// cases run against the real binary in the app's start-up tests.
func TestEachBadSettingIsNamed(t *testing.T) {
	for _, c := range configtest.BadSettingCases() {
		t.Run(c.Name, func(t *testing.T) {
			env := valid()
			c.Apply(env)
			_, err := config.Load(env)
			if err == nil {
				t.Fatal("loaded")
			}
			var se *config.SettingError
			if !errors.As(err, &se) {
				t.Fatalf("error %v names no setting", err)
			}
			if !strings.Contains(err.Error(), "setting "+c.Setting) {
				t.Fatalf("error %q does not name %s", err, c.Setting)
			}
		})
	}
}

// The values only the packages that use them can judge pass config.Load as plain values; the
// app's start-up tests see them refused.
func TestBuiltSettingsAreReadAsValues(t *testing.T) {
	for _, c := range configtest.BuiltSettingCases() {
		env := valid()
		c.Apply(env)
		if _, err := config.Load(env); err != nil {
			t.Errorf("%s: %v", c.Name, err)
		}
	}
}

func TestAllProblemsReportedAtOnce(t *testing.T) {
	env := valid()
	delete(env, "DPS_ENDPOINT")
	env["DRY_RUN"] = "perhaps"
	_, err := config.Load(env)
	if err == nil || !strings.Contains(err.Error(), "DPS_ENDPOINT") || !strings.Contains(err.Error(), "DRY_RUN") {
		t.Fatalf("err = %v", err)
	}
}
