package emulator_test

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"dpsdeprov/emulator"
	"dpsdeprov/internal/testenv"
)

// peakHeap samples the heap in use until stop is called and returns the peak in MiB.
func peakHeap() (stop func() float64) {
	var peak atomic.Uint64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var m runtime.MemStats
		for {
			runtime.ReadMemStats(&m)
			if m.HeapInuse > peak.Load() {
				peak.Store(m.HeapInuse)
			}
			select {
			case <-done:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	return func() float64 {
		close(done)
		wg.Wait()
		return float64(peak.Load()) / (1 << 20)
	}
}

func retainedHeapMiB() float64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return float64(m.HeapAlloc) / (1 << 20)
}

// BenchmarkSeed100k seeds 100,000 registrations (DPS registration states and hub devices)
// across 10 symmetric-key groups and 2 hubs.
func BenchmarkSeed100k(b *testing.B) {
	e := testenv.StartEmulator(b, emulator.Options{Hubs: []string{"hub1", "hub2"}})
	base := retainedHeapMiB()
	stop := peakHeap()
	var retained float64
	b.ResetTimer()
	for i := range b.N {
		if _, err := e.Seed(emulator.SeedSpec{Prefix: fmt.Sprintf("b%d", i), Groups: 10, Registrations: 100_000}); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		retained = retainedHeapMiB() - base
		e.Reset() // each iteration seeds an empty emulator
		runtime.GC()
		b.StartTimer()
	}
	b.StopTimer()
	b.ReportMetric(stop(), "peak-heap-MiB")
	b.ReportMetric(retained, "retained-MiB")
}

// BenchmarkPage100k pages, over HTTPS with SAS auth, through the registration states of a
// 100,000-device group (DPS) and through the same devices' twins in their hubs, 1,000 items a
// page.
func BenchmarkPage100k(b *testing.B) {
	e := testenv.StartEmulator(b, emulator.Options{Hubs: []string{"hub1", "hub2"}})
	if _, err := e.Seed(emulator.SeedSpec{Prefix: "p", Groups: 1, Registrations: 100_000}); err != nil {
		b.Fatal(err)
	}
	c := newClient(b, e)
	stop := peakHeap()
	b.ResetTimer()
	for range b.N {
		n := pageAll(b, func(token string) resp {
			h := []string{"x-ms-max-item-count", "1000"}
			if token != "" {
				h = append(h, "x-ms-continuation", token)
			}
			return c.dps("POST", "/registrations/p-g0/query", nil, h...)
		})
		for hub := range 2 {
			n += pageAll(b, func(token string) resp {
				h := []string{"x-ms-max-item-count", "1000"}
				if token != "" {
					h = append(h, "x-ms-continuation", token)
				}
				return c.hub(hub, "POST", "/devices/query", map[string]string{"query": "SELECT * FROM devices"}, h...)
			})
		}
		if n != 200_000 {
			b.Fatalf("paged %d items, want 200000", n)
		}
	}
	b.StopTimer()
	b.ReportMetric(stop(), "peak-heap-MiB")
}

func pageAll(b *testing.B, call func(token string) resp) int {
	n, token := 0, ""
	for {
		r := call(token)
		if r.status != 200 {
			b.Fatalf("status %d: %s", r.status, r.body)
		}
		var items []map[string]any
		r.json(b, &items)
		n += len(items)
		if token = r.header.Get("x-ms-continuation"); token == "" {
			return n
		}
	}
}
