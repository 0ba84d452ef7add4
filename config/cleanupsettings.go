package config

import (
	"strconv"
	"strings"
	"time"
)

// Settings of the cleanup passes (docs/cleanup.md). CLEANUP_SCHEDULE and CLEANUP_RESUME_AFTER
// are in config.go; each pass's on/off setting is [SettingCleanupPass].
const (
	SettingCleanupBudget                = "CLEANUP_BUDGET"
	SettingCleanupShare                 = "CLEANUP_SHARE_PERCENT"
	SettingCleanupGracePeriod           = "CLEANUP_GRACE_PERIOD"
	SettingCleanupGraceEscalate         = "CLEANUP_GRACE_ESCALATE"
	SettingCleanupGraceDryRun           = "CLEANUP_GRACE_DRY_RUN"
	SettingCleanupDriftDryRun           = "CLEANUP_DRIFT_DRY_RUN"
	SettingCleanupGroupsRedisable       = "CLEANUP_DRIFT_GROUPS_REDISABLE"
	SettingCleanupStaleAfter            = "CLEANUP_STALE_AFTER"
	SettingCleanupStaleMax              = "CLEANUP_STALE_MAX"
	SettingCleanupStaleRunPercent       = "CLEANUP_STALE_MAX_RUN_PERCENT"
	SettingCleanupStaleDayPercent       = "CLEANUP_STALE_MAX_DAY_PERCENT"
	SettingCleanupStaleFeedMaxAge       = "CLEANUP_STALE_FEED_MAX_AGE"
	SettingCleanupStaleAllow            = "CLEANUP_STALE_ALLOW"
	SettingCleanupStaleDryRun           = "CLEANUP_STALE_DRY_RUN"
	SettingCleanupOrphansDryRun         = "CLEANUP_ORPHANS_DRY_RUN"
	SettingCleanupOrphanGroups          = "CLEANUP_ORPHAN_GROUPS"
	SettingCleanupMaxDestructivePerHour = "CLEANUP_MAX_DESTRUCTIVE_PER_HOUR"
	SettingCleanupKeepFindings          = "CLEANUP_KEEP_FINDINGS"
	SettingCleanupKeepDeletedSightings  = "CLEANUP_KEEP_DELETED_SIGHTINGS"
)

// CleanupPasses names the cleanup passes, each of which a CLEANUP_<PASS>_ENABLED setting turns
// on or off. The app checks that the cleanup runs exactly these.
var CleanupPasses = []string{"resume", "poison", "grace", "drift", "drift-groups", "stale", "orphans", "prune", "moves"}

// SettingCleanupPass is the setting that turns a pass on or off: CLEANUP_RESUME_ENABLED,
// CLEANUP_DRIFT_GROUPS_ENABLED, ...
func SettingCleanupPass(pass string) string {
	return "CLEANUP_" + strings.ToUpper(strings.ReplaceAll(pass, "-", "_")) + "_ENABLED"
}

// Defaults of the cleanup settings. Destructive passes default to dry run.
const (
	DefaultCleanupBudget      = 100
	DefaultCleanupGracePeriod = 30 * 24 * time.Hour
	DefaultCleanupStaleAfter  = 90 * 24 * time.Hour
	DefaultCleanupStaleMax    = 10
	// MinCleanupStaleAfter is the shortest stale period accepted: a device silent for less
	// than a week is not stale, and a typo (1s, 90m) must not retire the fleet.
	MinCleanupStaleAfter = 7 * 24 * time.Hour
	// DefaultCleanupStaleRunPercent and DefaultCleanupStaleDayPercent are the shares of the
	// fleet the stale pass may retire per run and per day.
	DefaultCleanupStaleRunPercent = 0.1
	DefaultCleanupStaleDayPercent = 1.0
	DefaultCleanupStaleFeedMaxAge = 24 * time.Hour
	// DefaultCleanupSharePercent is the share of the tighter of DPS's and the hubs' budgets
	// (operations a minute, over the time between two runs) a run may use by default.
	DefaultCleanupSharePercent = 20
	// DefaultCleanupMaxDestructivePerHour is the timer's own destructive budget when the
	// event path's is off; otherwise a quarter of the event path's.
	DefaultCleanupMaxDestructivePerHour = 50
	DefaultCleanupKeepFindings          = 90 * 24 * time.Hour
	DefaultCleanupKeepDeletedSightings  = 30 * 24 * time.Hour
	// dpsOpsPerMinute is DPS's documented service operations budget (1,000 a minute).
	dpsOpsPerMinute = 1000
)

