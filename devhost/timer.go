package devhost

import (
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/robfig/cron/v3"
)

// ncrontab parses the host's six-field NCRONTAB expressions ({second} {minute} {hour} {day}
// {month} {day-of-week}).
var ncrontab = cron.NewParser(cron.Second | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow)

// schedule is a timer's schedule: NCRONTAB or a TimeSpan interval.
type schedule struct {
	cron     cron.Schedule
	interval time.Duration
}

func (s schedule) next(t time.Time) time.Time {
	if s.cron != nil {
		return s.cron.Next(t)
	}
	return t.Add(s.interval)
}

// parseSchedule reads a timerTrigger schedule: six-field NCRONTAB, or hh:mm:ss (a TimeSpan).
// Times are UTC (WEBSITE_TIME_ZONE is not supported; setting it is an error rather than a
// silently different schedule).
func parseSchedule(expr string) (schedule, error) {
	if strings.Count(expr, ":") == 2 && !strings.Contains(expr, " ") {
		d, err := parseTimeSpan(expr)
		if err != nil || d <= 0 {
			return schedule{}, fmt.Errorf("schedule %q: not a positive TimeSpan", expr)
		}
		return schedule{interval: d}, nil
	}
	if n := len(strings.Fields(expr)); n != 6 {
		return schedule{}, fmt.Errorf("schedule %q: NCRONTAB needs 6 fields ({second} {minute} {hour} {day} {month} {day-of-week}), got %d", expr, n)
	}
	c, err := ncrontab.Parse(expr)
	if err != nil {
		return schedule{}, fmt.Errorf("schedule %q: %w", expr, err)
	}
	return schedule{cron: c}, nil
}

// timer drives one timer-triggered function. Like the host's TimerListener, it never overlaps
// runs of one function and does not retry a failed run.
type timer struct {
	h       *Host
	f       *Function
	sched   schedule
	monitor bool
	mu      sync.Mutex
	last    time.Time
	lastUpd time.Time
	running sync.Mutex
}

func (h *Host) startTimer(f *Function) error {
	if _, ok := h.settings["WEBSITE_TIME_ZONE"]; ok {
		return fmt.Errorf("function %s: WEBSITE_TIME_ZONE is set, but devhost runs timers in UTC only", f.Name)
	}
	expr, err := resolve(f.Trigger.String("schedule"), h.settings)
	if err != nil {
		return fmt.Errorf("function %s: %w", f.Name, err)
	}
	s, err := parseSchedule(expr)
	if err != nil {
		return fmt.Errorf("function %s: %w", f.Name, err)
	}
	t := &timer{h: h, f: f, sched: s}
	// useMonitor defaults to true but is forced off for schedules that fire more often than once a
	// minute (TimerSchedule.Create); off means ScheduleStatus is null.
	now := time.Now().UTC()
	n1 := s.next(now)
	t.monitor = f.Trigger.Bool("useMonitor", true) && s.next(n1).Sub(n1) >= time.Minute
	t.last, t.lastUpd = now, now
	h.timersMu.Lock()
	if h.timers == nil {
		h.timers = map[string]*timer{}
	}
	h.timers[strings.ToLower(f.Name)] = t
	h.timersMu.Unlock()
	runOnStartup := f.Trigger.Bool("runOnStartup", false)
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		if runOnStartup {
			t.fire(now, false)
		}
		t.loop()
	}()
	h.log.Info("timer started", "function", f.Name, "schedule", expr, "next", n1.Format(time.RFC3339))
	return nil
}

func (h *Host) timerFor(f *Function) *timer {
	h.timersMu.Lock()
	defer h.timersMu.Unlock()
	return h.timers[strings.ToLower(f.Name)]
}

func (t *timer) loop() {
	for {
		now := time.Now().UTC()
		next := t.sched.next(now)
		select {
		case <-t.h.ctx.Done():
			return
		case <-time.After(time.Until(next)):
		}
		// An occurrence that fires more than a second late (the machine was suspended, a run
		// overlapped) is past due, as the host reports it.
		t.fire(next, time.Since(next) > time.Second)
	}
}

// fire invokes the function for the occurrence at, as the timers extension does: TimerInfo as an object,
// Metadata with "sys" only.
func (t *timer) fire(at time.Time, pastDue bool) {
	t.running.Lock() // a timer function never runs twice at once
	defer t.running.Unlock()
	inv := newInvocation(t.f, time.Now())
	info := map[string]any{
		"Schedule":       map[string]bool{"AdjustForDST": t.sched.cron != nil},
		"ScheduleStatus": nil,
		"IsPastDue":      pastDue,
	}
	t.mu.Lock()
	if t.monitor {
		info["ScheduleStatus"] = map[string]string{
			"Last":        timerTime(t.last),
			"Next":        timerTime(at),
			"LastUpdated": timerTime(t.lastUpd),
		}
	}
	t.mu.Unlock()
	inv.Data[t.f.Trigger.Name], _ = marshalHost(info)
	_, err := t.h.run(t.h.ctx, t.f, inv)
	if err != nil {
		// Not retried: the next run is the next occurrence.
		t.h.log.Warn("timer run failed; waiting for the next occurrence", "function", t.f.Name)
	}
	t.mu.Lock()
	t.last, t.lastUpd = at, time.Now().UTC()
	t.mu.Unlock()
}

// timerTime formats ScheduleStatus times as in the reference's example: seconds, then up to
// seven fractional digits with trailing zeros dropped, and a +00:00 offset.
func timerTime(t time.Time) string {
	return t.UTC().Format("2006-01-02T15:04:05.9999999-07:00")
}
