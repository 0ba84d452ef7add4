package config

import (
	"strconv"
	"strings"
	"time"

	"dpsdeprov/cleanup"
	"dpsdeprov/deprovision"
)

// Settings of the cleanup passes (docs/cleanup.md). CLEANUP_SCHEDULE and CLEANUP_RESUME_AFTER
// are in config.go.
const (
	SettingCleanupBudget        = "CLEANUP_BUDGET"
	SettingCleanupGracePeriod   = "CLEANUP_GRACE_PERIOD"
	SettingCleanupGraceEscalate = "CLEANUP_GRACE_ESCALATE"
	SettingCleanupGraceDryRun   = "CLEANUP_GRACE_DRY_RUN"
	SettingCleanupDriftDryRun   = "CLEANUP_DRIFT_DRY_RUN"
	SettingCleanupStaleAfter    = "CLEANUP_STALE_AFTER"
	SettingCleanupStaleMax      = "CLEANUP_STALE_MAX"
	SettingCleanupStaleAllow    = "CLEANUP_STALE_ALLOW"
	SettingCleanupStaleDryRun   = "CLEANUP_STALE_DRY_RUN"
	SettingCleanupOrphansDryRun = "CLEANUP_ORPHANS_DRY_RUN"
	SettingCleanupOrphanGroups  = "CLEANUP_ORPHAN_GROUPS"
)

// Defaults of the cleanup settings. Destructive passes default to dry run.
const (
	DefaultCleanupBudget      = cleanup.DefaultBudget
	DefaultCleanupGracePeriod = 30 * 24 * time.Hour
	DefaultCleanupStaleAfter  = 90 * 24 * time.Hour
	DefaultCleanupStaleMax    = 10
)

// cleanupPasses reads the cleanup passes' settings into c.Cleanup.
func (l *loader) cleanupPasses(c *Config) {
	o := cleanup.Options{
		Budget: DefaultCleanupBudget, ResumeAfter: c.ResumeAfter,
		GraceAfter: DefaultCleanupGracePeriod, GraceIntent: deprovision.IntentRetired,
		StaleAfter: DefaultCleanupStaleAfter, StaleMax: DefaultCleanupStaleMax, Hubs: c.Hubs.Hosts,
	}
	o.Budget = l.positiveInt(SettingCleanupBudget, o.Budget)
	o.StaleMax = l.positiveInt(SettingCleanupStaleMax, o.StaleMax)
	o.GraceAfter = l.days(SettingCleanupGracePeriod, o.GraceAfter)
	o.StaleAfter = l.days(SettingCleanupStaleAfter, o.StaleAfter)
	switch v := strings.ToLower(l.get(SettingCleanupGraceEscalate)); v {
	case "":
	case "report":
		o.GraceIntent = ""
	case string(deprovision.IntentRetired), string(deprovision.IntentSold):
		o.GraceIntent = deprovision.Intent(v)
	default:
		l.bad(SettingCleanupGraceEscalate, "%q is not retired, sold or report", v)
	}
	// Each setting says "dry run"; the options say "apply", so that their zero value is safe.
	for _, s := range []struct {
		name    string
		dst     *bool
		applied bool // the option is "apply" (true = live) rather than "dry run"
	}{{SettingCleanupGraceDryRun, &o.ApplyGrace, true}, {SettingCleanupDriftDryRun, &o.DriftDryRun, false},
		{SettingCleanupStaleDryRun, &o.ApplyStale, true}, {SettingCleanupOrphansDryRun, &o.DeleteOrphans, true}} {
		v := l.get(s.name)
		if v == "" {
			continue
		}
		dry, err := strconv.ParseBool(v)
		if err != nil {
			l.bad(s.name, "%q is not true or false", v)
			continue
		}
		*s.dst = dry != s.applied
	}
	o.StaleAllow = list(l.get(SettingCleanupStaleAllow))
	o.OrphanGroups = list(l.get(SettingCleanupOrphanGroups))
	c.Cleanup = o
}

func list(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func (l *loader) positiveInt(name string, def int) int {
	v := l.get(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		l.bad(name, "%q is not a whole number above 0", v)
		return def
	}
	return n
}

// days reads a period: a Go duration (36h, 90m) or whole days (90d); 0 turns the pass off.
func (l *loader) days(name string, def time.Duration) time.Duration {
	v := l.get(name)
	if v == "" {
		return def
	}
	if d, ok := strings.CutSuffix(v, "d"); ok {
		n, err := strconv.Atoi(d)
		if err == nil && n >= 0 {
			return time.Duration(n) * 24 * time.Hour
		}
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		l.bad(name, "%q is not a period such as 90d or 36h (0 turns the pass off)", v)
		return def
	}
	return d
}
