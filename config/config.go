// Package config reads the app's settings (local.settings.json `Values` locally, app settings
// in Azure; both reach the handler as environment variables) into one Config, built once at
// start-up. Every missing or malformed setting is reported, each by name, and stops start-up.
//
// Config holds plain values only, and the package imports no other package of the app: the
// packages that use a setting build their own types from these values, and report what they
// refuse as a [SettingError] too (an event type mapped to an unknown intent, a connection
// string the client cannot use).
//
// docs/app.md lists every setting with its default and an example.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// Setting names.
const (
	SettingPort             = "FUNCTIONS_CUSTOMHANDLER_PORT"
	SettingLegacyPort       = "FUNCTIONS_HTTPWORKER_PORT"
	SettingLogLevel         = "LOG_LEVEL"
	SettingDPSEndpoint      = "DPS_ENDPOINT"
	SettingDPSCredential    = "DPS_CREDENTIAL"
	SettingDPSConnection    = "DPS_CONNECTION_STRING"
	SettingHubs             = "IOT_HUBS"
	SettingHubCredential    = "IOT_HUB_CREDENTIAL"
	SettingHubConnection    = "IOT_HUB_CONNECTION_STRING_" // a prefix: one setting per hub
	SettingClientID         = "AZURE_CLIENT_ID"
	SettingStorage          = "AzureWebJobsStorage"
	SettingJournalPrefix    = "JOURNAL_TABLE_PREFIX"
	SettingEventTypes       = "EVENT_TYPE_MAP"
	SettingAllowedSources   = "ALLOWED_SOURCES_" // a prefix: one setting per intent
	SettingDryRun           = "DRY_RUN"
	SettingMaxEventAge      = "MAX_EVENT_AGE"
	SettingCleanupSchedule  = "CLEANUP_SCHEDULE"
	SettingCleanupAge       = "CLEANUP_RESUME_AFTER"
	SettingOutcomeEndpoint  = "OUTCOME_TOPIC_ENDPOINT"
	SettingOutcomeKey       = "OUTCOME_TOPIC_KEY"
	SettingOutcomeSource    = "OUTCOME_SOURCE"
	SettingOutcomeCAFile    = "OUTCOME_TOPIC_CA_FILE"
	SettingEmulatorAddress  = "EMULATOR_ADDRESS"
	SettingEmulatorCAFile   = "EMULATOR_CA_FILE"
	storageIdentitySuffixes = "__accountName, __tableServiceUri, __queueServiceUri"
)

// Credential says how the app authenticates to DPS or the hubs.
type Credential string

// Credential choices.
const (
	// CredentialManagedIdentity: the app's managed identity (AZURE_CLIENT_ID picks a
	// user-assigned one). The default, and the right choice in Azure.
	CredentialManagedIdentity Credential = "managedidentity"
	// CredentialDefault: azidentity's DefaultAzureCredential chain (environment, workload
	// identity, managed identity, Azure CLI…), for running on a developer machine.
	CredentialDefault Credential = "default"
	// CredentialConnectionString: shared access policies from service connection strings,
	// which may be Key Vault references.
	CredentialConnectionString Credential = "connectionstring"
)

// Secret is a value that must never be printed; fmt and slog show it redacted.
type Secret string

// String redacts the secret.
func (Secret) String() string { return "REDACTED" }

// GoString redacts the secret.
func (Secret) GoString() string { return "REDACTED" }

// LogValue redacts the secret.
func (Secret) LogValue() slog.Value { return slog.StringValue("REDACTED") }

// Reveal returns the secret itself, for the one place that needs it.
func (s Secret) Reveal() string { return string(s) }

// DPS is how to reach the DPS instance.
type DPS struct {
	// Endpoint is DPS_ENDPOINT, https://{host}. With a connection string it may be empty: the
	// connection string's HostName names the instance, and must be this host when both are set.
	Endpoint         string
	Credential       Credential
	ConnectionString Secret
}

// Hubs is how to reach the IoT hubs.
type Hubs struct {
	Credential Credential
	// Hosts lists the hub host names of IOT_HUBS, lowercase (identity credentials).
	Hosts []string
	// ConnectionStrings holds the IOT_HUB_CONNECTION_STRING_<NAME> settings, by setting name
	// (connection-string credentials); each names its hub in its HostName.
	ConnectionStrings map[string]Secret
}

