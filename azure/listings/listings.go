// Package listings shares the listings of enrollment groups' registration states between the
// app's instances through a Table, so that a burst of revocations several instances receive
// together reads each page of a group's registration states from DPS once
// ([coalesce.Pages]): DPS's budget of operations is the burst's limit, Table Storage is not.
//
// A group's current listing is one row (partition "group:<group>", row "current") holding
// when it started; its pages and their claims are rows of the partition named by the listing
// id, "page-NNNNNN" and "claim-NNNNNN". A page row holds the page's states as compact JSON
// cut into string properties of at most 30,000 characters (a Table property holds 64 KiB),
// and the continuation of the next page. When a new listing of a group starts, the rows of
// the one it replaces are deleted.
package listings

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"dpsdeprov/azure/internal/azerr"
	"dpsdeprov/azure/internal/tables"
	"dpsdeprov/deprovision"
	"dpsdeprov/deprovision/coalesce"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"
)

// chunk is the most characters one string property of a page row holds.
const chunk = 30000

// maxChunks bounds the properties of one page row (a Table entity holds at most 1 MiB and
// 252 properties); a page that needs more is not shared, and the instances read it on their own.
const maxChunks = 16

// Store implements coalesce.Pages over a Table.
type Store struct {
	c   *aztables.Client
	log *slog.Logger
	now func() time.Time
}

var _ coalesce.Pages = (*Store)(nil)

// Open creates the table name if it does not exist and returns a Store over it.
func Open(ctx context.Context, svc *aztables.ServiceClient, name string, logger *slog.Logger) (*Store, error) {
	c, err := tables.Create(ctx, svc, name)
	if err != nil {
		return nil, fmt.Errorf("the shared listings' table: %w", err)
	}
	if logger == nil {
		logger = slog.Default()
	}
	return &Store{c: c, log: logger, now: time.Now}, nil
}

// headEntity is a group's current listing.
type headEntity struct {
	PartitionKey string
	RowKey       string
	StartedMs    int64  `json:"StartedMs,string"` // Unix milliseconds
	StartedType  string `json:"StartedMs@odata.type"`
}

// claimEntity says an instance is reading a page from DPS since ClaimedMs.
type claimEntity struct {
	PartitionKey string
	RowKey       string
	ClaimedMs    int64  `json:"ClaimedMs,string"` // Unix milliseconds
	ClaimedType  string `json:"ClaimedMs@odata.type"`
}

// item is one registration state as a page row keeps it.
type item struct {
	R string `json:"r"`           // registration id
	D string `json:"d,omitempty"` // device id, when not the registration id
	H string `json:"h,omitempty"` // assigned hub
	S string `json:"s,omitempty"` // status
}

const edmInt64 = "Edm.Int64"

// key makes s fit a Table key: the characters keys may not hold (/ \ # ? and control
// characters) are escaped.
func key(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '/' || r == '\\' || r == '#' || r == '?' || r == '%' || r < 0x20 || (r >= 0x7f && r <= 0x9f):
			fmt.Fprintf(&b, "%%%02X", r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

func pageKey(n int) string  { return fmt.Sprintf("page-%06d", n) }
func claimKey(n int) string { return fmt.Sprintf("claim-%06d", n) }

// Listing implements coalesce.Pages: the group's current listing when it started within
// maxAge, else a new one started now (the instance that writes it first wins; the others
// take its listing).
func (s *Store) Listing(ctx context.Context, group string, maxAge time.Duration) (string, time.Time, error) {
	pk := "group:" + key(strings.ToLower(group))
	for range 8 {
		var head headEntity
		etag, ok, err := tables.Get(ctx, s.c, pk, "current", &head)
		if err != nil {
			return "", time.Time{}, fmt.Errorf("reading the current listing of group %s: %w", group, err)
		}
		now := s.now()
		started := time.UnixMilli(head.StartedMs)
		if ok && now.Sub(started) < maxAge {
			return listingID(group, started), started, nil
		}
		next := headEntity{PartitionKey: pk, RowKey: "current", StartedMs: now.UnixMilli(), StartedType: edmInt64}
		var match *azcore.ETag
		if ok {
			match = &etag
		}
		won, err := tables.Put(ctx, s.c, &next, match)
		if err != nil {
			return "", time.Time{}, fmt.Errorf("starting a listing of group %s: %w", group, err)
		}
		if !won {
			continue // another instance started one: take it
		}
		if ok {
			s.drop(ctx, listingID(group, started))
		}
		started = time.UnixMilli(next.StartedMs)
		return listingID(group, started), started, nil
	}
	return "", time.Time{}, fmt.Errorf("starting a listing of group %s: still contended", group)
}

func listingID(group string, started time.Time) string {
	return "listing:" + key(strings.ToLower(group)) + ":" + strconv.FormatInt(started.UnixMilli(), 10)
}

// drop deletes the rows of a replaced listing. A failure only leaves rows behind (the next
// replacement does not find them), so it is logged, not returned.
func (s *Store) drop(ctx context.Context, id string) {
	filter := "PartitionKey eq '" + strings.ReplaceAll(id, "'", "''") + "'"
	sel := "PartitionKey,RowKey"
	pager := s.c.NewListEntitiesPager(&aztables.ListEntitiesOptions{Filter: &filter, Select: &sel})
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			s.log.Warn("deleting the rows of a replaced listing", "listing", id, "error", err)
			return
		}
		for _, raw := range page.Entities {
			var e struct{ PartitionKey, RowKey string }
			if err := json.Unmarshal(raw, &e); err != nil {
				continue
			}
			if _, err := s.c.DeleteEntity(ctx, e.PartitionKey, e.RowKey, nil); err != nil && azerr.Status(err) != http.StatusNotFound {
				s.log.Warn("deleting a row of a replaced listing", "listing", id, "row", e.RowKey, "error", err)
			}
		}
	}
}

