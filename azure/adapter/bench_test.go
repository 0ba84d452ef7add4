package adapter_test

import (
	"context"
	"testing"

	"dpsdeprov/emulator"
)

// BenchmarkGroupRegistrationsPage measures the client side of paging a large group: one op
// is one page of 1,000 registration states fetched from the emulator and mapped to the
// engine's type. Memory per page does not depend on the group's size, which is what keeps a
// group-wide operation flat.
func BenchmarkGroupRegistrationsPage(b *testing.B) {
	e := newEnvTB(b, emulator.Options{Hubs: []string{"hub1"}})
	const size, page = 50_000, 1000
	seed, err := e.em.Seed(emulator.SeedSpec{Prefix: "bench", Registrations: size})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	next, n := "", 0
	for i := 0; i < b.N; i++ {
		for p, err := range e.dps.GroupRegistrations(ctx, seed.Groups[0].ID, next, page) {
			if err != nil {
				b.Fatal(err)
			}
			n += len(p.Items)
			next = p.Next
			break // one page per op; the next op resumes from its token
		}
	}
	b.StopTimer()
	if n == 0 {
		b.Fatal("no registrations paged")
	}
}