// Admission holds the settings of the checks every event passes before the engine sees it.
type Admission struct {
	// EventTypeMap is EVENT_TYPE_MAP as set: comma-separated eventType=intent pairs that
	// extend or override the built-in mapping ("" keeps the built-in one).
	EventTypeMap string
	// AllowedSources holds each ALLOWED_SOURCES_<INTENT> setting that is set, by intent name
	// as the setting spells it ("compromised", "group-retired"), as a list of sources ("*"
	// for any). An intent with no setting accepts any source.
	AllowedSources map[string][]string
	// DryRun makes every request a dry run.
	DryRun bool
	// MaxEventAge rejects events older than this (0: no limit).
	MaxEventAge time.Duration
}

// Guardrails are the limits beyond which an operation waits for a person's approval; 0 turns
// a limit off.
type Guardrails struct {
	// MaxGroupDevices is the most devices a group-wide operation may touch unapproved.
	MaxGroupDevices int
	// MaxDestructivePerHour is the most destructive operations that may start in one hour.
	MaxDestructivePerHour int
}

// AllowedSourcesSetting names the setting that lists the sources allowed to ask for intent.
func AllowedSourcesSetting(intent string) string {
	return SettingAllowedSources + strings.ToUpper(strings.ReplaceAll(intent, "-", "_"))
}

// Storage is how to reach the account behind AzureWebJobsStorage (the journal's tables, the
// group-work queue).
type Storage struct {
	// ConnectionString is set for the connection-string form (Azurite included).
	ConnectionString Secret
	// TableServiceURL and QueueServiceURL are set for the identity-based forms.
	TableServiceURL, QueueServiceURL string
	// ClientID picks a user-assigned managed identity (AzureWebJobsStorage__clientId).
	ClientID string
}

// Outcome is where outcome events go; Endpoint is "" when they are off.
type Outcome struct {
	Endpoint string
	Key      Secret // "" means the app's identity
	Source   string
	// CAPEM is an extra trusted root for a local (loopback) topic, from OUTCOME_TOPIC_CA_FILE.
	CAPEM []byte
}

// Emulator sends DPS and hub traffic to a local emulator (local runs only).
type Emulator struct {
	Address string // loopback host:port
	CAFile  string
	CAPEM   []byte
}

// Config is every setting of the app, parsed and checked.
type Config struct {
	Port     int
	LogLevel slog.Level
	DPS      DPS
	Hubs     Hubs
	// ClientID is the user-assigned managed identity for DPS, the hubs and the outcome topic.
	ClientID string
	Storage  Storage
	// JournalPrefix starts the names of the journal's tables.
	JournalPrefix   string
	Admission       Admission
	CleanupSchedule string
	// ResumeAfter is how long an operation may stand unfinished before the cleanup timer
	// resumes it.
	ResumeAfter time.Duration
	Outcome     Outcome
	// Emulator is nil unless EMULATOR_ADDRESS is set.
	Emulator *Emulator
	// Guard holds operations beyond its limits for approval (guard.go).
	Guard Guardrails
	// Scale paces and retries group-wide work (scale.go).
	Scale Scale
	// Cleanup holds the cleanup passes' settings (cleanupsettings.go).
	Cleanup Cleanup
	// Auth says who may call the Operations endpoints (auth.go).
	Auth Auth
}

// SettingError names a setting that is missing or malformed.
type SettingError struct {
	Setting string
	Problem string
}

// Error names the setting and the problem.
func (e *SettingError) Error() string { return "setting " + e.Setting + ": " + e.Problem }

// Defaults of optional settings.
const (
	DefaultJournalPrefix    = "deprov"
	DefaultMaxEventAge      = 48 * time.Hour
	DefaultResumeAfter      = 10 * time.Minute
	DefaultOutcomeSource    = "/dpsdeprov"
	keyVaultReferencePrefix = "@Microsoft.KeyVault("
)

