// Package configtest holds the ways an app setting can be missing or malformed, shared by the
// config package's tests and the start-up tests that run the real handler binary.
package configtest

import (
	"strings"

	"dpsdeprov/config"
)

// Valid returns the settings of a complete, identity-based configuration: every case below
// breaks exactly one thing in it.
func Valid() map[string]string {
	return map[string]string{
		config.SettingPort:            "7000",
		config.SettingDPSEndpoint:     "https://mydps.azure-devices-provisioning.net",
		config.SettingHubs:            "hub1.azure-devices.net, HUB2.azure-devices.net",
		config.SettingStorage:         "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seQ==;EndpointSuffix=core.windows.net",
		config.SettingCleanupSchedule: "0 */5 * * * *",
	}
}

// BadSettingCase is one way a setting can be missing or malformed, and the setting the
// start-up error must name. The config tests and the binary's start-up tests share them.
type BadSettingCase struct {
	Name    string
	Setting string
	Apply   func(env map[string]string)
}

// BadSettingCases returns the cases, each applied to a valid identity-based environment.
func BadSettingCases() []BadSettingCase {
	set := func(k, v string) func(map[string]string) { return func(e map[string]string) { e[k] = v } }
	del := func(k string) func(map[string]string) { return func(e map[string]string) { delete(e, k) } }
	both := func(a, b func(map[string]string)) func(map[string]string) {
		return func(e map[string]string) { a(e); b(e) }
	}
	return []BadSettingCase{
		{"port missing", config.SettingPort, del(config.SettingPort)},
		{"port malformed", config.SettingPort, set(config.SettingPort, "seventy")},
		{"port out of range", config.SettingPort, set(config.SettingPort, "70000")},
		{"log level malformed", config.SettingLogLevel, set(config.SettingLogLevel, "loud")},
		{"DPS endpoint missing", config.SettingDPSEndpoint, del(config.SettingDPSEndpoint)},
		{"DPS endpoint http", config.SettingDPSEndpoint, set(config.SettingDPSEndpoint, "http://mydps.azure-devices-provisioning.net")},
		{"DPS endpoint with path", config.SettingDPSEndpoint, set(config.SettingDPSEndpoint, "https://mydps.azure-devices-provisioning.net/enrollments")},
		{"DPS credential malformed", config.SettingDPSCredential, set(config.SettingDPSCredential, "password")},
		{"DPS connection string missing", config.SettingDPSConnection, set(config.SettingDPSCredential, "connectionstring")},
		{"DPS Key Vault reference unresolved", config.SettingDPSConnection, both(set(config.SettingDPSCredential, "connectionstring"), set(config.SettingDPSConnection, "@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/dps/)"))},
		{"hubs missing", config.SettingHubs, del(config.SettingHubs)},
		{"hubs malformed", config.SettingHubs, set(config.SettingHubs, "hub1.azure-devices.net;hub2")},
		{"hub credential malformed", config.SettingHubCredential, set(config.SettingHubCredential, "sas")},
		{"hub connection strings missing", config.SettingHubConnection + "<NAME>", set(config.SettingHubCredential, "connectionstring")},
		{"storage missing", config.SettingStorage, del(config.SettingStorage)},
		{"storage malformed", config.SettingStorage, set(config.SettingStorage, "just-a-name")},
		{"storage account name malformed", config.SettingStorage + "__accountName", both(del(config.SettingStorage), set(config.SettingStorage+"__accountName", "Not_An_Account"))},
		{"storage table URI without queue URI", config.SettingStorage + "__queueServiceUri", both(del(config.SettingStorage), set(config.SettingStorage+"__tableServiceUri", "https://acct.table.core.windows.net"))},
		{"storage credential malformed", config.SettingStorage + "__credential", set(config.SettingStorage+"__credential", "password")},
		{"journal table prefix malformed", config.SettingJournalPrefix, set(config.SettingJournalPrefix, "no-dashes")},
		{"journal table prefix too long", config.SettingJournalPrefix, set(config.SettingJournalPrefix, "j"+strings.Repeat("x", 55))},
		{"allowed sources empty", "ALLOWED_SOURCES_COMPROMISED", set("ALLOWED_SOURCES_COMPROMISED", " , ")},
		{"dry run malformed", config.SettingDryRun, set(config.SettingDryRun, "perhaps")},
		{"max event age malformed", config.SettingMaxEventAge, set(config.SettingMaxEventAge, "two days")},
		{"max event age below redelivery window", config.SettingMaxEventAge, set(config.SettingMaxEventAge, "1h")},
		{"cleanup schedule missing", config.SettingCleanupSchedule, del(config.SettingCleanupSchedule)},
		{"cleanup schedule five fields", config.SettingCleanupSchedule, set(config.SettingCleanupSchedule, "*/5 * * * *")},
		{"cleanup schedule malformed", config.SettingCleanupSchedule, set(config.SettingCleanupSchedule, "0 */5 * * * someday")},
		{"cleanup resume age malformed", config.SettingCleanupAge, set(config.SettingCleanupAge, "-5m")},
		{"outcome endpoint malformed", config.SettingOutcomeEndpoint, set(config.SettingOutcomeEndpoint, "http://mytopic.westeurope-1.eventgrid.azure.net/api/events")},
		{"outcome key without endpoint", config.SettingOutcomeKey, set(config.SettingOutcomeKey, "k")},
		{"outcome CA for a remote topic", config.SettingOutcomeCAFile, both(set(config.SettingOutcomeEndpoint, "https://mytopic.westeurope-1.eventgrid.azure.net/api/events"), set(config.SettingOutcomeCAFile, "ca.pem"))},
		{"emulator address not loopback", config.SettingEmulatorAddress, both(set(config.SettingEmulatorAddress, "10.0.0.5:8443"), set(config.SettingEmulatorCAFile, "ca.pem"))},
		{"emulator address malformed", config.SettingEmulatorAddress, both(set(config.SettingEmulatorAddress, "127.0.0.1"), set(config.SettingEmulatorCAFile, "ca.pem"))},
		{"emulator CA missing", config.SettingEmulatorCAFile, set(config.SettingEmulatorAddress, "127.0.0.1:8443")},
		{"emulator CA unreadable", config.SettingEmulatorCAFile, both(set(config.SettingEmulatorAddress, "127.0.0.1:8443"), set(config.SettingEmulatorCAFile, "does-not-exist.pem"))},
		{"emulator CA without address", config.SettingEmulatorCAFile, set(config.SettingEmulatorCAFile, "ca.pem")},
		{"function key access malformed", config.SettingFunctionKeyAccess, set(config.SettingFunctionKeyAccess, "write")},
	}
}

