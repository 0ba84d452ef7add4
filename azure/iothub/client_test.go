package iothub_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"dpsdeprov/azure/internal/swaggercheck"
	"dpsdeprov/azure/iothub"
	"dpsdeprov/azure/sas"
	"dpsdeprov/emulator"
	"dpsdeprov/internal/testenv"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
)

func etag(s string) *azcore.ETag { e := azcore.ETag(s); return &e }

func TestDeviceLifecycle(t *testing.T) {
	e := newEnv(t, emulator.Options{})
	c, rec := e.client()
	ctx := context.Background()

	created, err := c.CreateOrUpdateDevice(ctx, iothub.Device{DeviceID: "dev-1", Status: iothub.DeviceStatusEnabled}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if created.ETag == "" || created.Authentication == nil || created.Authentication.SymmetricKey == nil || created.Authentication.SymmetricKey.PrimaryKey == "" {
		t.Fatalf("created %+v: want an etag and generated keys", created.Device)
	}
	_, err = c.CreateOrUpdateDevice(ctx, iothub.Device{DeviceID: "dev-1"}, nil)
	var re *azcore.ResponseError
	if !iothub.IsConflict(err) || !errors.As(err, &re) || re.ErrorCode != "DeviceAlreadyExists" {
		t.Fatalf("second create: %v, want 409 DeviceAlreadyExists", err)
	}

	got, err := c.GetDevice(ctx, "dev-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	upd := got.Device
	upd.Status, upd.StatusReason = iothub.DeviceStatusDisabled, "lost"
	after, err := c.CreateOrUpdateDevice(ctx, upd, &iothub.CreateOrUpdateDeviceOptions{IfMatch: etag(got.ETag)})
	if err != nil {
		t.Fatal(err)
	}
	if after.Status != iothub.DeviceStatusDisabled || after.StatusReason != "lost" || after.Authentication.SymmetricKey.PrimaryKey != created.Authentication.SymmetricKey.PrimaryKey {
		t.Fatalf("after update %+v", after.Device)
	}
	// The etag went out quoted, as the hub requires.
	for _, r := range rec.Requests() {
		if r.Method == http.MethodPut && r.Header.Get("If-Match") != "" && r.Header.Get("If-Match") != `"`+got.ETag+`"` {
			t.Fatalf("If-Match sent as %q", r.Header.Get("If-Match"))
		}
	}
	if _, err := c.CreateOrUpdateDevice(ctx, upd, &iothub.CreateOrUpdateDeviceOptions{IfMatch: etag(got.ETag)}); !iothub.IsPreconditionFailed(err) {
		t.Fatalf("stale update: %v, want 412", err)
	}
	if _, err := c.DeleteDevice(ctx, "dev-1", &iothub.DeleteDeviceOptions{IfMatch: etag(got.ETag)}); !iothub.IsPreconditionFailed(err) {
		t.Fatalf("stale delete: %v, want 412", err)
	}
	if _, err := c.CreateOrUpdateDevice(ctx, upd, &iothub.CreateOrUpdateDeviceOptions{IfMatch: etag("*")}); err != nil {
		t.Fatalf("unconditional update: %v", err)
	}
	if _, err := c.DeleteDevice(ctx, "dev-1", nil); err != nil {
		t.Fatal(err)
	}
	_, err = c.GetDevice(ctx, "dev-1", nil)
	if !iothub.IsNotFound(err) || !errors.As(err, &re) || re.ErrorCode != "DeviceNotFound" {
		t.Fatalf("get after delete: %v, want 404 DeviceNotFound", err)
	}
	if _, err := c.DeleteDevice(ctx, "dev-1", nil); !iothub.IsNotFound(err) {
		t.Fatalf("second delete: %v, want 404", err)
	}
	// Ids that need escaping reach the hub intact.
	odd := "a#b?c%d+e=@$"
	if _, err := c.CreateOrUpdateDevice(ctx, iothub.Device{DeviceID: odd}, nil); err != nil {
		t.Fatal(err)
	}
	if g, err := c.GetDevice(ctx, odd, nil); err != nil || g.DeviceID != odd {
		t.Fatalf("odd id read back as %q: %v", g.DeviceID, err)
	}
}

func TestBulkUpdateSurfacesItemResults(t *testing.T) {
	e := newEnv(t, emulator.Options{})
	c, _ := e.client()
	ctx := context.Background()
	var items []iothub.ExportImportDevice
	for i := range 5 {
		items = append(items, iothub.ExportImportDevice{ID: fmt.Sprintf("b-%d", i), ImportMode: iothub.ImportModeCreate})
	}
	r, err := c.BulkUpdate(ctx, items, nil)
	if err != nil || !r.IsSuccessful {
		t.Fatalf("bulk create: %+v %v", r, err)
	}
	// Mixed: disable two, delete one that exists and one that does not.
	mixed := []iothub.ExportImportDevice{
		{ID: "b-0", ImportMode: iothub.ImportModeUpdate, Status: iothub.DeviceStatusDisabled, StatusReason: "group compromised"},
		{ID: "b-1", ImportMode: iothub.ImportModeUpdate, Status: iothub.DeviceStatusDisabled},
		{ID: "b-2", ImportMode: iothub.ImportModeDelete},
		{ID: "missing", ImportMode: iothub.ImportModeDelete},
	}
	r, err = c.BulkUpdate(ctx, mixed, nil)
	if err != nil {
		t.Fatalf("a bulk call with a failed item must still return its result: %v", err)
	}
	if r.IsSuccessful || len(r.Errors) != 1 || r.Errors[0].DeviceID != "missing" || r.Errors[0].ErrorCode != iothub.ErrorCodeDeviceNotFound {
		t.Fatalf("bulk result %+v, want one DeviceNotFound for 'missing'", r)
	}
	d, err := c.GetDevice(ctx, "b-0", nil)
	if err != nil || d.Status != iothub.DeviceStatusDisabled || d.StatusReason != "group compromised" {
		t.Fatalf("b-0 after bulk: %+v %v", d.Device, err)
	}
	if _, err := c.GetDevice(ctx, "b-2", nil); !iothub.IsNotFound(err) {
		t.Fatalf("b-2 after bulk delete: %v", err)
	}
	// Refused before sending: too many, duplicates, missing mode.
	big := make([]iothub.ExportImportDevice, iothub.MaxBulkItems+1)
	for i := range big {
		big[i] = iothub.ExportImportDevice{ID: fmt.Sprint(i), ImportMode: iothub.ImportModeDelete}
	}
	for name, in := range map[string][]iothub.ExportImportDevice{
		"1 to 100":         big,
		"more than once":   {{ID: "x", ImportMode: iothub.ImportModeDelete}, {ID: "x", ImportMode: iothub.ImportModeDelete}},
		"needs an id and ": {{ID: "x"}},
	} {
		if _, err := c.BulkUpdate(ctx, in, nil); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("bulk %q: %v", name, err)
		}
	}
}

func TestQueryPager(t *testing.T) {
	e := newEnv(t, emulator.Options{})
	c, rec := e.client()
	ctx := context.Background()
	if _, err := e.em.Seed(emulator.SeedSpec{Prefix: "q", Registrations: 27}); err != nil {
		t.Fatal(err)
	}
	seen, pages := map[string]bool{}, 0
	var first string
	p := c.NewQueryDevicesPager("SELECT * FROM devices", &iothub.QueryDevicesOptions{PageSize: 4})
	for p.More() {
		page, err := p.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		if pages == 1 {
			first = page.ContinuationToken
		}
		for _, tw := range page.Twins {
			if seen[tw.DeviceID] || tw.Status == "" {
				t.Fatalf("twin %+v repeated or without status", tw)
			}
			seen[tw.DeviceID] = true
		}
	}
	if len(seen) != 27 || pages != 7 {
		t.Fatalf("%d twins in %d pages, want 27 in 7", len(seen), pages)
	}
	if n := rec.Count(http.MethodPost, "/devices/query"); n != 7 {
		t.Fatalf("%d query calls, want 7", n)
	}
	rest := 0
	p = c.NewQueryDevicesPager("SELECT * FROM devices", &iothub.QueryDevicesOptions{PageSize: 4, ContinuationToken: first})
	for p.More() {
		page, err := p.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		rest += len(page.Twins)
	}
	if rest != 23 {
		t.Fatalf("resumed query gave %d, want 23", rest)
	}
}

// TestRetries: throttling (429 with Retry-After) is retried for every operation, bulk
// included; a 503 is retried for a read but not for a bulk call.
func TestRetries(t *testing.T) {
	e := newEnv(t, emulator.Options{})
	c, rec := e.client()
	ctx := context.Background()
	if err := e.em.AddFault(emulator.Fault{Op: "hub.devices.bulk", Status: 429, RetryAfter: 1, Count: 1}); err != nil {
		t.Fatal(err)
	}
	r, err := c.BulkUpdate(ctx, []iothub.ExportImportDevice{{ID: "t-1", ImportMode: iothub.ImportModeCreate}}, nil)
	if err != nil || !r.IsSuccessful {
		t.Fatalf("429 then success: %+v %v", r, err)
	}
	if n := rec.Count(http.MethodPost, "/devices"); n != 2 {
		t.Fatalf("%d bulk attempts, want 2", n)
	}
	if err := e.em.AddFault(emulator.Fault{Op: "hub.devices.bulk", Status: 503, Count: 1}); err != nil {
		t.Fatal(err)
	}
	_, err = c.BulkUpdate(ctx, []iothub.ExportImportDevice{{ID: "t-2", ImportMode: iothub.ImportModeCreate}}, nil)
	var re *azcore.ResponseError
	if !errors.As(err, &re) || re.StatusCode != 503 || re.ErrorCode != "ServiceUnavailable" {
		t.Fatalf("bulk after a 503: %v, want the 503 back", err)
	}
	if n := rec.Count(http.MethodPost, "/devices"); n != 3 {
		t.Fatalf("bulk sent %d times in all, want 3 (no blind retry of the 503)", n)
	}
	if err := e.em.AddFault(emulator.Fault{Op: "hub.devices.get", Status: 503, Count: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetDevice(ctx, "t-1", nil); err != nil {
		t.Fatalf("GET after a 503 was not retried: %v", err)
	}
	// A dropped connection is retried for an unconditional delete.
	if err := e.em.AddFault(emulator.Fault{Op: "hub.devices.delete", Action: "drop", Count: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DeleteDevice(ctx, "t-1", nil); err != nil {
		t.Fatalf("delete after a dropped connection: %v", err)
	}
	// The hub's own throttle, beyond the retries: IsThrottled.
	if err := e.em.SetThrottle("hub1", 1, 0); err != nil {
		t.Fatal(err)
	}
	o := e.options(nil)
	o.Retry.MaxRetries = -1
	c1, err := iothub.NewClientFromConnectionString(e.info.Hubs[0].ConnectionString, o)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = c1.GetDevice(ctx, "x", nil)
	if _, err := c1.GetDevice(ctx, "x", nil); !iothub.IsThrottled(err) {
		t.Fatalf("over the hub's throttle: %v, want IsThrottled", err)
	}
}

func TestSASRefresh(t *testing.T) {
	e := newEnv(t, emulator.Options{})
	// The fixed token lives long enough for the first calls to reach the service however
	// loaded the machine is; the client's own tokens live 2 s.
	const fixedTTL = 10 * time.Second
	ctx := context.Background()
	cs, err := sas.ParseConnectionString(e.info.Hubs[0].ConnectionString)
	if err != nil {
		t.Fatal(err)
	}
	fixed, err := sas.Sign(cs.HostName, cs.SharedAccessKeyName, cs.SharedAccessKey, time.Now().Add(fixedTTL))
	if err != nil {
		t.Fatal(err)
	}
	fixedClient, err := iothub.NewClientFromConnectionString("HostName="+cs.HostName+";SharedAccessSignature="+fixed, e.options(nil))
	if err != nil {
		t.Fatal(err)
	}
	o := e.options(nil)
	o.SASTokenTTL = 2 * time.Second
	c, err := iothub.NewClientFromConnectionString(e.info.Hubs[0].ConnectionString, o)
	if err != nil {
		t.Fatal(err)
	}
	for _, cl := range []*iothub.Client{fixedClient, c} {
		if _, err := cl.GetDevice(ctx, "nobody", nil); !iothub.IsNotFound(err) {
			t.Fatalf("before expiry: %v, want 404 (authorized)", err)
		}
	}
	// The fixed token expires (the emulator's clock is the real one): wait for the 401 that
	// says so. The refreshing client has long since replaced its first token by then.
	testenv.Eventually(t, "the fixed token to be refused once expired", func() bool {
		_, err := fixedClient.GetDevice(ctx, "nobody", nil)
		var re *azcore.ResponseError
		if !iothub.IsNotFound(err) && (!errors.As(err, &re) || re.StatusCode != http.StatusUnauthorized) {
			t.Fatalf("fixed token: %v, want 404 before its expiry and 401 after", err)
		}
		return err != nil && !iothub.IsNotFound(err)
	})
	if _, err := c.GetDevice(ctx, "nobody", nil); !iothub.IsNotFound(err) {
		t.Fatalf("after the first token expired: %v, want 404 (a fresh token)", err)
	}
}

type staticCredential struct {
	token  string
	scopes []string
}

func (s *staticCredential) GetToken(_ context.Context, o policy.TokenRequestOptions) (azcore.AccessToken, error) {
	s.scopes = o.Scopes
	return azcore.AccessToken{Token: s.token, ExpiresOn: time.Now().Add(time.Hour)}, nil
}

func TestBearerCredential(t *testing.T) {
	bk := []byte("bearer-test-key-0123456789abcdef")
	e := newEnv(t, emulator.Options{AcceptBearer: true, BearerKey: bk})
	ctx := context.Background()
	cred := &staticCredential{token: emulator.TestBearerToken("https://iothubs.azure.net", bk, time.Hour)}
	rec := &swaggercheck.Recorder{}
	c, err := iothub.NewClient("https://"+e.info.Hubs[0].Host, cred, e.options(rec))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateOrUpdateDevice(ctx, iothub.Device{DeviceID: "b-1"}, nil); err != nil {
		t.Fatal(err)
	}
	if len(cred.scopes) != 1 || cred.scopes[0] != iothub.Scope {
		t.Fatalf("scopes %v, want [%s]", cred.scopes, iothub.Scope)
	}
	for _, r := range rec.Requests() {
		if !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ") {
			t.Fatalf("request sent Authorization %q", r.Header.Get("Authorization"))
		}
	}
	wrong := &staticCredential{token: emulator.TestBearerToken("https://azure-devices-provisioning.net", bk, time.Hour)}
	cw, err := iothub.NewClient("https://"+e.info.Hubs[0].Host, wrong, e.options(nil))
	if err != nil {
		t.Fatal(err)
	}
	var re *azcore.ResponseError
	if _, err := cw.GetDevice(ctx, "b-1", nil); !errors.As(err, &re) || re.StatusCode != http.StatusUnauthorized {
		t.Fatalf("wrong audience: %v, want 401", err)
	}
}

func TestNewClientRejectsBadInput(t *testing.T) {
	for _, ep := range []string{"http://hub1.azure-devices.net", "https://", "https://x/devices", "hub1.azure-devices.net"} {
		if _, err := iothub.NewClient(ep, &staticCredential{}, nil); err == nil {
			t.Errorf("endpoint %q accepted", ep)
		}
	}
	if _, err := iothub.NewClient("https://hub1.azure-devices.net", nil, nil); err == nil {
		t.Error("nil credential accepted")
	}
}

// TestBulkPlainBadRequest: a 400 whose body is an error, not a bulk result, is an error.
func TestBulkPlainBadRequest(t *testing.T) {
	e := newEnv(t, emulator.Options{})
	c, _ := e.client()
	if err := e.em.AddFault(emulator.Fault{Op: "hub.devices.bulk", Status: 400, Count: 1}); err != nil {
		t.Fatal(err)
	}
	_, err := c.BulkUpdate(context.Background(), []iothub.ExportImportDevice{{ID: "x", ImportMode: iothub.ImportModeDelete}}, nil)
	var re *azcore.ResponseError
	if !errors.As(err, &re) || re.StatusCode != http.StatusBadRequest || re.ErrorCode == "" || !strings.Contains(err.Error(), "injected fault") {
		t.Fatalf("plain 400 from bulk: %v, want a ResponseError with the body", err)
	}
}