// FromEnviron reads the settings from environment entries ("NAME=value", as os.Environ
// returns them).
func FromEnviron(environ []string) (*Config, error) {
	env := make(map[string]string, len(environ))
	for _, kv := range environ {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	return Load(env)
}

// FromOS reads the settings from the process environment.
func FromOS() (*Config, error) { return FromEnviron(os.Environ()) }

// loader collects problems so that start-up reports every bad setting at once.
type loader struct {
	env  map[string]string
	errs []error
}

func (l *loader) bad(setting, format string, args ...any) {
	l.errs = append(l.errs, &SettingError{Setting: setting, Problem: fmt.Sprintf(format, args...)})
}

// get returns a setting's trimmed value. A Key Vault reference still in its @Microsoft.KeyVault
// form means the platform could not resolve it: that is reported, never used as a value.
func (l *loader) get(name string) string {
	v := strings.TrimSpace(l.env[name])
	if strings.HasPrefix(v, keyVaultReferencePrefix) {
		l.bad(name, "holds a Key Vault reference the platform did not resolve; check that the app's identity may read the secret and that the reference names it correctly")
		return ""
	}
	return v
}

// Load reads the settings from env.
func Load(env map[string]string) (*Config, error) {
	l := &loader{env: env}
	c := &Config{}
	l.port(c)
	l.logLevel(c)
	c.ClientID = l.get(SettingClientID)
	l.dps(c)
	l.hubs(c)
	l.storage(c)
	c.JournalPrefix = l.get(SettingJournalPrefix)
	if c.JournalPrefix == "" {
		c.JournalPrefix = DefaultJournalPrefix
	} else if len(c.JournalPrefix) > 55 || !validTableName(c.JournalPrefix+"history") {
		l.bad(SettingJournalPrefix, "%q cannot start a table name: letters and digits only, starting with a letter, at most 55 characters", c.JournalPrefix)
	}
	l.admission(c)
	l.guard(c)
	l.scale(c)
	l.cleanup(c)
	l.cleanupPasses(c)
	l.outcome(c)
	l.emulator(c)
	l.auth(c)
	if len(l.errs) > 0 {
		return nil, errors.Join(l.errs...)
	}
	return c, nil
}

func (l *loader) port(c *Config) {
	name := SettingPort
	v := l.get(SettingPort)
	if v == "" {
		name, v = SettingLegacyPort, l.get(SettingLegacyPort)
	}
	if v == "" {
		l.bad(SettingPort, "is not set; the Functions host sets it to the port the handler must listen on (set it yourself to run the handler alone)")
		return
	}
	p, err := strconv.Atoi(v)
	if err != nil || p < 1 || p > 65535 {
		l.bad(name, "%q is not a TCP port (1-65535)", v)
		return
	}
	c.Port = p
}

func (l *loader) logLevel(c *Config) {
	v := l.get(SettingLogLevel)
	if v == "" {
		c.LogLevel = slog.LevelInfo
		return
	}
	if err := c.LogLevel.UnmarshalText([]byte(v)); err != nil {
		l.bad(SettingLogLevel, "%q is not one of debug, info, warn, error", v)
	}
}

// credential reads a credential choice; def applies when the setting is unset.
func (l *loader) credential(name string, def Credential) Credential {
	v := strings.ToLower(l.get(name))
	switch Credential(v) {
	case "":
		return def
	case CredentialManagedIdentity, CredentialDefault, CredentialConnectionString:
		return Credential(v)
	}
	l.bad(name, "%q is not one of managedidentity, default, connectionstring", v)
	return ""
}

func (l *loader) dps(c *Config) {
	endpoint := l.get(SettingDPSEndpoint)
	cs := l.get(SettingDPSConnection)
	def := CredentialManagedIdentity
	if cs != "" && endpoint == "" {
		def = CredentialConnectionString
	}
	c.DPS.Credential = l.credential(SettingDPSCredential, def)
	switch c.DPS.Credential {
	case CredentialConnectionString:
		if cs == "" {
			l.bad(SettingDPSConnection, "is not set, and %s is connectionstring; set it to the DPS service connection string (HostName=…;SharedAccessKeyName=…;SharedAccessKey=…) or a Key Vault reference to one", SettingDPSCredential)
			return
		}
		c.DPS.ConnectionString = Secret(cs)
		if endpoint == "" {
			return
		}
	case CredentialManagedIdentity, CredentialDefault:
		if endpoint == "" {
			l.bad(SettingDPSEndpoint, "is not set; set it to the DPS service endpoint, e.g. https://mydps.azure-devices-provisioning.net")
			return
		}
	default:
		return
	}
	u, err := httpsEndpoint(endpoint)
	if err != nil {
		l.bad(SettingDPSEndpoint, "%v", err)
		return
	}
	c.DPS.Endpoint = u
}

// httpsEndpoint checks that s is https://{host} and returns it without a trailing slash.
func httpsEndpoint(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "https" || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		return "", fmt.Errorf("%q is not an endpoint of the form https://{host}", s)
	}
	return "https://" + u.Host, nil
}