// Cleanup holds the settings of the cleanup passes. Each "Apply" or "Delete" field is the
// inverse of its *_DRY_RUN setting, so that the zero value plans without applying.
type Cleanup struct {
	// Budget bounds the work of one run: CLEANUP_BUDGET, or derived from the hubs' and DPS's
	// budgets and the schedule (derivedBudget).
	Budget int
	// Off names the passes a CLEANUP_<PASS>_ENABLED=false turns off.
	Off []string
	// GraceAfter is how long a device stays lost or stolen before it is escalated (0: off).
	GraceAfter time.Duration
	// GraceIntent is the intent a device past its grace period gets, "retired" or "sold";
	// "" only reports it (CLEANUP_GRACE_ESCALATE=report).
	GraceIntent string
	// ApplyGrace applies the escalations (CLEANUP_GRACE_DRY_RUN=false).
	ApplyGrace bool
	// DriftDryRun plans the re-revocation of drifted devices without applying it.
	DriftDryRun bool
	// RedisableGroups revokes again a group this system disabled that is enabled again.
	RedisableGroups bool
	// StaleAfter is how long a device may go unseen before it is retired (0: off; else at
	// least MinCleanupStaleAfter).
	StaleAfter time.Duration
	// StaleMax caps the retirements requested per run.
	StaleMax int
	// StaleRunShare and StaleDayShare are the shares of the fleet (0 to 1) the stale pass may
	// retire per run and per day.
	StaleRunShare, StaleDayShare float64
	// StaleFeedMaxAge is how old a hub's newest lifecycle event may be before no device of it
	// is retired as stale.
	StaleFeedMaxAge time.Duration
	// StaleAllow lists device ids (or patterns) never retired as stale.
	StaleAllow []string
	// ApplyStale applies the stale retirements (CLEANUP_STALE_DRY_RUN=false).
	ApplyStale bool
	// DeleteOrphans deletes orphaned registration records (CLEANUP_ORPHANS_DRY_RUN=false).
	DeleteOrphans bool
	// OrphanGroups are enrollment group ids whose registration records are checked too.
	OrphanGroups []string
	// MaxDestructivePerHour is the timer's own destructive budget, below the event path's.
	MaxDestructivePerHour int
	// KeepFindings and KeepDeletedSightings are how long the prune pass keeps findings and
	// the last-seen rows of deleted devices.
	KeepFindings, KeepDeletedSightings time.Duration
}

// cleanupPasses reads the cleanup passes' settings into c.Cleanup. It runs after guard, scale
// and cleanup: the event path's hourly limit, the hubs' budgets and the schedule size the
// timer's settings.
func (l *loader) cleanupPasses(c *Config) {
	o := Cleanup{
		GraceAfter: DefaultCleanupGracePeriod, GraceIntent: "retired",
		StaleAfter: DefaultCleanupStaleAfter, StaleMax: DefaultCleanupStaleMax,
	}
	o.Budget = l.positiveInt(SettingCleanupBudget, l.derivedBudget(c))
	o.StaleMax = l.positiveInt(SettingCleanupStaleMax, o.StaleMax)
	o.GraceAfter = l.days(SettingCleanupGracePeriod, o.GraceAfter)
	o.StaleAfter = l.days(SettingCleanupStaleAfter, o.StaleAfter)
	if o.StaleAfter > 0 && o.StaleAfter < MinCleanupStaleAfter {
		l.bad(SettingCleanupStaleAfter, "%q is shorter than the minimum of 7d: a device silent for less than a week is not stale (0 turns the pass off)", l.get(SettingCleanupStaleAfter))
		o.StaleAfter = DefaultCleanupStaleAfter
	}
	o.StaleRunShare = l.percent(SettingCleanupStaleRunPercent, DefaultCleanupStaleRunPercent) / 100
	o.StaleDayShare = l.percent(SettingCleanupStaleDayPercent, DefaultCleanupStaleDayPercent) / 100
	o.StaleFeedMaxAge = l.days(SettingCleanupStaleFeedMaxAge, DefaultCleanupStaleFeedMaxAge)
	if o.StaleFeedMaxAge <= 0 {
		l.bad(SettingCleanupStaleFeedMaxAge, "%q: the feed's age limit cannot be turned off; turn the stale pass off instead (%s=0)", l.get(SettingCleanupStaleFeedMaxAge), SettingCleanupStaleAfter)
		o.StaleFeedMaxAge = DefaultCleanupStaleFeedMaxAge
	}
	o.KeepFindings = l.days(SettingCleanupKeepFindings, DefaultCleanupKeepFindings)
	o.KeepDeletedSightings = l.days(SettingCleanupKeepDeletedSightings, DefaultCleanupKeepDeletedSightings)
	for _, k := range []struct {
		name string
		d    *time.Duration
	}{{SettingCleanupKeepFindings, &o.KeepFindings}, {SettingCleanupKeepDeletedSightings, &o.KeepDeletedSightings}} {
		if *k.d <= 0 {
			l.bad(k.name, "%q: rows are kept for a period above 0, such as 90d", l.get(k.name))
		}
	}
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
		if dry, ok := l.boolean(s.name); ok {
			*s.dst = dry != s.applied
		}
	}
	if v, ok := l.boolean(SettingCleanupGroupsRedisable); ok {
		o.RedisableGroups = v
	}
	for _, p := range CleanupPasses {
		if on, ok := l.boolean(SettingCleanupPass(p)); ok && !on {
			o.Off = append(o.Off, p)
		}
	}
	// The timer's own destructive budget sits below the event path's, so that cleanup can
	// never use up what a real report needs.
	event := c.Guard.MaxDestructivePerHour
	o.MaxDestructivePerHour = DefaultCleanupMaxDestructivePerHour
	if event > 0 {
		o.MaxDestructivePerHour = max(1, event/4)
	}
	if v := l.get(SettingCleanupMaxDestructivePerHour); v != "" {
		n, err := strconv.Atoi(v)
		switch {
		case err != nil || n <= 0:
			l.bad(SettingCleanupMaxDestructivePerHour, "%q is not a whole number above 0", v)
		case event > 0 && n >= event:
			l.bad(SettingCleanupMaxDestructivePerHour, "%d is not below %s (%d): the timer's budget must leave the event path room", n, SettingMaxDestructivePerHour, event)
		default:
			o.MaxDestructivePerHour = n
		}
	}
	o.StaleAllow = list(l.get(SettingCleanupStaleAllow))
	o.OrphanGroups = list(l.get(SettingCleanupOrphanGroups))
	c.Cleanup = o
}

