package listings

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"dpsdeprov/deprovision"
	"dpsdeprov/deprovision/coalesce"
	"dpsdeprov/deprovision/fake"
	"dpsdeprov/internal/testenv"

	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// openStore opens a Store over a fresh table of the package's Azurite; more Stores over the
// same table are the other instances.
func openStore(tb testing.TB) (*Store, func() *Store) {
	tb.Helper()
	svc, err := aztables.NewServiceClientFromConnectionString(testenv.SharedAzurite(tb).ConnectionString(), nil)
	if err != nil {
		tb.Fatal(err)
	}
	name := testenv.UniqueName("listings")
	open := func() *Store {
		s, err := Open(context.Background(), svc, name, quiet())
		if err != nil {
			tb.Fatal(err)
		}
		return s
	}
	return open(), open
}

// A page comes back as it was put: long enough to need several properties, with ids a Table
// key could not hold, device ids apart from their registration ids, and the continuation.
func TestPageRoundTrip(t *testing.T) {
	ctx := context.Background()
	s, _ := openStore(t)
	id, _, err := s.Listing(ctx, "Group/#?ü", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	var page deprovision.RegistrationPage
	for i := range 1000 {
		rid := fmt.Sprintf("device-%04d-%s", i, strings.Repeat("x", 60))
		r := deprovision.Registration{RegistrationID: rid, DeviceID: rid, AssignedHub: fmt.Sprintf("hub%d.azure-devices.net", i%4), Status: "assigned"}
		if i%7 == 0 {
			r.DeviceID = "other-" + rid
		}
		if i == 5 {
			r.RegistrationID, r.DeviceID = "zoë-ünïcode", "zoë-ünïcode"
		}
		page.Items = append(page.Items, r)
	}
	page.Next = `{"token":"+RID:~abc==#RT:1#TRC:1000","range":{"min":"","max":"FF"}}`
	if _, ok, err := s.Page(ctx, id, 0); err != nil || ok {
		t.Fatalf("a page never put: ok %v, %v", ok, err)
	}
	if err := s.Put(ctx, id, 0, page); err != nil {
		t.Fatal(err)
	}
	got, ok, err := s.Page(ctx, id, 0)
	if err != nil || !ok {
		t.Fatalf("reading the page back: ok %v, %v", ok, err)
	}
	if got.Next != page.Next || len(got.Items) != len(page.Items) {
		t.Fatalf("read back %d items, next %q; put %d, next %q", len(got.Items), got.Next, len(page.Items), page.Next)
	}
	for i := range page.Items {
		if got.Items[i] != page.Items[i] {
			t.Fatalf("item %d: read back %+v, put %+v", i, got.Items[i], page.Items[i])
		}
	}
}

// Instances share a group's listing while it is fresh; after maxAge a new one starts, and the
// rows of the old one go.
func TestListingIsSharedUntilItLapses(t *testing.T) {
	ctx := context.Background()
	a, open := openStore(t)
	b := open()
	id, started, err := a.Listing(ctx, "g1", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if id2, started2, err := b.Listing(ctx, "G1", time.Minute); err != nil || id2 != id || !started2.Equal(started) {
		t.Fatalf("the other instance got listing %q (%v, %v), want %q", id2, started2, err, id)
	}
	if err := a.Put(ctx, id, 0, deprovision.RegistrationPage{Items: []deprovision.Registration{{RegistrationID: "m1"}}}); err != nil {
		t.Fatal(err)
	}
	if ok, err := a.Claim(ctx, id, 1, time.Minute); err != nil || !ok {
		t.Fatalf("claim: %v %v", ok, err)
	}
	b.now = func() time.Time { return time.Now().Add(2 * time.Minute) }
	id3, _, err := b.Listing(ctx, "g1", time.Minute)
	if err != nil || id3 == id {
		t.Fatalf("after maxAge: listing %q (%v), want a new one", id3, err)
	}
	if _, ok, err := a.Page(ctx, id, 0); err != nil || ok {
		t.Errorf("the lapsed listing's page is still there (ok %v, %v)", ok, err)
	}
	if won, err := a.Claim(ctx, id, 1, time.Minute); err != nil || !won {
		t.Errorf("the lapsed listing's claim is still there: claim again %v, %v", won, err)
	}
}

// One instance claims a page; the others are held off until the claim goes stale.
func TestClaimHoldsOffOthersUntilStale(t *testing.T) {
	ctx := context.Background()
	a, open := openStore(t)
	b := open()
	id, _, err := a.Listing(ctx, "g1", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if won, err := a.Claim(ctx, id, 0, time.Minute); err != nil || !won {
		t.Fatalf("first claim: %v %v", won, err)
	}
	if won, err := b.Claim(ctx, id, 0, time.Minute); err != nil || won {
		t.Fatalf("second claim while the first is fresh: %v %v", won, err)
	}
	if won, err := b.Claim(ctx, id, 1, time.Minute); err != nil || !won {
		t.Fatalf("a claim of another page: %v %v", won, err)
	}
	b.now = func() time.Time { return time.Now().Add(2 * time.Minute) }
	if won, err := b.Claim(ctx, id, 0, time.Minute); err != nil || !won {
		t.Fatalf("a claim of a stale claim: %v %v", won, err)
	}
}

// Three instances receiving one burst together read each page of the group from DPS once:
// the Store hands the pages one read to the others.
func TestInstancesListAGroupOnce(t *testing.T) {
	ctx := context.Background()
	_, open := openStore(t)
	dps := fake.NewDPS()
	const members = 2500
	for i := range members {
		id := fmt.Sprintf("m-%04d", i)
		dps.AddRegistration(deprovision.Registration{RegistrationID: id, DeviceID: id, AssignedHub: "hub1.azure-devices.net", Status: "assigned"}, "g1")
	}
	var cs []*coalesce.Coalescer
	for range 3 {
		// Lookups only: no bulk enrollment calls.
		cs = append(cs, coalesce.New(dps, nil, &coalesce.Options{Logger: quiet(), PageSize: 1000, Pages: open()}))
	}
	var wg sync.WaitGroup
	for i := range members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("m-%04d", i)
			r, err := cs[i%len(cs)].Lookup(ctx, "g1", id)
			if err != nil || r.DeviceID != id {
				t.Errorf("lookup %s: %+v %v", id, r, err)
			}
		}()
	}
	wg.Wait()
	if got := dps.Pages.Load(); got != 3 {
		t.Errorf("%d pages read from DPS by 3 instances for a group of %d, want 3", got, members)
	}
	var shared, single int64
	for _, c := range cs {
		st := c.Stats()
		shared += st.SharedPages
		single += st.SingleReads
	}
	if shared != 6 || single != 0 {
		t.Errorf("%d pages taken from the other instances (want 6) and %d single reads (want 0)", shared, single)
	}
}