func (l *loader) hubs(c *Config) {
	c.Hubs.ConnectionStrings = map[string]Secret{}
	var csNames []string
	for k := range l.env {
		if strings.HasPrefix(k, SettingHubConnection) && strings.TrimSpace(l.env[k]) != "" {
			csNames = append(csNames, k)
		}
	}
	sort.Strings(csNames)
	def := CredentialManagedIdentity
	if len(csNames) > 0 && l.get(SettingHubs) == "" {
		def = CredentialConnectionString
	}
	c.Hubs.Credential = l.credential(SettingHubCredential, def)
	switch c.Hubs.Credential {
	case CredentialConnectionString:
		if len(csNames) == 0 {
			l.bad(SettingHubConnection+"<NAME>", "no hub connection string is set, and %s is connectionstring; set one %s<NAME> per hub (any NAME, e.g. %s1)", SettingHubCredential, SettingHubConnection, SettingHubConnection)
			return
		}
		for _, name := range csNames {
			if v := l.get(name); v != "" {
				c.Hubs.ConnectionStrings[name] = Secret(v)
			}
		}
	case CredentialManagedIdentity, CredentialDefault:
		v := l.get(SettingHubs)
		if v == "" {
			l.bad(SettingHubs, "is not set; set it to the host names of the hubs behind DPS, comma-separated, e.g. hub1.azure-devices.net,hub2.azure-devices.net")
			return
		}
		seen := map[string]bool{}
		for _, h := range strings.Split(v, ",") {
			h = strings.ToLower(strings.TrimSpace(h))
			if h == "" {
				continue
			}
			if strings.HasPrefix(h, "https://") {
				h = strings.TrimSuffix(strings.TrimPrefix(h, "https://"), "/")
			}
			if strings.ContainsAny(h, "/:; ") || !strings.Contains(h, ".") {
				l.bad(SettingHubs, "%q is not a hub host name such as myhub.azure-devices.net", h)
				continue
			}
			if !seen[h] {
				seen[h] = true
				c.Hubs.Hosts = append(c.Hubs.Hosts, h)
			}
		}
		if len(c.Hubs.Hosts) == 0 && len(l.errs) == 0 {
			l.bad(SettingHubs, "lists no hub")
		}
	}
}

func (l *loader) storage(c *Config) {
	cs := l.get(SettingStorage)
	account := l.get(SettingStorage + "__accountName")
	tableURI := l.get(SettingStorage + "__tableServiceUri")
	queueURI := l.get(SettingStorage + "__queueServiceUri")
	c.Storage.ClientID = l.get(SettingStorage + "__clientId")
	if cred := l.get(SettingStorage + "__credential"); cred != "" && !strings.EqualFold(cred, "managedidentity") {
		l.bad(SettingStorage+"__credential", "%q is not supported; the identity-based connection takes managedidentity (or leave it unset)", cred)
	}
	switch {
	case cs != "":
		if !strings.EqualFold(cs, "UseDevelopmentStorage=true") && !strings.Contains(strings.ToLower(cs), "accountname=") && !strings.Contains(strings.ToLower(cs), "tableendpoint=") {
			l.bad(SettingStorage, "is not a storage connection string (no AccountName or TableEndpoint); use DefaultEndpointsProtocol=https;AccountName=…;AccountKey=…, or the identity-based %s settings", storageIdentitySuffixes)
			return
		}
		c.Storage.ConnectionString = Secret(cs)
	case tableURI != "" || queueURI != "":
		for name, v := range map[string]string{"__tableServiceUri": tableURI, "__queueServiceUri": queueURI} {
			if v == "" {
				l.bad(SettingStorage+name, "is not set; the identity-based connection with service URIs needs both __tableServiceUri and __queueServiceUri (or use __accountName)")
				continue
			}
			u, err := url.Parse(v)
			if err != nil || u.Host == "" || (u.Scheme != "https" && !(u.Scheme == "http" && isLoopbackHost(u.Hostname()))) {
				l.bad(SettingStorage+name, "%q is not an https service URI", v)
			}
		}
		c.Storage.TableServiceURL, c.Storage.QueueServiceURL = strings.TrimSuffix(tableURI, "/"), strings.TrimSuffix(queueURI, "/")
	case account != "":
		if !validAccountName(account) {
			l.bad(SettingStorage+"__accountName", "%q is not a storage account name (3-24 lowercase letters and digits)", account)
			return
		}
		c.Storage.TableServiceURL = "https://" + account + ".table.core.windows.net"
		c.Storage.QueueServiceURL = "https://" + account + ".queue.core.windows.net"
	default:
		l.bad(SettingStorage, "is not set; set it to a storage connection string (UseDevelopmentStorage=true for Azurite), or use the identity-based %s settings", storageIdentitySuffixes)
	}
}

