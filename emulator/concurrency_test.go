package emulator_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"dpsdeprov/emulator"
	"dpsdeprov/internal/testenv"
)

// Registrations, registry writes, queries and admin calls running at once keep the state
// consistent (run with -race to check the locking too).
func TestConcurrentUse(t *testing.T) {
	e := testenv.StartEmulator(t, emulator.Options{Hubs: []string{"hub1", "hub2"}})
	c := newClient(t, e)
	key := "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
	wantStatus(t, c.dps("PUT", "/enrollmentGroups/cg", map[string]any{"attestation": map[string]any{"type": "symmetricKey", "symmetricKey": map[string]string{"primaryKey": key, "secondaryKey": key}}}), 200)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for w := range 4 {
		wg.Add(3)
		go func() {
			defer wg.Done()
			scope := e.Info().DPS.IDScope
			for i := range 10 {
				id := fmt.Sprintf("cc-%d-%d", w, i)
				dk, _ := emulator.DeriveDeviceKey(key, id)
				tok, _ := emulator.SASToken(scope+"/registrations/"+id, dk, "registration", time.Hour)
				r, err := c.try("PUT", emulator.GlobalDeviceHost, "/"+scope+"/registrations/"+id+"/register?api-version=2019-03-31", tok, map[string]string{"registrationId": id})
				if err != nil || r.status != 202 {
					errs <- fmt.Errorf("%s: %v %d %s", id, err, r.status, r.body)
				}
			}
		}()
		go func() {
			defer wg.Done()
			var items []map[string]any
			for i := range 50 {
				items = append(items, map[string]any{"id": fmt.Sprintf("bk-%d-%d", w, i), "importMode": "create"})
			}
			host, tok := hubAuth(e, w%2)
			if r, err := c.try("POST", host, "/devices?api-version=2021-04-12", tok, items); err != nil || r.status != 200 {
				errs <- fmt.Errorf("bulk: %v %d %s", err, r.status, r.body)
			}
		}()
		go func() {
			defer wg.Done()
			host, tok := hubAuth(e, w%2)
			dpsHost, dpsTok := dpsAuth(e)
			for range 5 {
				if r, err := c.try("POST", host, "/devices/query?api-version=2021-04-12", tok, map[string]string{"query": "SELECT * FROM devices"}, "x-ms-max-item-count", "10"); err != nil || r.status != 200 {
					errs <- fmt.Errorf("query: %v %d", err, r.status)
				}
				if r, err := c.try("POST", dpsHost, "/registrations/cg/query?api-version=2021-10-01", dpsTok, nil); err != nil || r.status != 200 {
					errs <- fmt.Errorf("registrations query: %v %d", err, r.status)
				}
				_ = e.Stats()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	var all []map[string]any
	r := c.dps("POST", "/registrations/cg/query", nil, "x-ms-max-item-count", "1000")
	r.json(t, &all)
	if len(all) != 40 {
		t.Fatalf("%d registration states, want 40", len(all))
	}
	n := 0
	for hub := range 2 {
		var twins []map[string]any
		c.hub(hub, "POST", "/devices/query", map[string]string{"query": "SELECT * FROM devices"}, "x-ms-max-item-count", "1000").json(t, &twins)
		n += len(twins)
	}
	if n != 240 {
		t.Fatalf("%d devices across hubs, want 240", n)
	}
}

func connAuth(cs string) (string, string) {
	var host, pol, key string
	for _, p := range strings.Split(cs, ";") {
		k, v, _ := strings.Cut(p, "=")
		switch k {
		case "HostName":
			host = v
		case "SharedAccessKeyName":
			pol = v
		case "SharedAccessKey":
			key = v
		}
	}
	tok, _ := emulator.SASToken(host, key, pol, time.Hour)
	return host, tok
}

func hubAuth(e *emulator.Emulator, i int) (string, string) {
	return connAuth(e.Info().Hubs[i].ConnectionString)
}
func dpsAuth(e *emulator.Emulator) (string, string) { return connAuth(e.Info().DPS.ConnectionString) }
