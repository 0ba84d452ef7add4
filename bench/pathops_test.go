package bench

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"dpsdeprov/azure/adapter"
	"dpsdeprov/azure/dps"
	"dpsdeprov/azure/iothub"
	"dpsdeprov/deprovision"
	"dpsdeprov/deprovision/fake"
	"dpsdeprov/emulator"
	"dpsdeprov/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// applyAtOnce is a work queue that applies each batch as it is enqueued, so that a group
// operation ends within Submit (the Storage queue is tested in azure/workqueue and cmd/demo).
type applyAtOnce struct{ e *deprovision.Engine }

func (q *applyAtOnce) Enqueue(ctx context.Context, b *deprovision.WorkBatch) error {
	_, err := q.e.ApplyBatch(ctx, b, deprovision.BatchOptions{})
	return err
}

// TestRegistryOperationsPerDevice counts, with the emulator's statistics, the identity-registry
// operations each path charges a hub per device (docs/scale.md lists them next to the
// minimum each intent needs). A group delete costs one per member (one item of a bulk call);
// a group disable, which keeps each identity as it was (deprovision/group.go, disableMembers),
// one per X.509 member (one query per 100 members, on the hub's query budget, gives all an
// X.509 identity has) and two per SAS member (the query shows no keys: one read, then the
// item). A single-device disable must cost 2, the floor for a reversible disable (the read
// that gives the whole identity and its ETag, then the write carrying it), and a single-device
// delete 2 (resolution's read, which classifies the device and states what the plan changes,
// then the DELETE, which needs no read of its own).
func TestRegistryOperationsPerDevice(t *testing.T) {
	em := testenv.StartEmulator(t, emulator.Options{Hubs: []string{"hub1", "hub2"}})
	info := em.Info()
	tr := testenv.LoopbackTransport(t, em)
	co := azcore.ClientOptions{Transport: tr, Retry: policy.RetryOptions{MaxRetries: -1}}
	dc, err := dps.NewClientFromConnectionString(info.DPS.ConnectionString, &dps.ClientOptions{ClientOptions: co})
	if err != nil {
		t.Fatal(err)
	}
	hubCs := map[string]*iothub.Client{}
	for _, h := range info.Hubs {
		c, err := iothub.NewClientFromConnectionString(h.ConnectionString, &iothub.ClientOptions{ClientOptions: co})
		if err != nil {
			t.Fatal(err)
		}
		hubCs[h.Host] = c
	}
	da := adapter.NewDPS(dc)
	q := &applyAtOnce{}
	e := deprovision.NewEngine(deprovision.Deps{Enrollments: da, Registrations: da, Devices: adapter.NewHubDevices(hubCs),
		Journal: fake.NewJournal(), Logger: slog.New(slog.DiscardHandler), Work: q}, deprovision.Config{GroupPageSize: 1000})
	q.e = e
	ctx := context.Background()

	const members = 400
	seed := func(prefix string, att ...string) emulator.SeededGroup {
		spec := emulator.SeedSpec{Prefix: prefix, Groups: 1, Registrations: members}
		if len(att) > 0 {
			spec.Attestation = att[0]
		}
		res, err := em.Seed(spec)
		if err != nil {
			t.Fatal(err)
		}
		return res.Groups[0]
	}
	ops := func() int64 {
		var n int64
		for _, h := range em.Stats().Hubs {
			n += h.RegistryOps
		}
		return n
	}
	queries := func() int64 { return em.Stats().Operations["hub.devices.query"].Calls }
	type path struct {
		name    string
		req     deprovision.Request
		devices int
		want    float64 // registry operations per device
	}
	grp := seed("grp")
	x509 := seed("xgrp", "x509")
	ret := seed("ret")
	single := seed("one")
	id := func(g emulator.SeededGroup, i int) string { return fmt.Sprintf("%s-d%d", g.ID, i) }
	paths := []path{
		{"group compromised, X.509 members (query, bulk updateIfMatchETag)", deprovision.Request{Intent: deprovision.IntentGroupCompromised, EnrollmentGroupID: x509.ID}, members, 1},
		{"group compromised, SAS members (query, read, bulk updateIfMatchETag)", deprovision.Request{Intent: deprovision.IntentGroupCompromised, EnrollmentGroupID: grp.ID}, members, 2},
		{"group retired (bulk delete)", deprovision.Request{Intent: deprovision.IntentGroupRetired, EnrollmentGroupID: ret.ID}, members, 1},
		{"member compromised (disable)", deprovision.Request{Intent: deprovision.IntentCompromised, RegistrationID: id(single, 1)}, 1, 2},
		{"member lost (disable)", deprovision.Request{Intent: deprovision.IntentLost, RegistrationID: id(single, 2)}, 1, 2},
		{"member sold (delete)", deprovision.Request{Intent: deprovision.IntentSold, RegistrationID: id(single, 3)}, 1, 2},
	}
	got := map[string]float64{}
	var table strings.Builder
	for i, p := range paths {
		p.req.EventID, p.req.Source, p.req.EventTime = fmt.Sprintf("ops-%d", i), "/security", time.Now()
		em.ResetStats()
		op, err := e.Submit(ctx, p.req)
		if err != nil {
			t.Fatalf("%s: %v", p.name, err)
		}
		if op.Status != deprovision.StatusSucceeded {
			t.Fatalf("%s: %s (%s)", p.name, op.Status, op.Reason)
		}
		per := float64(ops()) / float64(p.devices)
		got[p.name] = per
		fmt.Fprintf(&table, "| %s | %.2f | %.3f |\n", p.name, per, float64(queries())/float64(p.devices))
	}
	t.Logf("hub registry operations and queries per device:\n%s", table.String())
	for _, p := range paths {
		if got[p.name] != p.want {
			t.Errorf("%s costs %.2f registry operations per device, want %.0f", p.name, got[p.name], p.want)
		}
	}
}
