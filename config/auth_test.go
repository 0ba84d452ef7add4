package config_test

import (
	"testing"

	"dpsdeprov/config"
)

// WEBSITE_AUTH_ENABLED is read as the Functions host reads it (bool.TryParse): only "true",
// in any case, turns authentication on; the function key's reach follows from it unless
// FUNCTION_KEY_ACCESS says otherwise.
func TestAuthSettings(t *testing.T) {
	for _, c := range []struct {
		enabled, keyAccess string
		wantOn             bool
		wantKey            string
	}{
		{"", "", false, config.KeyAccessFull},
		{"True", "", true, config.KeyAccessRead},
		{" true ", "", true, config.KeyAccessRead},
		{"TRUE", "NONE", true, config.KeyAccessNone},
		{"1", "", false, config.KeyAccessFull}, // bool.TryParse refuses "1"
		{"yes", "", false, config.KeyAccessFull},
		{"False", "read", false, config.KeyAccessRead},
		{"true", "full", true, config.KeyAccessFull},
	} {
		env := valid()
		if c.enabled != "" {
			env[config.SettingAuthEnabled] = c.enabled
		}
		if c.keyAccess != "" {
			env[config.SettingFunctionKeyAccess] = c.keyAccess
		}
		cfg, err := config.Load(env)
		if err != nil {
			t.Fatalf("%q/%q: %v", c.enabled, c.keyAccess, err)
		}
		if cfg.Auth.Enabled != c.wantOn || cfg.Auth.KeyAccess != c.wantKey {
			t.Errorf("WEBSITE_AUTH_ENABLED=%q FUNCTION_KEY_ACCESS=%q: got %+v, want enabled %t, key access %s", c.enabled, c.keyAccess, cfg.Auth, c.wantOn, c.wantKey)
		}
	}
}
