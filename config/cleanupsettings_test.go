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
	// Two hubs at 100 operations a minute, a run every five minutes: 20% of 200 × 5.
	if o.Budget != 200 || o.GraceAfter != 30*24*time.Hour || o.GraceIntent != "retired" || o.ApplyGrace ||
		o.StaleAfter != 90*24*time.Hour || o.StaleMax != 10 || o.ApplyStale || o.DeleteOrphans || o.DriftDryRun ||
		o.RedisableGroups || len(o.Off) != 0 || o.MaxDestructivePerHour != 50 || o.StaleRunShare != 0.001 || o.StaleDayShare != 0.01 ||
		o.StaleFeedMaxAge != 24*time.Hour {
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
		// Shorter than the minimum period: a typo must not retire the fleet.
		config.SettingCleanupStaleAfter + " ": "1s", config.SettingCleanupStaleRunPercent: "0", config.SettingCleanupStaleDayPercent: "150",
		config.SettingCleanupStaleFeedMaxAge: "0", config.SettingCleanupMaxDestructivePerHour: "200", config.SettingCleanupShare: "0",
		config.SettingCleanupPass("stale"): "sometimes", config.SettingCleanupGroupsRedisable: "yes please",
	} {
		name = strings.TrimSpace(name)
		env := valid()
		env[name] = bad
		_, err := config.Load(env)
		var se *config.SettingError
		if !errors.As(err, &se) || se.Setting != name {
			t.Errorf("%s=%q: %v, want an error naming the setting", name, bad, err)
		}
	}
}

// Passes turn off one by one, the timer's hourly budget stays below the event path's, and the run's budget follows
// the hubs' budgets and the schedule.
func TestCleanupGuardSettings(t *testing.T) {
	env := valid()
	for k, v := range map[string]string{
		config.SettingDryRun: "true", config.SettingCleanupPass("stale"): "false", config.SettingCleanupPass("drift-groups"): "off",
		config.SettingCleanupPass("drift"): "true", config.SettingCleanupStaleRunPercent: "0.5", config.SettingCleanupStaleDayPercent: "2%",
		config.SettingCleanupStaleFeedMaxAge: "6h", config.SettingCleanupGroupsRedisable: "true", config.SettingMaxDestructivePerHour: "40",
		config.SettingCleanupStaleAfter: "7d",
	} {
		env[k] = v
	}
	_, err := config.Load(env)
	var se *config.SettingError
	if !errors.As(err, &se) || se.Setting != config.SettingCleanupPass("drift-groups") {
		t.Fatalf("on/off setting %q: %v", "off", err)
	}
	env[config.SettingCleanupPass("drift-groups")] = "false"
	c, err := config.Load(env)
	if err != nil {
		t.Fatal(err)
	}
	o := c.Cleanup
	if !c.Admission.DryRun || strings.Join(o.Off, ",") != "drift-groups,stale" || o.StaleRunShare != 0.005 ||
		o.StaleDayShare != 0.02 || o.StaleFeedMaxAge != 6*time.Hour || !o.RedisableGroups || o.MaxDestructivePerHour != 10 || o.StaleAfter != 7*24*time.Hour {
		t.Fatalf("set: %+v", o)
	}
	for _, tc := range []struct {
		env  map[string]string
		want int
	}{
		{map[string]string{}, 200},
		{map[string]string{config.SettingHubOpsPerMinute: "off"}, 1000},
		{map[string]string{config.SettingHubOpsPerMinute: "100,hub1.azure-devices.net=5000"}, 1000},
		{map[string]string{config.SettingCleanupSchedule: "0 * * * * *"}, 40},
		{map[string]string{config.SettingCleanupSchedule: "0 0 * * * *", config.SettingCleanupShare: "5"}, 600},
		{map[string]string{config.SettingCleanupSchedule: "00:10:00"}, 400},
		{map[string]string{config.SettingCleanupBudget: "77"}, 77},
	} {
		env := valid()
		for k, v := range tc.env {
			env[k] = v
		}
		c, err := config.Load(env)
		if err != nil {
			t.Fatal(err)
		}
		if c.Cleanup.Budget != tc.want {
			t.Errorf("%v: budget %d, want %d", tc.env, c.Cleanup.Budget, tc.want)
		}
	}
}
