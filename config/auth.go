package config

import "strings"

// Settings of who may call the Operations endpoints (docs/app.md, "Who may do what").
const (
	// SettingAuthEnabled is set by the platform, never by the app's settings: App Service
	// injects it "into a Windows or Linux app to indicate whether App Service authentication is
	// enabled" (Microsoft Learn, "Environment variables and app settings in Azure App
	// Service", section Authentication & authorization). The Functions host reads the same
	// variable before it trusts the X-MS-CLIENT-PRINCIPAL header (azure-functions-host,
	// EnvironmentExtensions.IsEasyAuthEnabled, used by AuthenticationLevelHandler).
	SettingAuthEnabled = "WEBSITE_AUTH_ENABLED"
	// SettingFunctionKeyAccess says what a caller holding only the function key may do.
	SettingFunctionKeyAccess = "FUNCTION_KEY_ACCESS"
)

// What a caller holding only the function key may do (FUNCTION_KEY_ACCESS).
const (
	KeyAccessNone = "none" // nothing: every call needs a signed-in caller with a role
	KeyAccessRead = "read" // read operations, devices and findings
	KeyAccessFull = "full" // everything, decisions journaled as claimed, not verified
)

// Auth holds the settings of who may call the Operations endpoints.
type Auth struct {
	// Enabled is true when the platform says App Service authentication fronts the app
	// (WEBSITE_AUTH_ENABLED). Only then are the X-MS-CLIENT-PRINCIPAL headers the platform's.
	Enabled bool
	// KeyAccess is FUNCTION_KEY_ACCESS: KeyAccessNone, KeyAccessRead or KeyAccessFull. It
	// defaults to KeyAccessRead with authentication on (a signed-in caller with a role does
	// the rest) and to KeyAccessFull with it off (the function key is the only lock there is).
	KeyAccess string
}

// auth reads the access settings.
func (l *loader) auth(c *Config) {
	// The host's bool.TryParse: "true" in any case, surrounding space allowed; anything else,
	// "1" included, is false. The value is the platform's, so it is not refused.
	c.Auth.Enabled = strings.EqualFold(strings.TrimSpace(l.env[SettingAuthEnabled]), "true")
	v := strings.ToLower(l.get(SettingFunctionKeyAccess))
	switch v {
	case "":
		c.Auth.KeyAccess = KeyAccessFull
		if c.Auth.Enabled {
			c.Auth.KeyAccess = KeyAccessRead
		}
	case KeyAccessNone, KeyAccessRead, KeyAccessFull:
		c.Auth.KeyAccess = v
	default:
		l.bad(SettingFunctionKeyAccess, "%q is not one of none, read, full (what a caller holding only the function key may do)", v)
	}
}
