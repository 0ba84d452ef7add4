package config

import (
	"strconv"
	"strings"
	"time"
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
	DefaultCleanupBudget      = 100
	DefaultCleanupGracePeriod = 30 * 24 * time.Hour
	DefaultCleanupStaleAfter  = 90 * 24 * time.Hour
	DefaultCleanupStaleMax    = 10
)

// Cleanup holds the settings of the cleanup passes. Each "Apply" or "Delete" field is the
// inverse of its *_DRY_RUN setting, so that the zero value plans without applying.
type Cleanup struct {
	// Budget bounds the work of one run.
	Budget int
	// GraceAfter is how long a device stays lost or stolen before it is escalated (0: off).
	GraceAfter time.Duration
	// GraceIntent is the intent a device past its grace period gets, "retired" or "sold";
	// "" only reports it (CLEANUP_GRACE_ESCALATE=report).
	GraceIntent string
	// ApplyGrace applies the escalations (CLEANUP_GRACE_DRY_RUN=false).
	ApplyGrace bool
	// DriftDryRun plans the re-revocation of drifted devices without applying it.
	DriftDryRun bool
	// StaleAfter is how long a device may go unseen before it is retired (0: off).
	StaleAfter time.Duration
	// StaleMax caps the retirements requested per run.
	StaleMax int
	// StaleAllow lists device ids (or patterns) never retired as stale.
	StaleAllow []string
	// ApplyStale applies the stale retirements (CLEANUP_STALE_DRY_RUN=false).
	ApplyStale bool
	// DeleteOrphans deletes orphaned registration records (CLEANUP_ORPHANS_DRY_RUN=false).
	DeleteOrphans bool
	// OrphanGroups are enrollment group ids whose registration records are checked too.
	OrphanGroups []string
}

// cleanupPasses reads the cleanup passes' settings into c.Cleanup.
func (l *loader) cleanupPasses(c *Config) {
	o := Cleanup{
		Budget: DefaultCleanupBudget, GraceAfter: DefaultCleanupGracePeriod, GraceIntent: "retired",
		StaleAfter: DefaultCleanupStaleAfter, StaleMax: DefaultCleanupStaleMax,
	}
	o.Budget = l.positiveInt(SettingCleanupBudget, o.Budget)
	o.StaleMax = l.positiveInt(SettingCleanupStaleMax, o.StaleMax)
	o.GraceAfter = l.days(SettingCleanupGracePeriod, o.GraceAfter)
	o.StaleAfter = l.days(SettingCleanupStaleAfter, o.StaleAfter)
	switch v := strings.ToLower(l.get(SettingCleanupGraceEscalate)); v {
	case "":
	case "report":
		o.GraceIntent = ""
	case "retired", "sold":
		o.GraceIntent = v
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