// admission reads the settings of the checks on every event. The meaning of an intent name
// (in EVENT_TYPE_MAP or an ALLOWED_SOURCES_ setting) is the handler's to check.
func (l *loader) admission(c *Config) {
	c.Admission.EventTypeMap = l.get(SettingEventTypes)
	c.Admission.AllowedSources = map[string][]string{}
	for k := range l.env {
		suffix, ok := strings.CutPrefix(k, SettingAllowedSources)
		if !ok {
			continue
		}
		list := list(l.get(k))
		if len(list) == 0 {
			l.bad(k, "is set but lists no source; list the allowed sources comma-separated, use * for any, or remove the setting")
			continue
		}
		c.Admission.AllowedSources[strings.ToLower(strings.ReplaceAll(suffix, "_", "-"))] = list
	}
	if v := l.get(SettingDryRun); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			l.bad(SettingDryRun, "%q is not true or false", v)
		}
		c.Admission.DryRun = b
	}
	c.Admission.MaxEventAge = DefaultMaxEventAge
	if v := l.get(SettingMaxEventAge); v != "" {
		d, err := time.ParseDuration(v)
		switch {
		case err != nil:
			l.bad(SettingMaxEventAge, "%q is not a duration such as 48h or 90m (0 for no limit)", v)
		case d < 0:
			l.bad(SettingMaxEventAge, "%q is negative", v)
		case d > 0 && d < 24*time.Hour:
			l.bad(SettingMaxEventAge, "%s is shorter than Event Grid's 24 hours of redelivery: an event that failed transiently would be rejected when it comes back", d)
		default:
			c.Admission.MaxEventAge = d
		}
	}
}

// ncrontab parses the six-field NCRONTAB of the Functions timer trigger.
var ncrontab = cron.NewParser(cron.Second | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow)

func (l *loader) cleanup(c *Config) {
	v := l.get(SettingCleanupSchedule)
	switch {
	case v == "":
		l.bad(SettingCleanupSchedule, "is not set; the Cleanup function's schedule reads it: a six-field NCRONTAB such as \"0 */5 * * * *\" (every five minutes)")
	case isTimeSpan(v):
	default:
		if len(strings.Fields(v)) != 6 {
			l.bad(SettingCleanupSchedule, "%q has %d fields; the timer trigger takes six ({second} {minute} {hour} {day} {month} {day-of-week}), e.g. \"0 */5 * * * *\"", v, len(strings.Fields(v)))
		} else if _, err := ncrontab.Parse(v); err != nil {
			l.bad(SettingCleanupSchedule, "%q is not a valid NCRONTAB expression: %v", v, err)
		}
	}
	c.CleanupSchedule = v
	c.ResumeAfter = DefaultResumeAfter
	if v := l.get(SettingCleanupAge); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			l.bad(SettingCleanupAge, "%q is not a positive duration such as 10m", v)
		} else {
			c.ResumeAfter = d
		}
	}
}

// isTimeSpan reports whether s is a TimeSpan schedule hh:mm:ss (App Service plans only).
func isTimeSpan(s string) bool {
	p := strings.Split(s, ":")
	if len(p) != 3 {
		return false
	}
	for _, x := range p {
		if n, err := strconv.Atoi(x); err != nil || n < 0 || len(x) != 2 {
			return false
		}
	}
	return true
}

