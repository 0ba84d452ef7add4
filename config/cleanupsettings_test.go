package config_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"dpsdeprov/config"
)

func TestCleanupSettings(t *testing.T) {
	c, err := config.Load(valid())
	if err != nil {
		t.Fatal(err)
	}
	o := c.Cleanup
	// Destructive passes plan only unless told otherwise; drift re-revocation is live.
	if o.Budget != 100 || o.GraceAfter != 30*24*time.Hour || o.GraceIntent != "retired" || o.ApplyGrace ||
		o.StaleAfter != 90*24*time.Hour || o.StaleMax != 10 || o.ApplyStale || o.DeleteOrphans || o.DriftDryRun {
		t.Fatalf("defaults: %+v", o)
	}
	env := valid()
	for k, v := range map[string]string{
		config.SettingCleanupBudget: "250", config.SettingCleanupGracePeriod: "14d", config.SettingCleanupGraceEscalate: "report",
		config.SettingCleanupGraceDryRun: "false", config.SettingCleanupDriftDryRun: "true", config.SettingCleanupStaleAfter: "0",
		config.SettingCleanupStaleMax: "3", config.SettingCleanupStaleAllow: " gw-*, hub2/m-1 ", config.SettingCleanupStaleDryRun: "false",
		config.SettingCleanupOrphansDryRun: "false", config.SettingCleanupOrphanGroups: "old-1,old-2",
	} {
		env[k] = v
	}
	if c, err = config.Load(env); err != nil {
		t.Fatal(err)
	}
	o = c.Cleanup
	if o.Budget != 250 || o.GraceAfter != 14*24*time.Hour || o.GraceIntent != "" || !o.ApplyGrace || !o.DriftDryRun || o.StaleAfter != 0 ||
		o.StaleMax != 3 || strings.Join(o.StaleAllow, "|") != "gw-*|hub2/m-1" || !o.ApplyStale || !o.DeleteOrphans ||
		strings.Join(o.OrphanGroups, "|") != "old-1|old-2" {
		t.Fatalf("set: %+v", o)
	}
	for name, bad := range map[string]string{
		config.SettingCleanupBudget: "0", config.SettingCleanupGracePeriod: "a month", config.SettingCleanupGraceEscalate: "compromised",
		config.SettingCleanupStaleDryRun: "maybe", config.SettingCleanupStaleMax: "-2", config.SettingCleanupStaleAfter: "-5h",
	} {
		env := valid()
		env[name] = bad
		_, err := config.Load(env)
		var se *config.SettingError
		if !errors.As(err, &se) || se.Setting != name {
			t.Errorf("%s=%q: %v, want an error naming the setting", name, bad, err)
		}
	}
}
