package cleanup

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"dpsdeprov/deprovision"
)

// FindingsQuery selects the findings of timed and hand-started runs for the Operations API.
type FindingsQuery struct {
	// Since is the start of the runs counted (default: seven days ago).
	Since time.Time
	// Pass, Kind, RunID and Subject (a registration id, device id or group id) filter the
	// findings; "" takes all.
	Pass, Kind, RunID, Subject string
	// Limit is how many findings, newest first, the answer lists (default 100, at most 1,000);
	// the counts cover them all.
	Limit int
}

// ParseSince reads FindingsQuery.Since as the Operations API and the CLI take it: an RFC 3339
// time, or a period back from now (a Go duration such as 24h, or whole days such as 7d).
func ParseSince(v string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, nil
	}
	if d, ok := strings.CutSuffix(v, "d"); ok {
		if n, err := strconv.Atoi(d); err == nil && n >= 0 {
			return now.Add(-time.Duration(n) * 24 * time.Hour), nil
		}
	}
	if d, err := time.ParseDuration(v); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("since %q is neither an RFC 3339 time nor a period such as 24h or 7d", v)
}

// FindingCount counts the findings of one kind over the runs asked for, fleet-wide: how many
// findings, and how many distinct devices or groups they are about (a condition still true is
// found again by every sweep, so Findings counts sweeps and Subjects counts the fleet).
type FindingCount struct {
	Pass     string    `json:"pass"`
	Kind     string    `json:"kind"`
	Findings int       `json:"findings"`
	Subjects int       `json:"subjects"`
	Latest   time.Time `json:"latest"`
}

// FindingsReport is the answer to a FindingsQuery.
type FindingsReport struct {
	Since    time.Time             `json:"since"`
	Runs     int                   `json:"runs"`
	Total    int                   `json:"total"`
	Counts   []FindingCount        `json:"counts"`
	Findings []deprovision.Finding `json:"findings"`
	// More is true when the counts cover more findings than the answer lists.
	More bool `json:"more,omitempty"`
	// Truncated is true when the runs held more findings than one answer reads
	// (maxFindingsScanned): the counts cover the oldest of them; ask for a later since.
	Truncated bool `json:"truncated,omitempty"`
}

// maxFindingsScanned bounds the findings one query reads.
const maxFindingsScanned = 200_000

// ErrNoLedger is returned by FindingsReport when the runner has no ledger to read from.
var ErrNoLedger = errors.New("the cleanup has no ledger")

// FindingsReport reads the findings of the runs since q.Since and counts them fleet-wide.
func (r *Runner) FindingsReport(ctx context.Context, q FindingsQuery) (FindingsReport, error) {
	if r.d.Ledger == nil {
		return FindingsReport{}, ErrNoLedger
	}
	if q.Since.IsZero() {
		q.Since = r.d.Clock.Now().Add(-7 * 24 * time.Hour)
	}
	if q.Limit <= 0 {
		q.Limit = 100
	}
	q.Limit = min(q.Limit, 1000)
	rep := FindingsReport{Since: q.Since.UTC(), Findings: []deprovision.Finding{}, Counts: []FindingCount{}}
	type key struct{ pass, kind string }
	counts := map[key]*FindingCount{}
	subjects := map[key]map[string]bool{}
	runs := map[string]bool{}
	var recent []deprovision.Finding // a ring of the newest q.Limit
	scanned := 0
	for f, err := range r.d.Ledger.FindingsSince(ctx, q.Since) {
		if err != nil {
			return rep, err
		}
		if scanned++; scanned > maxFindingsScanned {
			rep.Truncated = true
			break
		}
		if q.Pass != "" && f.Pass != q.Pass || q.Kind != "" && f.Kind != q.Kind || q.RunID != "" && f.RunID != q.RunID ||
			q.Subject != "" && !strings.EqualFold(f.RegistrationID, q.Subject) && f.DeviceID != q.Subject && !strings.EqualFold(f.GroupID, q.Subject) {
			continue
		}
		runs[f.RunID] = true
		rep.Total++
		k := key{f.Pass, f.Kind}
		c := counts[k]
		if c == nil {
			c = &FindingCount{Pass: f.Pass, Kind: f.Kind}
			counts[k], subjects[k] = c, map[string]bool{}
		}
		c.Findings++
		if f.Time.After(c.Latest) {
			c.Latest = f.Time
		}
		subjects[k][strings.ToLower(f.Hub+"/"+f.GroupID+"/"+f.RegistrationID)] = true
		if len(recent) == q.Limit {
			recent = recent[1:]
			rep.More = true
		}
		recent = append(recent, *f)
	}
	for k, c := range counts {
		c.Subjects = len(subjects[k])
		rep.Counts = append(rep.Counts, *c)
	}
	slices.SortFunc(rep.Counts, func(a, b FindingCount) int {
		return strings.Compare(a.Pass+"\x00"+a.Kind, b.Pass+"\x00"+b.Kind)
	})
	slices.Reverse(recent)
	rep.Findings = append(rep.Findings, recent...)
	rep.Runs = len(runs)
	return rep, nil
}
