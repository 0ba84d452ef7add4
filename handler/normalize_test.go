package handler

import (
	"errors"
	"strings"
	"testing"
	"time"

	"dpsdeprov/config"
	"dpsdeprov/deprovision"
)

// The admission checks are built from config's plain values: the event-type map extends the built-in
// one, the allowed sources go to their intent, and what names no intent is refused naming
// the setting.
func TestNewAdmissionFromSettings(t *testing.T) {
	p, err := NewAdmission(config.Admission{
		EventTypeMap:   "Acme.Disposed=retired",
		AllowedSources: map[string][]string{"group-retired": {"*"}, "compromised": {"/topics/security"}},
		DryRun:         true, MaxEventAge: 72 * time.Hour,
	}, []string{"hub1.azure-devices.net"})
	if err != nil {
		t.Fatal(err)
	}
	if in, ok := p.Events.Intent("Acme.Disposed"); !ok || in != deprovision.IntentRetired {
		t.Errorf("mapped type: %q %v", in, ok)
	}
	if in, ok := p.Events.Intent("Device-Sold"); !ok || in != deprovision.IntentSold {
		t.Errorf("built-in type: %q %v", in, ok)
	}
	if !p.DryRun || p.MaxEventAge != 72*time.Hour || len(p.Hubs) != 1 ||
		p.AllowedSources[deprovision.IntentGroupRetired][0] != "*" || p.AllowedSources[deprovision.IntentCompromised][0] != "/topics/security" {
		t.Errorf("admission %+v", p)
	}

	_, err = NewAdmission(config.Admission{EventTypeMap: "Acme.Disposed=vaporised", AllowedSources: map[string][]string{"exploded": {"/s"}}}, nil)
	var se *config.SettingError
	if !errors.As(err, &se) || !strings.Contains(err.Error(), "setting "+config.SettingEventTypes) || !strings.Contains(err.Error(), "setting ALLOWED_SOURCES_EXPLODED") {
		t.Fatalf("err = %v, want both settings named", err)
	}
}