func (l *loader) outcome(c *Config) {
	c.Outcome.Source = DefaultOutcomeSource
	if v := l.get(SettingOutcomeSource); v != "" {
		c.Outcome.Source = v
	}
	v := l.get(SettingOutcomeEndpoint)
	key := l.get(SettingOutcomeKey)
	if v == "" {
		if key != "" {
			l.bad(SettingOutcomeKey, "is set but %s is not; set the topic endpoint too, or remove the key", SettingOutcomeEndpoint)
		}
		return
	}
	u, err := url.Parse(v)
	if err != nil || u.Host == "" || u.Scheme != "https" {
		l.bad(SettingOutcomeEndpoint, "%q is not an https topic endpoint such as https://mytopic.westeurope-1.eventgrid.azure.net/api/events", v)
		return
	}
	c.Outcome.Endpoint = v
	c.Outcome.Key = Secret(key)
	if ca := l.get(SettingOutcomeCAFile); ca != "" {
		if !isLoopbackHost(u.Hostname()) {
			l.bad(SettingOutcomeCAFile, "is for a local topic only, and %s names %s", SettingOutcomeEndpoint, u.Hostname())
			return
		}
		c.Outcome.CAPEM = l.readPEM(SettingOutcomeCAFile, ca)
	}
}

// readPEM reads a file of PEM certificates named by setting.
func (l *loader) readPEM(setting, path string) []byte {
	pem, err := os.ReadFile(path)
	if err != nil {
		l.bad(setting, "cannot be read: %v", err)
		return nil
	}
	if !strings.Contains(string(pem), "-----BEGIN CERTIFICATE-----") {
		l.bad(setting, "%s holds no PEM certificate", path)
		return nil
	}
	return pem
}

func (l *loader) emulator(c *Config) {
	addr := l.get(SettingEmulatorAddress)
	ca := l.get(SettingEmulatorCAFile)
	if addr == "" {
		if ca != "" {
			l.bad(SettingEmulatorCAFile, "is set but %s is not; both or neither", SettingEmulatorAddress)
		}
		return
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil || port == "" {
		l.bad(SettingEmulatorAddress, "%q is not host:port", addr)
		return
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		l.bad(SettingEmulatorAddress, "%q is not a loopback address: the emulator is for local runs only (127.0.0.1:port or [::1]:port)", addr)
		return
	}
	if ca == "" {
		l.bad(SettingEmulatorCAFile, "is not set; with %s, set it to the emulator's CA certificate (PEM)", SettingEmulatorAddress)
		return
	}
	pem := l.readPEM(SettingEmulatorCAFile, ca)
	if pem == nil {
		return
	}
	c.Emulator = &Emulator{Address: addr, CAFile: ca, CAPEM: pem}
}

func isLoopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

func validAccountName(s string) bool {
	if len(s) < 3 || len(s) > 24 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

func validTableName(s string) bool {
	if len(s) < 3 || len(s) > 63 || !(s[0] >= 'a' && s[0] <= 'z' || s[0] >= 'A' && s[0] <= 'Z') {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

// Summary describes the configuration for the start-up log line: no secrets.
func (c *Config) Summary() []any {
	storage := "connection string"
	if c.Storage.ConnectionString == "" {
		storage = "identity: " + c.Storage.TableServiceURL
	}
	return []any{
		"dpsCredential", c.DPS.Credential, "hubCredential", c.Hubs.Credential,
		"storage", storage, "journalTablePrefix", c.JournalPrefix,
		"dryRun", c.Admission.DryRun, "maxEventAge", c.Admission.MaxEventAge.String(),
		"outcomeTopic", c.Outcome.Endpoint != "", "emulator", c.Emulator != nil,
		"appServiceAuthentication", c.Auth.Enabled, "functionKeyAccess", c.Auth.KeyAccess,
	}
}

// ExpandDevelopmentStorage turns the `UseDevelopmentStorage=true` shorthand (which the
// Functions host understands and the Go SDK does not) into Azurite's documented
// connection string on its default ports; any other connection string is returned unchanged.
func ExpandDevelopmentStorage(cs string) string {
	if !strings.EqualFold(strings.TrimSpace(cs), "UseDevelopmentStorage=true") {
		return cs
	}
	// The account and key are Azurite's public, documented development credentials.
	return "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;" +
		"AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;" +
		"BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;" +
		"TableEndpoint=http://127.0.0.1:10002/devstoreaccount1;"
}
