package opsapi

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"text/tabwriter"
	"time"

	"dpsdeprov/cleanup"
)

// Findings is the answer of GET deprovision/findings: the cleanup's findings since a time,
// counted fleet-wide per pass and kind, and the newest of them (docs/cleanup.md, "Reading
// the findings").
type Findings = cleanup.FindingsReport

// GetFindingsOptions filter [Client.GetFindings]; the zero value asks for the last seven days.
type GetFindingsOptions struct {
	// Since is the start of the runs counted; zero leaves the server's default (seven days).
	Since time.Time
	// Pass, Kind, Run and Subject (a registration, device or group id) filter the findings.
	Pass, Kind, Run, Subject string
	// Limit is how many findings to list, newest first (1 to 1,000; 0: the server's 100).
	Limit int
}

// GetFindingsResponse is the answer of [Client.GetFindings].
type GetFindingsResponse struct {
	Findings
}

// GetFindings reads the findings of the timed and hand-started cleanup runs (GET
// deprovision/findings).
func (c *Client) GetFindings(ctx context.Context, o *GetFindingsOptions) (GetFindingsResponse, error) {
	q := url.Values{}
	if o != nil {
		if !o.Since.IsZero() {
			q.Set("since", o.Since.UTC().Format(time.RFC3339))
		}
		for k, v := range map[string]string{"pass": o.Pass, "kind": o.Kind, "run": o.Run, "subject": o.Subject} {
			if v != "" {
				q.Set(k, v)
			}
		}
		if o.Limit > 0 {
			q.Set("limit", strconv.Itoa(o.Limit))
		}
	}
	path := "findings"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var r GetFindingsResponse
	_, err := c.do(ctx, http.MethodGet, path, nil, &r.Findings, http.StatusOK)
	return r, err
}

// WriteFindings writes f for a person: the counts per pass and kind, then the newest findings.
func WriteFindings(w io.Writer, f *Findings) error {
	if _, err := fmt.Fprintf(w, "findings of %d cleanup runs since %s: %d\n", f.Runs, f.Since.Format(time.RFC3339), f.Total); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	if len(f.Counts) > 0 {
		fmt.Fprintf(tw, "  pass\tkind\tfindings\tdevices or groups\tlatest\n")
	}
	for _, c := range f.Counts {
		fmt.Fprintf(tw, "  %s\t%s\t%d\t%d\t%s\n", c.Pass, c.Kind, c.Findings, c.Subjects, c.Latest.Format(time.RFC3339))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(f.Findings) == 0 {
		return nil
	}
	fmt.Fprintf(w, "newest:\n")
	for _, x := range f.Findings {
		subject := x.RegistrationID
		if subject == "" {
			subject = "group " + x.GroupID
		}
		line := fmt.Sprintf("  %s  %s %s  %s: %s", x.Time.Format(time.RFC3339), x.Pass, x.Kind, subject, x.Action)
		if x.OperationID != "" {
			line += " (" + x.OperationID + " " + string(x.OperationStatus) + ")"
		}
		if _, err := fmt.Fprintln(w, line); err != nil {
			return err
		}
	}
	if f.More {
		fmt.Fprintf(w, "  … more; the counts cover them all (--limit lists up to 1000)\n")
	}
	if f.Truncated {
		fmt.Fprintf(w, "  the runs held more findings than one answer reads: the counts cover the oldest; ask for a later --since\n")
	}
	return nil
}
