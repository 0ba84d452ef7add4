package handler

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"dpsdeprov/cleanup"
	"dpsdeprov/deprovision"
)

// CleanupRunner runs the cleanup passes; *cleanup.Runner satisfies it.
type CleanupRunner interface {
	Run(ctx context.Context) (cleanup.Report, error)
	RunPass(ctx context.Context, name string, o cleanup.Overrides) (cleanup.Report, error)
	Findings(ctx context.Context, runID string) iter.Seq2[*deprovision.Finding, error]
	FindingsReport(ctx context.Context, q cleanup.FindingsQuery) (cleanup.FindingsReport, error)
}

// Cleanup is the Cleaner of the Cleanup timer: every pass of docs/cleanup.md, in order, on one
// budget. It also serves POST deprovision/cleanup/{pass} and GET deprovision/findings on the
// Operations endpoint.
type Cleanup struct {
	Runner CleanupRunner
	// Context, if set, decorates the context of every cleanup run, timed or by hand: the app
	// puts its hub calls in the rate limiter's bulk lane there, so that cleanup never
	// competes with compromise response for a hub's budget.
	Context func(context.Context) context.Context
}

// runContext is the context a cleanup run works in.
func (c *Cleanup) runContext(ctx context.Context) context.Context {
	if c.Context == nil {
		return ctx
	}
	return c.Context(ctx)
}

// Run implements Cleaner.
func (c *Cleanup) Run(ctx context.Context, _ TimerInfo) (string, error) {
	rep, err := c.Runner.Run(c.runContext(ctx))
	return rep.String(), err
}

// CleanupRunView is the answer to POST deprovision/cleanup/{pass}: what the run did and what it found.
type CleanupRunView struct {
	cleanup.Report
	Findings []deprovision.Finding `json:"findings"`
	// More is true when the run found more than the answer lists.
	More  bool   `json:"more,omitempty"`
	Error string `json:"error,omitempty"`
}

// maxFindingsShown bounds the findings one answer lists (the journal keeps them all).
const maxFindingsShown = 200

// postCleanup runs one cleanup pass by hand. The body may say {"dryRun": false} (the default
// is a dry run, as for every POST of the endpoint) and {"budget": n}.
func (h *Handler) postCleanup(ctx context.Context, c *call, pass string, body []byte) {
	cl, ok := h.o.Cleaner.(*Cleanup)
	if !ok || cl.Runner == nil {
		c.respond(http.StatusNotImplemented, apiError{"cleanup passes cannot be run by hand: no cleanup runner is configured"})
		return
	}
	if pass == "" {
		c.respond(http.StatusBadRequest, apiError{fmt.Sprintf("name the pass: POST deprovision/cleanup/{pass}, one of %s", strings.Join(cleanup.Passes, ", "))})
		return
	}
	var in struct {
		DryRun *bool `json:"dryRun"`
		Budget *int  `json:"budget"`
	}
	if len(body) > 0 {
		if err := decodeStrict(body, &in); err != nil {
			c.respond(http.StatusBadRequest, apiError{"the body is not {\"dryRun\": bool, \"budget\": number}: " + err.Error()})
			return
		}
	}
	if in.Budget != nil && *in.Budget <= 0 {
		c.respond(http.StatusBadRequest, apiError{fmt.Sprintf("budget %d is not a positive number", *in.Budget)})
		return
	}
	dry := in.DryRun == nil || *in.DryRun
	rep, err := cl.Runner.RunPass(cl.runContext(ctx), strings.ToLower(pass), cleanup.Overrides{DryRun: &dry, Budget: in.Budget})
	if errors.Is(err, cleanup.ErrUnknownPass) {
		c.respond(http.StatusNotFound, apiError{err.Error()})
		return
	}
	v := CleanupRunView{Report: rep, Findings: []deprovision.Finding{}}
	status := http.StatusOK
	if err != nil {
		v.Error = err.Error()
		status = http.StatusInternalServerError
		if deprovision.IsTransient(err) {
			status = http.StatusServiceUnavailable
		}
	}
	if rep.RunID != "" {
		for f, ferr := range cl.Runner.Findings(ctx, rep.RunID) {
			if ferr != nil {
				c.logf(slog.LevelWarn, "listing the findings of run %s: %v", rep.RunID, ferr)
				break
			}
			if len(v.Findings) == maxFindingsShown {
				v.More = true
				break
			}
			v.Findings = append(v.Findings, *f)
		}
	}
	c.logf(slog.LevelInfo, "cleanup pass %s run by hand (dry run %t): %s", pass, dry, rep.String())
	c.respond(status, v)
}

// getFindings answers GET deprovision/findings: the findings of the timed and hand-started
// runs since a time, counted fleet-wide per pass and kind, and the newest of them. Query:
// since (RFC 3339, or a period back from now such as 24h or 7d; default 7d), pass, kind, run,
// subject (registration, device or group id), limit (default 100, at most 1,000).
func (h *Handler) getFindings(ctx context.Context, c *call, r *httpRequest) {
	cl, ok := h.o.Cleaner.(*Cleanup)
	if !ok || cl.Runner == nil {
		c.respond(http.StatusNotImplemented, apiError{"no cleanup runner is configured"})
		return
	}
	// The route's own {kind} segment is "findings": the finding kind is read from the query.
	q := cleanup.FindingsQuery{Pass: strings.ToLower(r.param("pass")), Kind: queryParam(r, "kind"), RunID: r.param("run"), Subject: r.param("subject")}
	if q.Pass != "" && !slices.Contains(cleanup.Passes, q.Pass) {
		c.respond(http.StatusBadRequest, apiError{fmt.Sprintf("pass %q is not one of %s", q.Pass, strings.Join(cleanup.Passes, ", "))})
		return
	}
	if v := r.param("since"); v != "" {
		t, err := cleanup.ParseSince(v, h.o.Clock.Now())
		if err != nil {
			c.respond(http.StatusBadRequest, apiError{err.Error()})
			return
		}
		q.Since = t
	}
	if v := r.param("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 || n > 1000 {
			c.respond(http.StatusBadRequest, apiError{fmt.Sprintf("limit %q is not a whole number from 1 to 1000", v)})
			return
		}
		q.Limit = n
	}
	rep, err := cl.Runner.FindingsReport(ctx, q)
	if err != nil {
		c.respondError("findings", err)
		return
	}
	c.respond(http.StatusOK, rep)
}

// queryParam reads a query parameter only (not a route parameter of the same name).
func queryParam(r *httpRequest, name string) string {
	for k, v := range r.Query {
		if strings.EqualFold(k, name) {
			return string(v)
		}
	}
	return ""
}