// Claim implements coalesce.Pages.
func (s *Store) Claim(ctx context.Context, id string, n int, stale time.Duration) (bool, error) {
	for range 8 {
		var cl claimEntity
		etag, ok, err := tables.Get(ctx, s.c, id, claimKey(n), &cl)
		if err != nil {
			return false, fmt.Errorf("reading the claim on page %d of %s: %w", n, id, err)
		}
		now := s.now()
		if ok && now.Sub(time.UnixMilli(cl.ClaimedMs)) < stale {
			return false, nil
		}
		next := claimEntity{PartitionKey: id, RowKey: claimKey(n), ClaimedMs: now.UnixMilli(), ClaimedType: edmInt64}
		var match *azcore.ETag
		if ok {
			match = &etag
		}
		won, err := tables.Put(ctx, s.c, &next, match)
		if err != nil {
			return false, fmt.Errorf("claiming page %d of %s: %w", n, id, err)
		}
		if won {
			return true, nil
		}
	}
	return false, nil
}

// Put implements coalesce.Pages.
func (s *Store) Put(ctx context.Context, id string, n int, page deprovision.RegistrationPage) error {
	items := make([]item, len(page.Items))
	for i, r := range page.Items {
		items[i] = item{R: r.RegistrationID, H: r.AssignedHub, S: r.Status}
		if r.DeviceID != r.RegistrationID {
			items[i].D = r.DeviceID
		}
	}
	b, err := json.Marshal(items)
	if err != nil {
		return err
	}
	row := map[string]any{"PartitionKey": id, "RowKey": pageKey(n), "Next": page.Next}
	text := string(b)
	parts := 0
	for ; text != ""; parts++ {
		if parts == maxChunks {
			return fmt.Errorf("page %d of %s needs more than %d properties of %d characters", n, id, maxChunks, chunk)
		}
		cut := min(len(text), chunk)
		for cut < len(text) && !utf8.RuneStart(text[cut]) {
			cut--
		}
		row["Items"+strconv.Itoa(parts)] = text[:cut]
		text = text[cut:]
	}
	row["Parts"] = parts
	v, err := json.Marshal(row)
	if err != nil {
		return err
	}
	if _, err := s.c.UpsertEntity(ctx, v, &aztables.UpsertEntityOptions{UpdateMode: aztables.UpdateModeReplace}); err != nil {
		return fmt.Errorf("writing page %d of %s: %w", n, id, err)
	}
	return nil
}

// Page implements coalesce.Pages.
func (s *Store) Page(ctx context.Context, id string, n int) (deprovision.RegistrationPage, bool, error) {
	var row map[string]any
	_, ok, err := tables.Get(ctx, s.c, id, pageKey(n), &row)
	if err != nil || !ok {
		if err != nil {
			err = fmt.Errorf("reading page %d of %s: %w", n, id, err)
		}
		return deprovision.RegistrationPage{}, false, err
	}
	parts, _ := row["Parts"].(float64)
	var b strings.Builder
	for i := range int(parts) {
		part, ok := row["Items"+strconv.Itoa(i)].(string)
		if !ok {
			return deprovision.RegistrationPage{}, false, fmt.Errorf("page %d of %s lacks its part %d", n, id, i)
		}
		b.WriteString(part)
	}
	var items []item
	if err := json.Unmarshal([]byte(b.String()), &items); err != nil {
		return deprovision.RegistrationPage{}, false, fmt.Errorf("decoding page %d of %s: %w", n, id, err)
	}
	next, _ := row["Next"].(string)
	page := deprovision.RegistrationPage{Items: make([]deprovision.Registration, len(items)), Next: next}
	for i, it := range items {
		d := it.D
		if d == "" {
			d = it.R
		}
		page.Items[i] = deprovision.Registration{RegistrationID: it.R, DeviceID: d, AssignedHub: it.H, Status: it.S}
	}
	return page, true, nil
}