// derivedBudget is the default operations budget of a run: CLEANUP_SHARE_PERCENT (default
// 20%) of the tighter of DPS's 1,000 operations a minute and the hubs' identity-registry
// budgets together (HUB_OPS_PER_MINUTE), over the shortest time between two runs of the
// schedule; at least 10. One S1 hub and a run every five minutes give 100.
func (l *loader) derivedBudget(c *Config) int {
	pct := DefaultCleanupSharePercent
	if v := l.get(SettingCleanupShare); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 || n > 100 {
			l.bad(SettingCleanupShare, "%q is not a whole percentage between 1 and 100", v)
		} else {
			pct = n
		}
	}
	every := scheduleInterval(c.CleanupSchedule)
	if every <= 0 {
		return DefaultCleanupBudget
	}
	rate := dpsOpsPerMinute
	if c.Scale.HubOpsPerMinute > 0 {
		hubs := 0
		for _, h := range c.Hubs.Hosts {
			n := c.Scale.HubOpsPerMinute
			if m, ok := c.Scale.HubOpsPerMinuteByHub[strings.ToLower(h)]; ok {
				n = m
			}
			hubs += n
		}
		// Connection-string hubs name their hosts in the strings: each at the default budget.
		hubs += len(c.Hubs.ConnectionStrings) * c.Scale.HubOpsPerMinute
		if hubs > 0 {
			rate = min(rate, hubs)
		}
	}
	return max(10, int(every.Minutes()*float64(rate)*float64(pct)/100))
}

// scheduleInterval is the shortest time between two runs of the cleanup schedule over a week
// (0 when it cannot be read).
func scheduleInterval(v string) time.Duration {
	if isTimeSpan(v) {
		p := strings.Split(v, ":")
		h, _ := strconv.Atoi(p[0])
		m, _ := strconv.Atoi(p[1])
		s, _ := strconv.Atoi(p[2])
		return time.Duration(h)*time.Hour + time.Duration(m)*time.Minute + time.Duration(s)*time.Second
	}
	sched, err := ncrontab.Parse(v)
	if err != nil {
		return 0
	}
	start := time.Date(2026, 1, 5, 0, 0, 0, 0, time.UTC) // a Monday: the gaps of a weekly schedule repeat
	var shortest time.Duration
	prev := sched.Next(start)
	for range 300 {
		next := sched.Next(prev)
		if next.IsZero() || next.Sub(start) > 8*24*time.Hour {
			break
		}
		if d := next.Sub(prev); shortest == 0 || d < shortest {
			shortest = d
		}
		prev = next
	}
	return shortest
}

func (l *loader) boolean(name string) (value, set bool) {
	v := l.get(name)
	if v == "" {
		return false, false
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		l.bad(name, "%q is not true or false", v)
		return false, false
	}
	return b, true
}

// percent reads a percentage such as 0.1 or 1%.
func (l *loader) percent(name string, def float64) float64 {
	v := strings.TrimSuffix(l.get(name), "%")
	if v == "" {
		return def
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f <= 0 || f > 100 {
		l.bad(name, "%q is not a percentage above 0 and at most 100, such as 0.1", v)
		return def
	}
	return f
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
