package testenv

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"dpsdeprov/emulator"
)

// The emulator HTTP client reaches every emulated host by its real name over HTTPS.
func TestEmulatorHTTPClientReachesRealHostNames(t *testing.T) {
	e := SharedEmulator(t)
	if SharedEmulator(t) != e {
		t.Fatal("SharedEmulator started a second emulator")
	}
	c := EmulatorHTTPClient(e)
	in := e.Info()
	if len(in.Hubs) != 2 {
		t.Fatalf("shared emulator hubs %v", in.Hubs)
	}
	for _, h := range in.Hubs {
		key := h.ConnectionString[strings.Index(h.ConnectionString, "SharedAccessKey=")+len("SharedAccessKey="):]
		tok, err := emulator.SASToken(h.Host, key, "iothubowner", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequest("GET", "https://"+h.Host+"/devices/"+UniqueName("d")+"?api-version=2021-04-12", nil)
		req.Header.Set("Authorization", tok)
		res, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", h.Host, err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 404 || res.Header.Get("iothub-errorcode") != "DeviceNotFound" {
			t.Fatalf("%s answered %d %s", h.Host, res.StatusCode, b)
		}
	}
}

func TestStartEmulatorIsPrivate(t *testing.T) {
	e := StartEmulator(t, emulator.Options{Hubs: []string{"solo"}})
	if e == SharedEmulator(t) || e.Info().Hubs[0].Host != "solo.azure-devices.net" {
		t.Fatalf("StartEmulator returned %+v", e.Info())
	}
}
