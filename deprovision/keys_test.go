package deprovision_test

import (
	"encoding/base64"
	"testing"

	d "dpsdeprov/deprovision"
)

func TestDeriveDeviceKey(t *testing.T) {
	// The worked example of Microsoft's DPS symmetric-key documentation (openssl and
	// PowerShell both print this key for this group key and registration id).
	got, err := d.DeriveDeviceKey("8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw==", "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6")
	if err != nil {
		t.Fatal(err)
	}
	if want := "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc="; got != want {
		t.Fatalf("derived %q, want %q", got, want)
	}
	if _, err := d.DeriveDeviceKey("not base64!", "dev-1"); err == nil {
		t.Fatal("a non-base64 group key was accepted")
	}
}

func TestNewSymmetricKey(t *testing.T) {
	a, b := d.NewSymmetricKey(), d.NewSymmetricKey()
	raw, err := base64.StdEncoding.DecodeString(a)
	if err != nil || len(raw) != 32 {
		t.Fatalf("key %q: %d bytes, %v; want base64 of 32", a, len(raw), err)
	}
	if a == b {
		t.Fatal("two keys are equal")
	}
}