// BuiltSettingCases returns the cases that config.Load reads as plain values and the package
// that uses the value refuses when the app builds its parts from the settings (a connection
// string the client cannot use, an intent the handler does not know). They stop the app's
// start-up as the others do; config.Load alone accepts them.
func BuiltSettingCases() []BadSettingCase {
	set := func(k, v string) func(map[string]string) { return func(e map[string]string) { e[k] = v } }
	both := func(a, b func(map[string]string)) func(map[string]string) {
		return func(e map[string]string) { a(e); b(e) }
	}
	return []BadSettingCase{
		{"DPS connection string malformed", config.SettingDPSConnection, both(set(config.SettingDPSCredential, "connectionstring"), set(config.SettingDPSConnection, "HostName=x;SharedAccessKey=nokeyname"))},
		{"hub connection string malformed", config.SettingHubConnection + "X", both(set(config.SettingHubCredential, "connectionstring"), set(config.SettingHubConnection+"X", "HostName=hub1.azure-devices.net;DeviceId=d;SharedAccessKey=c2VjcmV0"))},
		{"DPS endpoint names another host than the connection string", config.SettingDPSEndpoint, both(set(config.SettingDPSCredential, "connectionstring"), set(config.SettingDPSConnection, "HostName=otherdps.azure-devices-provisioning.net;SharedAccessKeyName=provisioningserviceowner;SharedAccessKey=c2VjcmV0"))},
		{"two hub connection strings name one hub", config.SettingHubConnection + "B", both(both(set(config.SettingHubCredential, "connectionstring"), set(config.SettingHubConnection+"A", "HostName=hub1.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey=c2VjcmV0")), set(config.SettingHubConnection+"B", "HostName=HUB1.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey=c2VjcmV0"))},
		{"event type map malformed", config.SettingEventTypes, set(config.SettingEventTypes, "Acme.Disposed")},
		{"event type map unknown intent", config.SettingEventTypes, set(config.SettingEventTypes, "Acme.Disposed=vaporised")},
		{"allowed sources unknown intent", "ALLOWED_SOURCES_EXPLODED", set("ALLOWED_SOURCES_EXPLODED", "/s")},
	}
}
